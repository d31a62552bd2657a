"""Render a sensitivity table as the papers print it (000 Table IV): one decimal, the method
named once per group, rows worse than the baseline marked (▼ in Markdown; the papers shade
them gray)."""

from __future__ import annotations

import math

import pandas as pd

COLUMNS = (("dsc", "DSC"), ("sensitivity", "SEN"), ("precision", "PRC"), ("hd95", "HD"))
WORSE_MARK = "▼"


def _number(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.1f}"


def _p(value: float) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def markdown_rows(table: pd.DataFrame) -> list[str]:
    """Body rows of one block (no header)."""
    lines, previous = [], None
    for row in table.itertuples(index=False):
        method = row.method if row.method != previous else ""
        previous = row.method
        mark = WORSE_MARK if row.worse_than_baseline else ""
        cells = [mark, method, row.parameter, *[_number(getattr(row, c)) for c, _ in COLUMNS],
                 _p(row.p_value), f"{row.n_cases}×{row.n_seeds}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(blocks: dict[str, pd.DataFrame], caption: str) -> str:
    """A Markdown table with one block per entry of ``blocks`` (e.g. w/ and w/o
    post-processing), as 000 Table IV."""
    header = ["", "Method", "Parameter", *[label for _, label in COLUMNS], "p (Holm)",
              "cases×seeds"]
    lines = [caption, "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    for title, table in blocks.items():
        lines.append("| | **" + title + "** |" + " |" * (len(header) - 2))
        lines.extend(markdown_rows(table))
    lines += ["", f"{WORSE_MARK}: mean DSC below the vanilla baseline's (shaded in the papers). "
              "DSC, SEN, PRC in %, HD = HD95 in mm, means over cases then seeds; p: paired "
              "Wilcoxon signed-rank test of DSC against the baseline over (case, seed) pairs, "
              "Holm-corrected within the block."]
    return "\n".join(lines) + "\n"
