"""Write a study's report folder: every table (Markdown, LaTeX, HTML, CSV) and figure (PNG,
SVG), with ``index.md`` and ``index.html`` linking all of them.

Per (dataset, model, class): the comparison of methods across training fractions at their
chosen settings, with and without post-processing (001 Tables II-IV), the chosen
hyperparameters (000 Tables I-III), hyperparameter importance (functional ANOVA), one
sensitivity table per fraction with both blocks (000 Table IV), and the figures. Per
(dataset, model): the logit shift table and figures. Per (dataset, model), when the results
allow: every class side by side (000 Table V), pooled IoU, mIoU, pixel accuracy and
validation loss (003 Table 1) and DSC, Jaccard, aRVD, ABD, 95HD (004 §4.3); per class, when
training cases were evaluated, their sensitivity and precision against the test cases' (001
Fig. 1). Works on partial results: what cannot be built yet (no baseline, one trial, ...) is
listed under "What is missing" instead of stopping the report. Figures carry no titles: each
one's caption in the index says what it shows (dataset, class, model, amount of training
data, post-processing, what the marks and bands are). Datasets, models and classes are named
as ``analysis.names`` prints them, methods and hyperparameters as ``study.catalog`` does.

Layout of ``out_dir``: tables flat (``sensitivity_<dataset>_<model>_<fraction>_<class>.md``,
``.tex``, ``.html``, ``.csv``...), ``figures/`` (``.png`` and ``.svg``), ``tables.tex`` (a
complete LaTeX document with every table), ``index.md`` and ``index.html``.
"""

from __future__ import annotations

import html as html_lib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import figures as fig
from analysis.dataset_tables import distance_table, has_values, iou_table, per_class_table
from analysis.importance import hyperparameter_importance
from analysis.load import Results, check_cases
from analysis.logits import logit_histograms, logit_shift_table, logit_statistics
from analysis.names import class_label, dataset_name, model_name
from analysis.render import (
    Emphasis,
    Grid,
    best_hyperparameters_grid,
    comparison_grid,
    distance_grid,
    html_page,
    importance_grid,
    iou_grid,
    latex_document,
    logit_shift_grid,
    per_class_grid,
    sensitivity_grid,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)
from analysis.tables import (
    BASELINE,
    ClassTables,
    _group_codes,
    _split_mask,
    fraction_label,
    method_list,
    method_name,
    selection_description,
    split_rows,
    table_columns,
)
from study.catalog import HP_PREFIX
from study.results import TEST, TRAIN, TRIALS_SCHEMA, VALIDATION

BLOCKS = (("w/ post-processing", True), ("w/o post-processing", False))
MAX_LOGIT_PANELS = 5


def _slug(*parts) -> str:
    """A file name stem from ``parts`` (empty ones left out)."""
    return "_".join(str(p).replace("/", "-").replace(" ", "-") for p in parts if p != "")


@dataclass
class _Section:
    title: str
    level: int = 2
    markdown: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)


@dataclass
class _Writer:
    out: Path
    figures: bool
    say: Callable[[str], None]
    written: list[Path] = field(default_factory=list)
    latex: list[str] = field(default_factory=list)
    sections: list[_Section] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def section(self, title: str, level: int = 2) -> _Section:
        self.sections.append(_Section(title, level))
        return self.sections[-1]

    def table(self, section: _Section, grid: Grid, frame: pd.DataFrame, stem: str) -> None:
        """Write one table in every format and show it in the index."""
        markdown, latex = to_markdown(grid), to_latex(grid)
        files = {".md": markdown, ".tex": latex, ".html": html_page(grid.caption, to_html(grid)),
                 ".csv": to_csv(frame)}
        for suffix, text in files.items():
            path = self.out / f"{stem}{suffix}"
            path.write_text(text, encoding="utf-8")
            self.written.append(path)
        self.latex.append(latex)
        links = ", ".join(f"[{s[1:]}]({stem}{s})" for s in files)
        section.markdown += [markdown, f"Files: {links}", ""]
        html_links = ", ".join(f'<a href="{html_lib.escape(stem + s)}">{s[1:]}</a>'
                               for s in files)
        section.html += [to_html(grid), f'<p class="note">Files: {html_links}</p>']

    def note(self, section: _Section, text: str, link: str | None = None) -> None:
        """A sentence under the section, ending with a link to ``link`` when given."""
        section.markdown += [text + (f" [{link}]({link})" if link else ""), ""]
        anchor = f' <a href="{html_lib.escape(link)}">{html_lib.escape(link)}</a>' if link else ""
        section.html.append(f"<p>{html_lib.escape(text)}{anchor}</p>")

    def figure(self, section: _Section, stem: str, caption: str, build: Callable, *args,
               **kwargs) -> None:
        """Draw ``build(*args, **kwargs)`` and save it (PNG and SVG); a figure that cannot be
        drawn is listed as missing with the reason."""
        if not self.figures:
            return
        try:
            figure = build(*args, **kwargs)
        except (ValueError, KeyError) as error:
            self.missing.append(f"Figure {stem}: {error}")
            return
        paths = fig.save(figure, self.out / "figures" / stem)
        self.written += paths
        png, svg = (f"figures/{p.name}" for p in paths)
        section.markdown += [f"![{caption}]({png})", "", f"{caption} ([PNG]({png}), "
                             f"[SVG]({svg}))", ""]
        section.html += [f'<figure><a href="{html_lib.escape(svg)}"><img src="'
                         f'{html_lib.escape(png)}" alt="{html_lib.escape(caption)}"></a>'
                         f"<figcaption>{html_lib.escape(caption)} (<a href=\""
                         f'{html_lib.escape(png)}">PNG</a>, <a href="{html_lib.escape(svg)}">'
                         "SVG</a>)</figcaption></figure>"]

    def attempt(self, what: str, build: Callable, *args, **kwargs):
        """Return ``build(*args, **kwargs)``; on a ``ValueError`` record why ``what`` is
        missing and return None."""
        try:
            return build(*args, **kwargs)
        except ValueError as error:
            self.missing.append(f"{what}: {error}")
            return None


def _pending_summary(pending: Sequence[Mapping]) -> pd.DataFrame:
    rows = []
    for trial in pending:
        config = trial.get("config", {}) if isinstance(trial, Mapping) else {}
        dataset = config.get("dataset", {})
        dataset = dataset.get("name") if isinstance(dataset, Mapping) else dataset
        technique = config.get("technique")
        rows.append({"dataset": None if dataset is None else dataset_name(dataset),
                     "fraction": config.get("fraction"),
                     "method": None if technique is None else method_name(
                         technique, trial.get("variant")),
                     "setting": trial.get("param_label", "?")})
    frame = pd.DataFrame(rows, columns=["dataset", "fraction", "method", "setting"])
    return (frame.groupby(["dataset", "fraction", "method"], dropna=False)
            .agg(trials=("setting", "size"), settings=("setting", lambda s: ", ".join(
                sorted(set(map(str, s)))))).reset_index())


def _status_lines(results: Results, missing: int, pending: Sequence[Mapping] | None
                  ) -> tuple[list[str], pd.DataFrame | None]:
    lines = []
    trials = results.trials
    if len(trials):
        counts = trials["status"].value_counts()
        lines.append("Stored trials: " + ", ".join(f"{counts.get(s, 0)} {s}"
                                                   for s in ("ok", "diverged", "failed")) + ".")
    if missing:
        lines.append(f"**Partial results:** {missing} trial(s) have no results yet; the tables "
                     "below cover the finished ones.")
    if results.incomplete:
        lines.append(f"{len(results.incomplete)} trial(s) have case rows but no trials row "
                     "(running, or interrupted between the two writes) and are left out: "
                     + ", ".join(results.incomplete[:10])
                     + (" …" if len(results.incomplete) > 10 else "") + ".")
    for name, reason in sorted(results.problems.items()):
        lines.append(f"Skipped unreadable file `{name}`: {reason}.")
    failed = trials[trials["status"] == "failed"] if len(trials) else trials
    for row in failed.head(20).itertuples(index=False):
        method = method_name(row.technique, getattr(row, "variant", None))
        lines.append(f"Failed trial {row.trial_id} ({method} {row.param_label}, "
                     f"fraction {row.fraction:g}, seed {row.seed}): "
                     f"{str(row.error).splitlines()[0] if row.error else 'no error recorded'}.")
    if len(failed) > 20:
        lines.append(f"... and {len(failed) - 20} more failed trials.")
    summary = _pending_summary(pending) if pending else None
    return lines, summary


def _seed_gaps(table: pd.DataFrame) -> list[str]:
    """Settings with fewer seeds than the most complete setting of the same table."""
    if table.empty:
        return []
    most = table["n_seeds"].max()
    short = table[table["n_seeds"] < most]
    return [f"{r.method} {r.parameter}: {r.n_seeds} of {most} seeds"
            for r in short.itertuples(index=False)]


def _class_tables(rows: pd.DataFrame, dataset: str, model: str, class_name: str
                  ) -> Callable[..., Any]:
    """``call(method, *args, **kwargs)``: ``method`` of the ``ClassTables`` of one class,
    built once (every table of the class shares its aggregates); a class without tables
    raises its ``ValueError`` on every call, so each table is listed as missing with it."""
    try:
        tables = ClassTables(rows, dataset, model, class_name)
    except ValueError as error:
        failed = error

        def call(method: str, *args, **kwargs):
            raise failed
        return call
    return lambda method, *args, **kwargs: getattr(tables, method)(*args, **kwargs)


def _as_results(cases, trials) -> Results:
    if isinstance(cases, Results):
        return cases
    check_cases(cases)
    if trials is None:
        trials = TRIALS_SCHEMA.empty_table().to_pandas()
    return Results(cases, trials, "")


def write_report(cases: pd.DataFrame | Results, out_dir: str | Path,
                 title: str = "Study report", missing: int = 0,
                 trials: pd.DataFrame | None = None, *,
                 pending: Sequence[Mapping] | None = None, figures: bool = True,
                 metric: str = "dsc", select_postprocessed: bool = True,
                 select_on: str = TEST, emphasis: Emphasis = "bold-underline",
                 progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write every table and figure of the results into ``out_dir``; return the paths written,
    ``index.md`` last (``index.html`` just before it).

    ``cases`` is the cases table (``analysis.load``) or a ``Results`` (``load_results``, which
    also brings the ``trials`` table for the logit figures and the list of incomplete trials
    and skipped files); ``missing`` is the number of trials without results yet and
    ``pending`` their Tune params (the index says which). Settings are chosen per method
    and fraction by ``metric`` (default: highest mean DSC, with post-processing unless
    ``select_postprocessed=False``) on the split ``select_on`` (``"test"``, the default, as
    the papers did, or ``"validation"``); every table and figure reports the test split.
    ``figures=False`` skips the figures (faster). ``progress`` receives one line per step.
    Raises ``ValueError`` for ``select_on="validation"`` when a dataset has no validation
    rows (naming it and the study-file key ``dataset.validation_cases``).
    """
    say = progress or (lambda _message: None)
    results = _as_results(cases, trials)
    cases = results.cases
    selection = selection_description(metric, select_postprocessed, select_on)
    if select_on == VALIDATION:
        split_rows(cases, VALIDATION)  # a dataset without: stop here, saying how to add them
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out, figures, say)
    start = time.perf_counter()
    choose = {"metric": metric, "select_on": select_on}

    # One class's rows (a copy of the columns its tables read) and aggregates at a time: only
    # its chosen settings are kept
    classes = row_groups(cases, ["dataset", "model", "class_name"])
    count = len(classes)
    columns = table_columns(cases)
    chosen_by_class: dict[tuple[str, str, str], pd.DataFrame | None] = {}
    dataset: str
    model: str
    class_name: str
    for n, ((dataset, model, class_name), positions) in enumerate(classes, start=1):
        rows = group_rows(cases, columns, positions)
        name = f"{dataset_name(dataset)}, {class_label(class_name)}, {model_name(model)}"
        tables = _class_tables(rows, dataset, model, class_name)
        say(f"[{n}/{count}] tables and figures of {name}")
        writer.section(f"{dataset_name(dataset)} — {class_label(class_name)} — "
                       f"{model_name(model)}")

        # Comparison across fractions at the chosen settings (001 Tables II-IV).
        section = writer.section("Methods at their chosen settings", 3)
        for block, postprocessed in BLOCKS:
            table = writer.attempt(
                f"Comparison of {name} ({block})", tables, "comparison", postprocessed,
                select_postprocessed=select_postprocessed, **choose)
            if table is None:
                continue
            caption = (f"{name}: methods at the setting with the {selection}, evaluated "
                       f"{block}, by amount of training data.")
            writer.table(section, comparison_grid(table, caption, emphasis), table,
                         _slug("comparison", dataset, model, class_name,
                               "pp" if postprocessed else "raw"))

        # Chosen hyperparameters (000 Tables I-III).
        section = writer.section("Chosen hyperparameters", 3)
        table = writer.attempt(f"Chosen hyperparameters of {name}", tables,
                               "best_hyperparameters", postprocessed=select_postprocessed,
                               **choose)
        if table is not None and len(table):
            caption = f"Hyperparameters of {name} chosen by the {selection}."
            writer.table(section, best_hyperparameters_grid(table, caption), table,
                         _slug("best-hyperparameters", dataset, model, class_name))
        elif table is not None:
            writer.note(section, "No method with hyperparameters has results yet.")

        # Hyperparameter importance (functional ANOVA).
        section = writer.section("Hyperparameter importance", 3)
        importance = writer.attempt(f"Importance of {name}", hyperparameter_importance, rows,
                                    dataset, model, class_name, metric=choose["metric"],
                                    postprocessed=select_postprocessed)
        if importance is not None and len(importance.table):
            caption = (f"{name}: functional ANOVA importance of each method's hyperparameters "
                       "and their interactions for the trials' mean test DSC, per training "
                       "fraction.")
            writer.table(section, importance_grid(importance.table, caption,
                                                  importance.skipped),
                         importance.table, _slug("importance", dataset, model, class_name))
            if importance.estimated:
                writer.note(section, "Exact on full grids; estimated with optuna's fANOVA "
                            "(a random forest) for " + "; ".join(
                                f"{m}: {r}" for m, r in importance.estimated.items()) + ".")
        elif importance is not None:
            writer.note(section, "Not computed: " + "; ".join(
                f"{m}: {r}" for m, r in importance.skipped.items()) + ".")

        # Training fraction figure (001 Fig. 1).
        chosen = chosen_by_class[(dataset, model, class_name)] = writer.attempt(
            f"Chosen settings of {name}", tables, "best_settings",
            postprocessed=select_postprocessed, **choose)
        if chosen is not None and rows["fraction"].nunique() > 1:
            section = writer.section("Sensitivity and precision vs training data", 3)
            writer.figure(section, _slug("fraction", dataset, model, class_name),
                          f"{name}: sensitivity, precision and DSC vs training data (001 Fig. "
                          f"1), each method (one column) at the setting with the {selection}, "
                          f"evaluated {fig.PP_NAMES[select_postprocessed]}. {fig.DRAWN}",
                          fig.fraction_figure, rows, chosen, dataset, model, class_name,
                          select_postprocessed)

        # Train vs test sensitivity and precision (001 Fig. 1), when training cases were
        # evaluated.
        if (chosen is not None and writer.figures
                and (split_rows(rows, TRAIN)["status"] == "ok").any()):
            section = writer.section("Training vs test cases", 3)
            writer.figure(section, _slug("train-test", dataset, model, class_name),
                          f"{name}: sensitivity and precision on training vs test cases by "
                          "amount of training data (001 Fig. 1), each method (one column) at "
                          f"the setting with the {selection}, evaluated "
                          f"{fig.PP_NAMES[select_postprocessed]}. {fig.TRAIN_TEST_DRAWN}",
                          fig.train_test_figure, rows, chosen, dataset, model, class_name,
                          select_postprocessed)

        # Sensitivity analysis per fraction (000 Table IV) and its figures.
        try:
            fractions = tables("fractions")
        except ValueError:  # no test rows: no sensitivity table
            fractions = []
        test = split_rows(rows, TEST) if writer.figures else None
        for fraction in fractions:
            section = writer.section(f"Sensitivity analysis, {fraction_label(fraction)} "
                                     "training data", 3)
            blocks: dict[str, pd.DataFrame] = {}
            for block, postprocessed in BLOCKS:
                if not tables("has_block", fraction, postprocessed):
                    writer.missing.append(f"Sensitivity of {name} at {fraction:g}: no "
                                          f"{block} results")
                    continue
                blocks[block] = tables("sensitivity", fraction, postprocessed)
            if not blocks:
                continue
            first = next(iter(blocks.values()))
            if not ((first["technique"] == BASELINE) & first["variant"].isna()).any():
                writer.missing.append(f"Sensitivity of {name} at {fraction:g}: no vanilla "
                                      "baseline yet (no shading, no p-values)")
            for gap in _seed_gaps(first):
                writer.missing.append(f"Sensitivity of {name} at {fraction:g}: {gap}")
            caption = (f"Sensitivity analysis: {name}, {fraction_label(fraction)} training "
                       "data.")
            frame = pd.concat([t.assign(block=b) for b, t in blocks.items()], ignore_index=True)
            writer.table(section, sensitivity_grid(blocks, caption), frame,
                         _slug("sensitivity", dataset, model, f"{fraction:g}", class_name))
            if test is None:
                continue  # the rest are figures
            at_fraction = test[test["fraction"] == fraction]
            others = [m for m in method_list(at_fraction) if m[1:] != (BASELINE, "")]
            for block, postprocessed in BLOCKS if others else ():
                if block in blocks:
                    writer.figure(section, _slug("sensitivity", dataset, model, f"{fraction:g}",
                                                 class_name, "pp" if postprocessed else "raw"),
                                  f"{name}, {fraction_label(fraction)} training data, "
                                  f"{block}: DSC vs each method's hyperparameter (one panel "
                                  f"per method). {fig.DRAWN}", fig.sensitivity_figure, rows,
                                  dataset, fraction, model, class_name,
                                  postprocessed=postprocessed)
            for method, technique, variant in others:
                if len(fig.varying_hyperparameters(at_fraction, technique, variant)) == 2:
                    writer.figure(section, _slug("heatmap", dataset, model, f"{fraction:g}",
                                                 class_name, technique, variant),
                                  f"{name}, {fraction_label(fraction)} training data: mean DSC "
                                  f"(%) over the {method} grid, w/ and w/o post-processing, "
                                  "coloured around the Vanilla baseline's mean (blue better, "
                                  "red worse; the baseline is the black line on each colour "
                                  "bar).", fig.heatmap_figure, rows, dataset, fraction,
                                  technique, model, class_name, variant=variant or None)

    _dataset_sections(writer, results)
    _logit_sections(writer, results, chosen_by_class)

    say(f"tables and figures done in {time.perf_counter() - start:.1f} s; writing the index")
    status, pending_summary = _status_lines(results, missing, pending)
    paths = _write_index(writer, title, results, cases, status, pending_summary, selection,
                         emphasis)
    return [*writer.written, *paths]


def row_groups(frame: pd.DataFrame, keys: list[str], where: np.ndarray | None = None
               ) -> list[tuple[tuple, np.ndarray | None]]:
    """The groups of ``keys`` among the rows ``where`` (a boolean mask; default: all) of
    ``frame``, as ``frame[where].groupby(keys, sort=True, observed=True)`` gives them (in its
    order, rows with a null key left out), without copying any rows: each group's key values
    and the positions of its rows in ``frame`` (None: every row of ``frame``, the one group).
    :func:`group_rows` then copies one group's rows at a time, where ``groupby`` copies the
    whole frame at once."""
    held = frame[keys].notna().all(axis=1).to_numpy()
    if where is not None:
        held = held & where
    if not held.any():
        return []
    if held.all() and all(frame[k].nunique() == 1 for k in keys):
        return [(tuple(frame[keys].iloc[0]), None)]
    cell = _group_codes([frame[k] for k in keys])[0]
    groups = (np.flatnonzero((cell == group) & held) for group in range(cell.max() + 1))
    return [(tuple(frame[k].iloc[rows[0]] for k in keys), rows) for rows in groups if len(rows)]


def group_rows(frame: pd.DataFrame, columns: list[str], positions: np.ndarray | None
               ) -> pd.DataFrame:
    """The ``columns`` of the rows of ``frame`` at ``positions``, a group of
    :func:`row_groups` (None: every row)."""
    return frame[columns] if positions is None else frame[columns].take(positions)


def _dataset_sections(writer: _Writer, results: Results) -> None:
    """Per (dataset, model): every class side by side (000 Table V) when there are several,
    and, when the results hold their columns, 003 Table 1's pooled IoU, mIoU, pixel accuracy
    and validation loss and, per class, 004's DSC, Jaccard, aRVD, ABD and 95HD."""
    cases = results.cases
    dataset: str
    model: str
    for (dataset, model), positions in row_groups(cases, ["dataset", "model"],
                                                  _split_mask(cases, TEST)):
        rows = group_rows(cases, list(cases.columns), positions)
        name = f"{dataset_name(dataset)}, {model_name(model)}"
        classes = sorted(map(str, rows["class_name"].unique()))
        if len(classes) > 1:
            section = writer.section(f"Every class — {name}")
            table = writer.attempt(f"Per-class table of {name}", per_class_table, rows,
                                   dataset, model)
            if table is not None:
                caption = (f"{name}: DSC and sensitivity of every class and their averages "
                           "over all and over the rare classes (000 Table V), every setting.")
                writer.table(section, per_class_grid(table, caption), table,
                             _slug("classes", dataset, model))
        if has_values(rows, "tp_voxels"):
            section = writer.section(f"IoU, pixel accuracy and validation loss — {name}")
            table = writer.attempt(f"IoU table of {name}", iou_table, rows, results.trials,
                                   dataset, model)
            if table is not None:
                caption = (f"{name}: IoU pooled over the test cases per class, mIoU, pixel "
                           "accuracy and final validation loss (003 Table 1), every setting.")
                writer.table(section, iou_grid(table, caption), table,
                             _slug("iou", dataset, model))
        if has_values(rows, "arvd", "abd"):
            section = writer.section(f"Overlap, volume and distance — {name}")
            for class_name in classes:
                table = writer.attempt(f"Distance table of {name}, {class_label(class_name)}",
                                       distance_table, rows, dataset, model, class_name)
                if table is not None:
                    caption = (f"{name}, {class_label(class_name)}: DSC, Jaccard, aRVD, ABD "
                               "and 95HD, mean ± std over the test cases (004 §4.3), every "
                               "setting.")
                    writer.table(section, distance_grid(table, caption), table,
                                 _slug("distances", dataset, model, class_name))


def _logit_sections(writer: _Writer, results: Results,
                    chosen_by_class: dict[tuple[str, str, str], pd.DataFrame | None]) -> None:
    """The logit shift table and figures per (dataset, model), for the baseline and each
    method at the setting chosen on the rarest class (listed last by convention; all settings
    when none could be chosen there: listed as missing already)."""
    trials = results.trials
    if trials.empty or "logit_stats" not in trials or trials["logit_stats"].isna().all():
        if len(results.cases):
            writer.missing.append("Logit figures: no trial has logit statistics yet")
        return
    try:  # parsed once for both (malformed: each names the error below)
        statistics: pd.DataFrame | None = logit_statistics(trials)
    except ValueError:
        statistics = None
    shift = writer.attempt("Logit shift table", logit_shift_table, trials, statistics)
    histograms = writer.attempt("Logit histograms", logit_histograms, trials, statistics)
    if shift is None or histograms is None or shift.empty:
        return
    for (dataset, model), table in shift.groupby(["dataset", "model"], sort=True):
        name = f"{dataset_name(dataset)}, {model_name(model)}"
        section = writer.section(f"Logit shift — {name}")
        classes = sorted(c for d, m, c in chosen_by_class if (d, m) == (dataset, model))
        chosen = chosen_by_class[(dataset, model, classes[-1])] if classes else None
        shown = table
        if chosen is not None:
            keep = pd.MultiIndex.from_frame(chosen[["method", "parameter", "fraction"]])
            index = pd.MultiIndex.from_frame(table[["method", "parameter", "fraction"]])
            baseline = (table["technique"] == BASELINE) & table["variant"].isna()
            shown = table[index.isin(keep) | baseline.to_numpy()]
        caption = (f"{name}: mean logits on training vs test voxels and their shift, for the "
                   "baseline and each method at its chosen setting.")
        stem = _slug("logit-shift", dataset, model)
        writer.table(section, logit_shift_grid(shown, caption), shown, stem)
        every = writer.out / f"{stem}_all-settings.csv"
        every.write_text(to_csv(table), encoding="utf-8")
        writer.written.append(every)
        writer.note(section, "Every setting:", every.name)
        hist = histograms[(histograms["dataset"] == dataset) & (histograms["model"] == model)]
        fractions = sorted(hist["fraction"].unique())
        baseline = {"technique": BASELINE, "variant": None}
        if ((hist["technique"] == BASELINE) & hist["variant"].isna()).any():
            panels = [(f"{fraction_label(f)} training data", {**baseline, "fraction": f})
                      for f in fractions]
            writer.figure(section, _slug("logits", dataset, model, BASELINE),
                          f"{name}: logit distributions of the Vanilla baseline by amount of "
                          f"training data (001 Figs. 3-5), on the voxels of each class (rows); "
                          f"{fig.LOGITS_DRAWN}", fig.logit_figure, hist, dataset, model, panels)
            writer.figure(section, _slug("logit-shift", dataset, model, BASELINE),
                          f"{name}: shift of the mean logits of the Vanilla baseline from "
                          "training to test voxels, by amount of training data (001 Fig. 3, "
                          "right); seeds pooled.", fig.logit_shift_figure, table, dataset,
                          model, BASELINE)
        if chosen is None:
            continue
        # Techniques at their chosen settings, one figure per fraction (001 Figs. 7-8).
        chosen = chosen[~chosen["all_diverged"]]  # diverged trials have no logit statistics
        for f in fractions:
            at = chosen[(chosen["fraction"] - f).abs() < 1e-12]
            hp = [c for c in at.columns if c.startswith(HP_PREFIX)]
            panels = [(r["method"] + (f"\n{r['parameter']}" if r[hp].notna().any() else ""),
                       {"technique": r["technique"], "variant": r["variant"],
                        "param_label": r["parameter"], "fraction": f})
                      for _, r in at.iterrows()]
            if len(panels) < 2:
                continue
            for part in range(0, len(panels), MAX_LOGIT_PANELS):
                chunk = panels[part:part + MAX_LOGIT_PANELS]
                suffix = "" if len(panels) <= MAX_LOGIT_PANELS else \
                    f"_{part // MAX_LOGIT_PANELS + 1}"
                writer.figure(section, _slug("logits", dataset, model, f"{f:g}") + suffix,
                              f"{name}, {fraction_label(f)} training data: logit "
                              "distributions of the methods at their chosen settings (001 "
                              f"Figs. 7-8), on the voxels of each class (rows); "
                              f"{fig.LOGITS_DRAWN}", fig.logit_figure, hist, dataset, model,
                              chunk)


def _write_index(writer: _Writer, title: str, results: Results, cases: pd.DataFrame,
                 status: list[str], pending: pd.DataFrame | None, selection: str,
                 emphasis: Emphasis) -> list[Path]:
    out = writer.out
    latex_path = out / "tables.tex"
    if writer.latex:
        latex_path.write_text(latex_document(writer.latex, title), encoding="utf-8")
        writer.written.append(latex_path)
    about = (f"Settings are chosen per method and training fraction by the {selection}. "
             "Numbers as the papers print them: DSC, SEN, PRC in %, HD = HD95 in mm, one "
             "decimal; means over cases, then over seeds.")
    md = [f"# {title}", ""]
    body = []
    if results.source:
        md += [f"Results: `{results.source}`", ""]
        body.append(f"<p>Results: <code>{html_lib.escape(results.source)}</code></p>")
    md += [*[f"{line}  " for line in status], ""] if status else []
    if status:
        body.append('<div class="warn">' + "<br>".join(html_lib.escape(line.replace("**", ""))
                                                      for line in status) + "</div>")
    if cases.empty:
        md += ["No finished trials yet.", ""]
        body.append("<p>No finished trials yet.</p>")
    else:
        md += [about, ""]
        body.append(f"<p>{html_lib.escape(about)}</p>")
    if writer.latex:
        md += [f"All tables in one LaTeX document: [tables.tex]({latex_path.name})", ""]
        body.append(f'<p>All tables in one LaTeX document: <a href="{latex_path.name}">'
                    "tables.tex</a></p>")
    if pending is not None or writer.missing:
        md += ["## What is missing", ""]
        body.append("<h2>What is missing</h2>")
        if pending is not None and len(pending):
            md += ["Trials without results, by dataset, fraction and method:", "",
                   "| Dataset | Fraction | Method | Trials | Settings |",
                   "|---|---:|---|---:|---|"]
            md += [f"| {r.dataset} | {r.fraction} | {r.method} | {r.trials} | {r.settings} |"
                   for r in pending.itertuples(index=False)]
            md.append("")
            body.append(pending.to_html(index=False, classes="paper", border=0))
        if writer.missing:
            md += [f"- {line}" for line in writer.missing] + [""]
            body.append("<ul>" + "".join(f"<li>{html_lib.escape(line)}</li>"
                                         for line in writer.missing) + "</ul>")
    for section in writer.sections:
        hashes = "#" * section.level
        md += [f"{hashes} {section.title}", "", *section.markdown]
        body += [f"<h{section.level}>{html_lib.escape(section.title)}</h{section.level}>",
                 *section.html]
    html_path = out / "index.html"
    html_path.write_text(html_page(title, body), encoding="utf-8")
    md_path = out / "index.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return [html_path, md_path]
