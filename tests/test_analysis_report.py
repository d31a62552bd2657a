"""The report folder: every table and figure written and linked from index.md and index.html,
partial studies say what is missing, importance and logit shift, the command-line entry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import (
    hyperparameter_importance,
    load,
    load_results,
    logit_histograms,
    logit_shift_table,
    logit_statistics,
)
from analysis._synthetic import full_config, store_trial, trials_grid, write_study
from analysis.report import group_rows, row_groups, write_report
from study.results import ResultStore

TECHNIQUES = ["vanilla", "asym_focal", "margin_calibration"]
# one xdist worker builds the module's study and report once (not once per worker)
pytestmark = pytest.mark.xdist_group("analysis_report")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small study folder (results/ and study.json) of which two trials have not run."""
    root = tmp_path_factory.mktemp("study")
    grid = trials_grid(TECHNIQUES, (0.1, 0.5), (0, 1))
    write_study(root / "results", techniques=TECHNIQUES, fractions=(0.1, 0.5), seeds=(0, 1),
                cases=4, classes=("background", "tumour"), max_trials=len(grid) - 2)
    plan = [{"trial_id": f"t{i}", "param_label": "γ = 1",
             "config": full_config(dataset="synthetic-kits", technique="asym_focal",
                                   hp={"gamma": 1.0})} for i in range(2)]
    (root / "study.json").write_text(json.dumps({"trials": plan}))
    return root


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    pending = json.loads((study / "study.json").read_text())["trials"]
    paths = write_report(load_results(str(study / "results")), out, title="Study t",
                         missing=len(pending), pending=pending)
    return out, paths


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("href", "src") if k in attrs]


def test_every_file_is_written_and_linked(report):
    """index.md and index.html link every table file and figure; every link resolves."""
    out, paths = report
    assert paths[-1] == out / "index.md" and paths[-2] == out / "index.html"
    written = {p.relative_to(out).as_posix() for p in paths[:-2]} - {"tables.tex"}
    md = (out / "index.md").read_text()
    md_links = set(re.findall(r"\]\(([^)]+)\)", md))
    parser = Links()
    parser.feed((out / "index.html").read_text())
    assert written <= md_links and written <= set(parser.links)
    assert all((out / link).exists() for link in md_links | set(parser.links))
    kinds = {Path(p).suffix for p in written}
    assert kinds == {".md", ".tex", ".html", ".csv", ".png", ".svg"}


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_report_latex_document_compiles(report, tmp_path):
    """tables.tex, every table of the report in one document, through pdflatex."""
    out, _ = report
    shutil.copy(out / "tables.tex", tmp_path / "tables.tex")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                             "tables.tex"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


def test_figures_are_images(report):
    out, paths = report
    figures = sorted(p for p in paths if p.parent.name == "figures")
    names = {p.stem for p in figures}
    assert {"sensitivity_synthetic-kits_unet-tiny_0.1_tumour_pp",
            "sensitivity_synthetic-kits_unet-tiny_0.1_tumour_raw",
            "heatmap_synthetic-kits_unet-tiny_0.1_tumour_margin_calibration",
            "fraction_synthetic-kits_unet-tiny_tumour",
            "logits_synthetic-kits_unet-tiny_vanilla",
            "logit-shift_synthetic-kits_unet-tiny_vanilla"} <= names
    for path in figures:
        head = path.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in head


def test_partial_study_says_what_is_missing(report):
    out, _ = report
    md = (out / "index.md").read_text()
    assert "**Partial results:** 2 trial(s) have no results yet" in md
    assert "| synthetic KiTS | 0.5 | Asymmetric focal loss | 2 | γ = 1 |" in md
    missing = md.split("## What is missing", 1)[1].split("\n## ", 1)[0]
    assert "1 of 2 seeds" in missing  # the two trials cut from the grid


def test_no_baseline_yet_is_reported(tmp_path):
    """A study whose baseline has not finished: tables without shading, and the index says
    why."""
    write_study(tmp_path / "r", techniques=["asym_focal"], fractions=(0.1,), seeds=(0,),
                cases=3, classes=("background", "tumour"), logits=False)
    write_report(load(str(tmp_path / "r")), tmp_path / "out", figures=False)
    md = (tmp_path / "out" / "index.md").read_text()
    assert "no vanilla baseline yet (no shading, no p-values)" in md
    rows = md.split("### Sensitivity", 1)[1].splitlines()
    assert not [row for row in rows if row.startswith("| ▼")]


def test_empty_study_report(tmp_path):
    (tmp_path / "r").mkdir()
    paths = write_report(load_results(str(tmp_path / "r")), tmp_path / "out", missing=5)
    md = paths[-1].read_text()
    assert "No finished trials yet." in md and "5 trial(s) have no results yet" in md


def test_importance_skips_with_a_reason_when_too_few_trials(study):
    cases = load(str(study / "results"))
    few = cases[cases["seed"] == 0]
    result = hyperparameter_importance(few, "synthetic-kits", min_trials=50)
    assert result.table.empty
    # the same reason at every fraction is said once, keyed by the method's name
    assert result.skipped["Asymmetric focal loss"] == ("6 completed trial(s), fANOVA needs at "
                                                       "least 50")


def test_importance_finds_the_parameter_that_matters_per_fraction(tmp_path):
    """Margin calibration whose DSC depends on τ only, on a full 3 x 3 grid at two training
    fractions (DSC also rising with the fraction, and with the seed alike at every setting):
    at each fraction the exact decomposition gives τ all the variance, ν and τ × ν none, the
    shares sum to 1, and the fraction is never a parameter (with optuna's fANOVA estimate,
    this test asked τ > 0.9 only). A technique with one varying hyperparameter is skipped
    (its share would be 1 trivially)."""
    store = ResultStore(str(tmp_path))
    base = np.array([0.40, 0.45, 0.50, 0.55])
    for fraction in (0.1, 0.5):
        for seed in (0, 1):
            for tau in (1.0, 10.0, 100.0):
                for nu in (0.01, 0.1, 1.0):
                    dsc = base + fraction / 5 + 0.1 * np.log10(tau) + 0.002 * seed
                    store_trial(store, "margin_calibration", {"tau": tau, "nu": nu}, seed,
                                dsc, fraction=fraction)
            for gamma in (1.0, 3.0):  # one varying hyperparameter, 4 trials per fraction
                store_trial(store, "asym_focal", {"gamma": gamma + seed}, seed, base,
                            fraction=fraction)
    result = hyperparameter_importance(load(str(tmp_path)), "d")
    table = result.table
    assert "fraction" not in set(table["parameter"]) and set(table["fraction"]) == {0.1, 0.5}
    assert set(table["method"]) == {"Margin calibration"} and not result.estimated
    for _, shares in table.groupby("fraction"):
        shares = shares.set_index("parameter")["importance"]
        assert shares.index[0] == "τ"  # largest share first
        assert shares.to_dict() == pytest.approx({"τ": 1.0, "ν": 0.0, "τ × ν": 0.0}, abs=1e-12)
    assert set(table["column"]) == {"hp_tau", "hp_nu", "hp_tau:hp_nu"}
    assert set(table["n_trials"]) == {18}
    assert result.skipped["Asymmetric focal loss"] == (
        "one hyperparameter varies at most (γ): its share would be 1 trivially")


def test_logit_shift_grows_with_less_data(study):
    """001 Fig. 3's property, on data built to have it: test logits of the foreground move
    toward the boundary (negative shift), more with less training data; background stays."""
    trials = load_results(str(study / "results")).trials
    shift = logit_shift_table(trials)
    base = shift[shift["technique"] == "vanilla"].set_index(
        ["fraction", "true_class", "logit_class"])["shift"]
    assert base[(0.1, "tumour", "tumour")] < base[(0.5, "tumour", "tumour")] < 0
    assert abs(base[(0.1, "background", "background")]) < 1e-9


def test_command_line_counts_missing_trials_without_torch_or_ray(study, tmp_path):
    """``python -m analysis STUDY`` reads study.json for the planned trials, and the whole
    report (tables; the figure module is imported with it) runs without torch or ray being
    imported; a missing folder is a clear error."""
    code = ("import sys\n"
            "import analysis.figures\n"
            "from analysis.__main__ import main\n"
            f"assert main([{str(study)!r}, '--out', {str(tmp_path / 'out')!r}, "
            "'--no-figures']) == 0\n"
            "bad = sorted(m for m in ('torch', 'ray') if m in sys.modules)\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "report:" in result.stdout
    assert "2 trial(s) have no results yet" in (tmp_path / "out" / "index.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "nowhere"),
                          "--out", str(tmp_path / "o2")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "no such results folder" in bad.stderr


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_index_opens_in_a_headless_browser(report, tmp_path):
    """Chromium loads index.html and every image in it decodes."""
    out, _ = report
    probe = out / "_probe.html"
    probe.write_text((out / "index.html").read_text() + (
        "<script>window.addEventListener('load', () => { const bad = [...document.images]"
        ".filter(i => !i.naturalWidth).map(i => i.getAttribute('src'));"
        "document.documentElement.setAttribute('data-broken', JSON.stringify(bad));"
        "document.documentElement.setAttribute('data-images', document.images.length); });"
        "</script>"))
    try:
        result = subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                                 f"--user-data-dir={tmp_path}", "--virtual-time-budget=5000",
                                 "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                                timeout=120)
    finally:
        probe.unlink()
    assert result.returncode == 0, result.stderr[-2000:]
    images = int(re.search(r'data-images="(\d+)"', result.stdout)[1])
    assert images >= 5 and 'data-broken="[]"' in result.stdout


def test_report_groups_are_those_of_groupby_one_at_a_time():
    """The report takes one class's rows at a time in the order ``groupby`` gives them (a
    categorical's groups in the order of its categories, rows with a null key left out)."""
    frame = pd.DataFrame({
        "dataset": pd.Categorical(["z", "a", "z", "m", None, "a"], categories=["z", "m", "a"]),
        "class_name": pd.Categorical(["x", "y", "x", "x", "x", "y"], categories=["y", "x"]),
        "value": range(6)})
    keys = ["dataset", "class_name"]
    where = np.array([False, True, True, True, True, False])  # a group's first row left out
    for rows, chosen in ((frame, None), (frame[where], where)):
        expected = [(key, list(group.index)) for key, group in
                    rows.groupby(keys, sort=True, observed=True)]
        assert [(key, list(at)) for key, at in row_groups(frame, keys, chosen)] == expected
    first = row_groups(frame, keys)[0][1]
    assert group_rows(frame, ["value"], first)["value"].tolist() == [0, 2]
    assert row_groups(frame.iloc[[1, 5]], keys) == [(("a", "y"), None)]  # one group: not copied


def test_logit_statistics_parsed_once_give_the_same_tables(study):
    trials = load_results(str(study / "results")).trials
    statistics = logit_statistics(trials)
    pd.testing.assert_frame_equal(logit_shift_table(trials, statistics),
                                  logit_shift_table(trials))
    once, again = logit_histograms(trials, statistics), logit_histograms(trials)
    assert once.drop(columns=["hist", "bin_edges", "density"]).equals(
        again.drop(columns=["hist", "bin_edges", "density"]))
    assert all(np.array_equal(a, b) for a, b in zip(once["density"], again["density"],
                                                   strict=True))
