"""Renderers: LaTeX compiles (pdflatex, where installed) with booktabs and \\cellcolor shading,
HTML parses balanced with the right classes, CSV keeps full precision while the printed
formats show one decimal; comparison and best-hyperparameter tables as the papers lay them
out."""

from __future__ import annotations

import io
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from analysis import (
    best_hyperparameters,
    best_hyperparameters_grid,
    best_settings,
    comparison_grid,
    comparison_table,
    latex_document,
    load,
    sensitivity_grid,
    sensitivity_table,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)
from analysis._synthetic import write_study
from analysis.render import html_page
from study.catalog import HYPERPARAMETERS

VOID = {"meta", "img", "br", "link", "input", "hr"}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_study(root, techniques=["vanilla", "asym_focal", "asym_adversarial"],
                fractions=(0.1, 0.5), seeds=(0, 1), cases=5, logits=False)
    return load(str(root))


@pytest.fixture(scope="module")
def sensitivity(cases):
    return {"w/ post-processing": sensitivity_table(cases, "synthetic-kits", 0.1, True,
                                                    class_name="tumour"),
            "w/o post-processing": sensitivity_table(cases, "synthetic-kits", 0.1, False,
                                                     class_name="tumour")}


@pytest.fixture(scope="module")
def comparison(cases):
    return comparison_table(cases, "synthetic-kits", True, class_name="tumour")


class Checker(HTMLParser):
    """Records tags and fails on unbalanced ones."""

    def __init__(self):
        super().__init__()
        self.stack, self.tags, self.classes = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.classes += (dict(attrs).get("class") or "").split()
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def parse(text: str) -> Checker:
    checker = Checker()
    checker.feed(text)
    checker.close()
    assert checker.stack == [], f"unclosed {checker.stack}"
    return checker


def test_comparison_ranks_and_shading(comparison):
    """Per fraction and column: rank 1 is the best printed value (highest; lowest HD), rank 2
    the next; shading is DSC below the baseline's at that fraction."""
    for _, group in comparison.groupby("fraction"):
        for column, lower in (("dsc", False), ("sensitivity", False), ("hd95", True)):
            shown = group[column].round(1)
            best = shown.min() if lower else shown.max()
            assert set(shown[group[f"rank_{column}"] == 1]) == {best}
            rest = shown[shown != best]
            second = rest.min() if lower else rest.max()
            assert set(shown[group[f"rank_{column}"] == 2]) == {second}
        base = group.loc[group["technique"] == "vanilla", "dsc"].iloc[0]
        assert (group["worse_than_baseline"] == (group["dsc"] < base - 1e-9)).all()
    assert list(dict.fromkeys(comparison["method"])) == [
        "Vanilla", "Asymmetric focal loss", "Asymmetric adversarial training"]


def test_best_settings_choose_the_highest_mean_dsc(cases):
    """The chosen setting of each technique and fraction is the one with the highest mean
    post-processed test DSC; best_hyperparameters lays the values out as 000 Tables I-III."""
    chosen = best_settings(cases, "synthetic-kits", class_name="tumour")
    for row in chosen.itertuples(index=False):
        table = sensitivity_table(cases, "synthetic-kits", row.fraction, True,
                                  class_name="tumour")
        own = table[table["technique"] == row.technique]
        assert row.parameter == own.loc[own["dsc"].idxmax(), "parameter"]
    wide = best_hyperparameters(cases, "synthetic-kits", class_name="tumour")
    assert list(wide.columns[-4:]) == ["10%", "50%", "all_diverged_10%", "all_diverged_50%"]
    assert not wide[["all_diverged_10%", "all_diverged_50%"]].any().any()
    assert list(wide["hyperparameter"]) == ["γ", "ε", "l"]
    focal = chosen[chosen["technique"] == "asym_focal"].set_index("fraction")["hp_gamma"]
    assert wide.iloc[0]["10%"] == focal[0.1] and wide.iloc[0]["50%"] == focal[0.5]
    assert list(wide["meaning"]) == [HYPERPARAMETERS[n].meaning for n in ("gamma", "eps", "l")]
    grid = best_hyperparameters_grid(wide, "Table I")
    eps = HYPERPARAMETERS["eps"].meaning
    assert f"| Asymmetric adversarial training | ε | {eps} | 1e-" in to_markdown(grid)


@pytest.mark.parametrize("emphasis", ["bold-underline", "paper"])
def test_comparison_emphasis_in_every_format(comparison, emphasis):
    grid = comparison_grid(comparison, "Table II", emphasis)
    tex, md, page = to_latex(grid), to_markdown(grid), to_html(grid)
    ranks = comparison[[c for c in comparison.columns if c.startswith("rank_")]]
    firsts, seconds = int((ranks == 1).sum().sum()), int((ranks == 2).sum().sum())
    if emphasis == "bold-underline":
        assert tex.count(r"\textbf{") == firsts and tex.count(r"\underline{") == seconds
        assert md.count("<ins>") == seconds and page.count("<u>") == seconds
    else:
        assert tex.count(r"\textbf{") == firsts + seconds and tex.count(r"\underline{") == firsts
    assert r"\multicolumn{4}{c}{10\% training}" in tex and r"\cmidrule(lr){2-5}" in tex
    assert tex.count(r"\cellcolor{gray!25}") == 4 * int(comparison["worse_than_baseline"].sum())


def test_latex_structure(sensitivity):
    """booktabs rules, one row per setting plus block titles, shaded cells exactly on the
    worse rows, Greek letters in math mode (pdflatex has no Unicode Greek)."""
    tex = to_latex(sensitivity_grid(sensitivity, "Sensitivity"))
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1
    assert r"\begin{tabular}{llrrrrrrr}" in tex
    body = [line for line in tex.splitlines() if line.endswith(r"\\")]
    rows = sum(len(t) for t in sensitivity.values())
    assert len(body) == 1 + len(sensitivity) + rows  # header, block titles, rows
    worse = sum(int(t["worse_than_baseline"].sum()) for t in sensitivity.values())
    assert sum(r"\cellcolor" in line for line in body) == worse
    assert "γ" not in tex and r"$\gamma$ = 2" in tex
    assert all(line.count("&") == 8 for line in body if r"\multicolumn" not in line)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles(tmp_path, sensitivity, comparison, cases):
    """Every table in one document through pdflatex, without errors."""
    fragments = [to_latex(sensitivity_grid(sensitivity, "Sensitivity & 100% of $x_1$")),
                 to_latex(comparison_grid(comparison, "Comparison")),
                 to_latex(best_hyperparameters_grid(best_hyperparameters(
                     cases, "synthetic-kits", class_name="tumour"), "Chosen"))]
    (tmp_path / "tables.tex").write_text(latex_document(fragments, "Report"), encoding="utf-8")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                             "tables.tex"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000


def test_html_structure(sensitivity, comparison):
    """A standalone page: balanced tags, one row per setting, shaded and emphasised cells
    carrying the classes and tags the stylesheet styles."""
    page = html_page("Report", [to_html(sensitivity_grid(sensitivity, "Sensitivity")),
                                to_html(comparison_grid(comparison, "Comparison"))])
    checker = parse(page)
    assert checker.tags[:3] == ["html", "head", "meta"] and "style" in checker.tags
    worse = sum(int(t["worse_than_baseline"].sum()) for t in sensitivity.values())
    worse_cells = 8 * worse + 4 * int(comparison["worse_than_baseline"].sum())
    assert checker.classes.count("worse") == worse_cells
    assert page.count("<strong>") == int((comparison.filter(like="rank_") == 1).sum().sum())
    assert 'colspan="4"' in page and "<caption>Sensitivity</caption>" in page


def test_csv_keeps_full_precision_while_markdown_rounds(sensitivity):
    """A value like 0.123456789 reads back from the CSV to at least 9 significant digits
    (floats round-trip); Markdown prints the papers' one decimal."""
    table = sensitivity["w/ post-processing"].copy()
    table.loc[1, "dsc"] = 0.123456789
    frame = pd.read_csv(io.StringIO(to_csv(table)))
    assert frame.loc[1, "dsc"] == pytest.approx(0.123456789, rel=1e-9)
    assert np.array_equal(frame["dsc"].to_numpy(), table["dsc"].to_numpy())  # exact round trip
    assert frame["worse_than_baseline"].dtype == bool
    md = to_markdown(sensitivity_grid({"b": table}, "c"))
    assert "| 0.1 |" in md and "0.12" not in md
