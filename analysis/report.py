"""Write a study's report folder: one sensitivity table per (dataset, model, fraction, class)
with and without post-processing, as Markdown and CSV, and an index linking them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.render import markdown
from analysis.tables import sensitivity_table

BLOCKS = (("w/ post-processing", True), ("w/o post-processing", False))


def _slug(*parts) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "-") for p in parts)


def write_report(cases: pd.DataFrame, out_dir: str | Path, title: str = "Study report",
                 missing: int = 0) -> list[Path]:
    """Write the tables of ``cases`` into ``out_dir``; return the paths written (index last).

    ``missing`` is the number of trials without results yet (the index says so).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, index = [], [f"# {title}", ""]
    if missing:
        index += [f"**Partial results:** {missing} trial(s) have no results yet; the tables "
                  "below cover the finished ones.", ""]
    if cases.empty:
        index.append("No finished trials yet.")
    groups = cases.groupby(["dataset", "model", "fraction", "class_name"], sort=True)
    for (dataset, model, fraction, class_name), _ in groups:
        blocks = {
            title_: sensitivity_table(cases, dataset, fraction, pp, model, class_name)
            for title_, pp in BLOCKS
        }
        caption = (f"Sensitivity analysis: {class_name} of {dataset}, {fraction:.0%} training "
                   f"data, {model}.")
        stem = _slug("sensitivity", dataset, model, f"{fraction:g}", class_name)
        md_path, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
        md_path.write_text(markdown(blocks, caption), encoding="utf-8")
        pd.concat([t.assign(block=b) for b, t in blocks.items()]).to_csv(csv_path, index=False)
        written += [md_path, csv_path]
        index += [f"## {dataset}, {fraction:.0%} training data, {model}, {class_name}", "",
                  markdown(blocks, caption), f"Files: [{md_path.name}]({md_path.name}), "
                  f"[{csv_path.name}]({csv_path.name})", ""]
    index_path = out / "index.md"
    index_path.write_text("\n".join(index) + "\n", encoding="utf-8")
    return [*written, index_path]
