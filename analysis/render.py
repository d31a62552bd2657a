"""Render the tables as the papers print them: Markdown, LaTeX (booktabs), HTML, CSV.

Every table is first laid out as a ``Grid`` (header rows with spans, body rows of ``Cell``s
that may be bold, underlined or shaded, block titles, notes); one backend per format prints a
grid. Numbers have one decimal, as in the papers; ``—`` marks a value that does not exist.

* Markdown: shaded rows of a sensitivity table are marked ``▼`` in a first column (Markdown
  has no shading), shaded comparison cells carry ``▼`` before the DSC; bold is ``**x**`` and
  underline ``<ins>x</ins>``.
* LaTeX: a ``table`` float with ``booktabs`` rules, ``\\cellcolor{gray!25}`` shading,
  ``\\textbf``/``\\underline``; it needs ``\\usepackage{booktabs}`` and
  ``\\usepackage[table]{xcolor}`` (``latex_document`` writes a complete, compilable file).
* HTML: a ``<table>`` fragment with classes ``worse``, ``best``, ``second``; ``html_page``
  wraps fragments into a standalone, styled page.
* CSV: every column of the table at full precision (floats round-trip; rounding is for the
  printed formats only), the flags as columns.

Besides the papers' tables of one class (``sensitivity_grid``: 000 Table IV,
``comparison_grid``: 001 Tables II-IV, ``best_hyperparameters_grid``: 000 Tables I-III), the
tables of ``analysis.dataset_tables``: ``per_class_grid`` (000 Table V), ``iou_grid`` (003
Table 1's columns) and ``distance_grid`` (004's DSC, Jaccard, aRVD, ABD, 95HD).

Settings print as the trial expansion labelled them (``study.catalog.param_label``: ``γ = 2``,
``ε = 1e-5 l = 10``); labels are never parsed back, and values print with the catalog's
``format_number``.

In every format a setting whose every seed diverged prints ``diverged (k/k seeds)`` in place
of its metrics, and one some of whose seeds diverged carries ``‡`` after its DSC with a note
saying how many (``diverged_text``); the CSV has the ``n_diverged`` and ``all_diverged``
columns.
"""

from __future__ import annotations

import html as html_lib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from analysis.dataset_tables import AVERAGE, RARE_AVERAGE
from analysis.names import class_label
from analysis.tables import diverged_column, fraction_label
from study.catalog import format_number

WORSE_MARK = "▼"
MISSING = "—"
HD_LEFT_OUT = "†"
DIVERGED = "diverged"  # in place of the metrics of a setting whose every seed diverged
DIVERGED_MARK = "‡"  # after the DSC of a setting some of whose seeds diverged
METRIC_COLUMNS = (("dsc", "DSC"), ("sensitivity", "SEN"), ("precision", "PRC"), ("hd95", "HD"))
Emphasis = Literal["bold-underline", "paper"]


@dataclass
class Cell:
    """One table cell: its text and how it is emphasised; ``latex`` overrides the escaped
    text in LaTeX (math, symbols)."""

    text: str = ""
    bold: bool = False
    underline: bool = False
    shade: bool = False
    mark: bool = False  # Markdown: prefix WORSE_MARK (shading shown as a mark)
    latex: str | None = None


@dataclass
class Grid:
    """A table laid out for printing: ``header`` rows of ``(label, span)`` (the last row has
    one entry per column), ``rows`` of cells or a block title (``str``, spans every column),
    column ``align`` (``l``/``r``), ``notes`` printed under it, and optional row marks for
    Markdown (``row_marks[i]`` marks body row ``i``)."""

    caption: str
    header: list[list[tuple[str, int]]]
    rows: list[list[Cell] | str]
    align: list[str]
    notes: list[str] = field(default_factory=list)
    row_marks: list[bool] | None = None
    label: str = ""

    @property
    def width(self) -> int:
        return len(self.align)


# ---------------------------------------------------------------------------- numbers, text

def number(value, decimals: int = 1) -> str:
    """``50.4``; ``—`` for None/NaN; ``inf`` as ``∞``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return MISSING
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{decimals}f}"


def p_text(value) -> str:
    if value is None or pd.isna(value):
        return ""
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def value_text(value) -> str:
    """A hyperparameter value as the papers print it (``0.2``, ``1e-5``: the catalog's
    ``format_number``); ``—`` when unused."""
    if value is None or pd.isna(value):
        return MISSING
    return format_number(float(value))


def setting_cell(label) -> Cell:
    """The cell of a setting's label (``γ = 2``; ``—`` for none), escaped for LaTeX."""
    text = MISSING if label is None or pd.isna(label) else str(label)
    return Cell(text, latex=latex_escape(text))


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "\\": r"\textbackslash{}"}
_LATEX_UNICODE = {"γ": r"$\gamma$", "ε": r"$\epsilon$", "τ": r"$\tau$", "ν": r"$\nu$",
                  "α": r"$\alpha$", "β": r"$\beta$", "λ": r"$\lambda$", "—": "---",
                  "–": "--", "×": r"$\times$", "∞": r"$\infty$", "±": r"$\pm$",
                  "†": r"$^\dagger$", "‡": r"$^\ddagger$", "▼": r"$\blacktriangledown$",
                  "≥": r"$\geq$", "≤": r"$\leq$", "<": r"$<$", ">": r"$>$", "Δ": r"$\Delta$",
                  "|": r"$|$", "ẑ": r"$\hat{z}$", "·": r"$\cdot$", "−": "$-$", "…": r"\dots{}",
                  "’": "'", "“": "``", "”": "''", "°": r"$^\circ$", "µ": r"$\mu$",
                  "μ": r"$\mu$", "σ": r"$\sigma$", "π": r"$\pi$"}


def latex_escape(text: str) -> str:
    """Plain text as LaTeX source that pdflatex accepts (Greek letters in math mode)."""
    out = []
    for char in str(text):
        latex = _LATEX_SPECIAL.get(char) or _LATEX_UNICODE.get(char)
        if latex is None:  # pdflatex (T1, utf8) knows Latin-1 letters; anything else is '?'
            latex = char if ord(char) < 256 else "?"
        out.append(latex)
    return "".join(out).replace("$$", "")


# ---------------------------------------------------------------------------- grids

def diverged_text(n_diverged: int, n_seeds: int) -> str:
    """How many of a setting's seeds diverged, as every table prints it: ``diverged (2/2
    seeds)`` (every seed: the setting has no metrics) or ``diverged (1/3 seeds)`` (its means
    are over the ``n_seeds`` others)."""
    return f"{DIVERGED} ({int(n_diverged)}/{int(n_diverged) + int(n_seeds)} seeds)"


def _metric_cells(row, left_out: bool = False) -> list[Cell]:
    """DSC, SEN, PRC and HD of one setting (a mapping of a table's row): ``diverged (k/k
    seeds)`` in place of the DSC when every seed diverged, ``DIVERGED_MARK`` after the DSC
    when some did, ``HD_LEFT_OUT`` after the HD when some HD95 were left out."""
    if row.get("all_diverged", False):
        text = diverged_text(row["n_diverged"], row["n_seeds"])
        return [Cell(text)] + [Cell("") for _ in METRIC_COLUMNS[1:]]
    cells = []
    for column, _ in METRIC_COLUMNS:
        text = number(row[column])
        latex = None
        if column == "hd95" and left_out and text != MISSING:
            text, latex = text + HD_LEFT_OUT, text + r"$^\dagger$"
        if column == "dsc" and row.get("n_diverged", 0):
            text += DIVERGED_MARK  # latex_escape prints it as a superscript double dagger
        cells.append(Cell(text, latex=latex))
    return cells


def _diverged_notes(partial: list[str], every: bool) -> list[str]:
    """The notes explaining the divergence marks: ``partial`` names the settings (and where)
    some of whose seeds diverged, ``every`` says whether a setting diverged on every seed."""
    notes = []
    if every:
        notes.append(f"{DIVERGED} (k/k seeds): every seed diverged (the training loss became "
                     "NaN or infinite); no metrics.")
    if partial:
        notes.append(f"{DIVERGED_MARK}: means over the seeds that did not diverge; "
                     + "; ".join(partial) + ".")
    return notes


def sensitivity_grid(blocks: dict[str, pd.DataFrame], caption: str, statistics: bool = True,
                     label: str = "") -> Grid:
    """000 Table IV: one block per entry of ``blocks`` (title -> ``sensitivity_table``), the
    method named once per group, worse-than-baseline rows shaded, settings some or all of
    whose seeds diverged marked (``diverged_text``). ``statistics`` adds the columns the paper
    does not have: DSC std over cases, Holm-corrected p and cases x seeds (seeds that did not
    diverge)."""
    header = ["Method", "Parameter", *[name for _, name in METRIC_COLUMNS]]
    if statistics:
        header += ["DSC sd", "p (Holm)", "cases×seeds"]
    rows: list[list[Cell] | str] = []
    marks: list[bool] = []
    any_left_out = every = False
    partial: list[str] = []
    for title, table in blocks.items():
        rows.append(title)
        marks.append(False)
        previous = None
        for row in table.to_dict("records"):
            shade = bool(row["worse_than_baseline"])
            left_out = row.get("hd95_left_out", 0) > 0
            any_left_out |= left_out
            every |= bool(row.get("all_diverged", False))
            if row.get("n_diverged", 0) and not row.get("all_diverged", False):
                partial.append(f"{row['method']} {setting_cell(row['parameter']).text} ({title}): "
                               + diverged_text(row["n_diverged"], row["n_seeds"]))
            method = row["method"] if row["method"] != previous else ""
            previous = row["method"]
            cells = [Cell(method), setting_cell(row["parameter"]),
                     *_metric_cells(row, left_out)]
            if statistics:
                cells += [Cell(number(row["dsc_std"])), Cell(p_text(row["p_value"])),
                          Cell(f"{row['n_cases']}×{row['n_seeds']}")]
            for cell in cells[1:]:
                cell.shade = shade
            rows.append(cells)
            marks.append(shade)
    notes = [f"Shaded ({WORSE_MARK} in Markdown): mean DSC below the vanilla baseline's. DSC, "
             "SEN, PRC in %, HD = HD95 in mm; means over cases, then over seeds."]
    if statistics:
        notes.append("DSC sd: standard deviation over cases. p: two-sided Wilcoxon "
                     "signed-rank test of DSC against the baseline over cases (each case's DSC "
                     "averaged over seeds first; n = cases), Holm-corrected within the block.")
    if any_left_out:
        notes.append(f"{HD_LEFT_OUT}: HD95 is infinite (empty prediction) or undefined for some "
                     "(case, seed) pairs; they are left out of the HD mean (counts in the CSV).")
    notes += _diverged_notes(partial, every)
    align = ["l", "l"] + ["r"] * (len(header) - 2)
    return Grid(caption, [[(h, 1) for h in header]], rows, align, notes, marks, label)


def _emphasis(rank, style: Emphasis) -> tuple[bool, bool]:
    if rank is None or pd.isna(rank):
        return False, False
    if style == "paper":  # 001/000 captions: best and second bold, the best also underlined
        return rank <= 2, rank == 1
    return rank == 1, rank == 2  # best bold, second best underlined


def emphasis_note(style: Emphasis) -> str:
    if style == "paper":
        return "Best and second best of each column in bold, the best also underlined."
    return "Best of each column in bold, second best underlined."


def comparison_grid(table: pd.DataFrame, caption: str, emphasis: Emphasis = "bold-underline",
                    label: str = "") -> Grid:
    """001 Tables II-IV: method rows (a technique, or its rerun under a variant: ``Vanilla -
    w/o augmentation``), one group of DSC/SEN/PRC/HD per training fraction;
    cells of a fraction whose DSC is below the baseline's shaded; best and second best per
    column emphasised (``emphasis``: ``"bold-underline"`` = best bold, second underlined;
    ``"paper"`` = both bold, best also underlined, as the papers' captions say); a method
    whose chosen setting diverged on some or all seeds marked (``diverged_text``)."""
    fractions = sorted(table["fraction"].unique())
    header = [[("", 1)] + [(f"{fraction_label(f)} training", 4) for f in fractions],
              [("Method", 1)] + [(name, 1) for f in fractions for _, name in METRIC_COLUMNS]]
    rows: list[list[Cell] | str] = []
    any_left_out = every = False
    partial: list[str] = []
    for _, group in table.groupby("method", sort=False):
        by_fraction = group.set_index("fraction")
        method = group["method"].iloc[0]
        cells = [Cell(method)]
        for f in fractions:
            if f not in by_fraction.index:
                cells += [Cell(MISSING) for _ in METRIC_COLUMNS]
                continue
            row = by_fraction.loc[f]
            worse = bool(row["worse_than_baseline"])
            left_out = row.get("hd95_left_out", 0) > 0
            any_left_out |= left_out
            every |= bool(row.get("all_diverged", False))
            if row.get("n_diverged", 0) and not row.get("all_diverged", False):
                partial.append(f"{method} at {fraction_label(f)}: "
                               + diverged_text(row["n_diverged"], row["n_seeds"]))
            for (column, _), cell in zip(METRIC_COLUMNS, _metric_cells(row, left_out),
                                         strict=True):
                cell.bold, cell.underline = _emphasis(row.get(f"rank_{column}"), emphasis)
                cell.shade, cell.mark = worse, worse and column == "dsc"
                cells.append(cell)
        rows.append(cells)
    notes = [f"Shaded ({WORSE_MARK} in Markdown): DSC below the vanilla baseline's at that "
             "fraction. " + emphasis_note(emphasis) + " DSC, SEN, PRC in %, HD = HD95 in mm; "
             "means over cases, then over seeds."]
    if any_left_out:
        notes.append(f"{HD_LEFT_OUT}: some (case, seed) pairs with infinite or undefined HD95 "
                     "left out of the HD mean.")
    notes += _diverged_notes(partial, every)
    align = ["l"] + ["r"] * (4 * len(fractions))
    return Grid(caption, header, rows, align, notes, None, label)


def best_hyperparameters_grid(table: pd.DataFrame, caption: str, label: str = "") -> Grid:
    """000 Tables I-III: method and hyperparameter rows (the symbol and what it is, from the
    catalog), one column per training fraction; ``diverged`` where every setting of the
    method diverged on every seed."""
    fractions = [c for c in table.columns if diverged_column(c) in table.columns]
    header = [[("Method", 1), ("Hyperparameter", 1), ("Meaning", 1),
               *[(f"{f} data", 1) for f in fractions]]]
    rows: list[list[Cell] | str] = []
    previous = None
    every = False
    for _, row in table.iterrows():
        method = row["method"] if row["method"] != previous else ""
        previous = row["method"]
        symbol = row["hyperparameter"]
        diverged = [bool(row[diverged_column(f)]) for f in fractions]
        every |= any(diverged)
        rows.append([Cell(method), Cell(symbol, latex=latex_escape(symbol)),
                     Cell(row["meaning"]),
                     *[Cell(DIVERGED if d else value_text(row[f]))
                       for f, d in zip(fractions, diverged, strict=True)]])
    notes = [f"{DIVERGED}: every setting of the method diverged on every seed (the training "
             "loss became NaN or infinite); none could be chosen."] if every else []
    align = ["l", "l", "l"] + ["r"] * len(fractions)
    return Grid(caption, header, rows, align, notes, None, label)


def importance_grid(table: pd.DataFrame, caption: str, skipped: dict[str, str] | None = None,
                    label: str = "") -> Grid:
    """Hyperparameter importance per method and training fraction: the parameter, its share
    of variance and the completed trials it was estimated from."""
    header = [[("Method", 1), ("Training data", 1), ("Parameter", 1), ("Importance", 1),
               ("Trials", 1)]]
    rows: list[list[Cell] | str] = []
    previous = None
    for name, fraction, parameter, importance, n_trials in zip(
            table["method"], table["fraction"], table["parameter"], table["importance"],
            table["n_trials"], strict=True):
        rows.append([Cell(name if name != previous else ""), Cell(fraction_label(fraction)),
                     Cell(parameter, latex=latex_escape(parameter)),
                     Cell(number(importance, 2)), Cell(str(n_trials))])
        previous = name
    notes = ["Importance: share of the variance of the trials' mean test DSC explained by the "
             "hyperparameter or interaction (functional ANOVA: exact on full grids, optuna's "
             "fANOVA estimate elsewhere), among the trials of one method at one training "
             "fraction (its shares sum to 1)."]
    for method, reason in (skipped or {}).items():
        notes.append(f"{method}: skipped, {reason}.")
    return Grid(caption, header, rows, ["l", "r", "l", "r", "r"], notes, None, label)


def logit_shift_grid(table: pd.DataFrame, caption: str, label: str = "") -> Grid:
    """001 Fig. 3 (right) as a table: per setting, fraction, true class and logit the pooled
    mean logit on training and test voxels and the shift of its magnitude."""
    header = [[("Method", 1), ("Parameter", 1), ("Fraction", 1), ("Voxels of", 1),
               ("Logit", 1), ("Train mean", 1), ("Test mean", 1), ("Δ|ẑ|", 1)]]
    rows: list[list[Cell] | str] = []
    previous = None
    for name, parameter, fraction, true_class, logit_class, train_mean, test_mean, shift in zip(
            table["method"], table["parameter"], table["fraction"], table["true_class"],
            table["logit_class"], table["train_mean"], table["test_mean"], table["shift"],
            strict=True):
        rows.append([Cell(name if name != previous else ""), setting_cell(parameter),
                     Cell(fraction_label(fraction)), Cell(true_class), Cell(logit_class),
                     Cell(number(train_mean, 2)), Cell(number(test_mean, 2)),
                     Cell(number(shift, 2))])
        previous = name
    notes = ["Δ|ẑ| = |ẑ_test| − |ẑ_train| (001 Fig. 3): negative when the test logits lie "
             "closer to the decision boundary than the training logits. Seeds pooled."]
    return Grid(caption, header, rows, ["l", "l", "r", "l", "l", "r", "r", "r"], notes, None,
                label)


def _blocks(table: pd.DataFrame):
    """``(title, rows)`` per block (training fraction, post-processing) of a table of
    ``analysis.dataset_tables``, in its order: ``5% training data, w/ post-processing``."""
    for (fraction, postprocessed), rows in table.groupby(["fraction", "postprocessed"],
                                                         sort=False):
        pp = "w/" if postprocessed else "w/o"
        # pandas-stubs types groupby keys as Hashable; "fraction" holds floats
        label = fraction_label(fraction)  # type: ignore[arg-type]
        yield f"{label} training data, {pp} post-processing", rows


def _setting_rows(rows: pd.DataFrame, values) -> list[list[Cell]]:
    """One body row per setting of ``rows`` (one block; a setting's rows consecutive): the
    method named once per group, the setting, then ``values(setting_rows)``'s cells
    (``setting_rows``: the setting's rows as dicts)."""
    out, previous = [], None

    def setting(row: dict) -> tuple:
        return row["method"], None if pd.isna(row["parameter"]) else row["parameter"]

    for (method, parameter), own in itertools.groupby(rows.to_dict("records"), setting):
        out.append([Cell(method if method != previous else ""), setting_cell(parameter),
                     *values(list(own))])
        previous = method
    return out


def _bold_best(body: list[list[Cell]], first: int, higher: Sequence[bool]) -> None:
    """Bold the best value of each column from ``first`` on among ``body`` (one block),
    highest where ``higher`` says so, else lowest; equal printed values all bold."""
    for k, high in enumerate(higher, start=first):
        shown = [float(row[k].text) if row[k].text not in ("", MISSING) else math.nan
                 for row in body]
        finite = [v for v in shown if math.isfinite(v)]
        if not finite:
            continue
        best = max(finite) if high else min(finite)
        for row, value in zip(body, shown, strict=True):
            row[k].bold = value == best


def per_class_grid(table: pd.DataFrame, caption: str, label: str = "") -> Grid:
    """000 Table V: one row per setting of each method, per foreground class (``r`` marks a
    rare class) its DSC and SEN, then ``AVG`` and ``AVG_r``; one block per training fraction
    and post-processing; the best of each column in a block in bold (``table`` is
    ``dataset_tables.per_class_table``)."""
    classes = list(dict.fromkeys(table["class_name"]))
    rare = set(table.loc[table["rare"], "class_name"])
    names = [c if c in (AVERAGE, RARE_AVERAGE) else class_label(c) + (" (r)" if c in rare
                                                                       else "")
             for c in classes]
    header = [[("", 2)] + [(name, 2) for name in names],
              [("Method", 1), ("Parameter", 1)] + [(m, 1) for _ in classes
                                                  for m in ("DSC", "SEN")]]

    def values(own: list[dict]) -> list[Cell]:
        by_class = {row["class_name"]: row for row in own}
        return [Cell(number(by_class[c][m] if c in by_class else math.nan)) for c in classes
                for m in ("dsc", "sensitivity")]

    rows: list[list[Cell] | str] = []
    for title, block in _blocks(table):
        body = _setting_rows(block, values)
        _bold_best(body, 2, [True] * 2 * len(classes))
        rows += [title, *body]
    notes = ["DSC and SEN in %, means over cases, then over seeds. (r): a rare class; AVG: "
             "mean over every foreground class, AVG_r: over the rare classes. Best of each "
             "column within a block in bold."]
    return Grid(caption, header, rows, ["l", "l"] + ["r"] * 2 * len(classes), notes, None,
                label)


def iou_grid(table: pd.DataFrame, caption: str, label: str = "") -> Grid:
    """003 Table 1's columns: one row per setting of each method, the pooled IoU of each
    class, mIoU, pixel accuracy and the mean final validation loss; one block per training
    fraction and post-processing (``table`` is ``dataset_tables.iou_table``)."""
    classes = list(dict.fromkeys(table["class_name"]))
    header = [[("Method", 1), ("Parameter", 1), *[(f"IoU {class_label(c)}", 1)
                                                  for c in classes],
               ("mIoU", 1), ("PA", 1), ("Loss", 1)]]

    def values(own: list[dict]) -> list[Cell]:
        iou = {row["class_name"]: row["iou"] for row in own}
        first = own[0]
        return [*[Cell(number(iou.get(c, math.nan))) for c in classes],
                Cell(number(first["miou"])), Cell(number(first["pixel_accuracy"], 2)),
                Cell(number(first["val_loss"], 3))]

    rows: list[list[Cell] | str] = []
    for title, block in _blocks(table):
        body = _setting_rows(block, values)
        _bold_best(body, 2, [True] * (len(classes) + 2) + [False])
        rows += [title, *body]
    notes = ["IoU: of the voxels pooled over the test cases (ΣTP / Σ(pred + ref − TP)); mIoU: "
             "its mean over the foreground classes; PA: pixel accuracy over the test cases; "
             "all in %, averaged over seeds. Loss: mean final validation loss of the trials. "
             "Best of each column within a block in bold."]
    return Grid(caption, header, rows, ["l", "l"] + ["r"] * (len(classes) + 3), notes, None,
                label)


DISTANCE_COLUMNS = (("dsc", "DSC"), ("iou", "Jaccard"), ("arvd", "aRVD"), ("abd", "ABD"),
                    ("hd95", "95HD"))


def distance_grid(table: pd.DataFrame, caption: str, label: str = "") -> Grid:
    """004's evaluation (§4.3): one row per setting of each method, DSC, Jaccard, aRVD, ABD
    and 95HD as mean ± std over the test cases; one block per training fraction and
    post-processing (``table`` is ``dataset_tables.distance_table``)."""
    header = [[("Method", 1), ("Parameter", 1), *[(name, 1) for _, name in DISTANCE_COLUMNS]]]

    def values(own: list[dict]) -> list[Cell]:
        row = own[0]
        cells = []
        for column, _ in DISTANCE_COLUMNS:
            text = f"{number(row[column])} ± {number(row[f'{column}_std'])}"
            cells.append(Cell(MISSING if pd.isna(row[column]) else text))
        return cells

    rows: list[list[Cell] | str] = []
    for title, block in _blocks(table):
        rows += [title, *_setting_rows(block, values)]
    notes = ["Mean ± standard deviation over the test cases (means over cases, then over "
             "seeds). DSC, Jaccard and aRVD (|V_pred − V_ref| / V_ref) in %, ABD (average "
             "boundary distance) and 95HD in mm; a case where a metric is undefined (aRVD "
             "without reference voxels, 95HD of an empty prediction) is left out of it."]
    return Grid(caption, header, rows, ["l", "l"] + ["r"] * len(DISTANCE_COLUMNS), notes, None,
                label)


# ---------------------------------------------------------------------------- Markdown

def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def _md_cell(cell: Cell) -> str:
    text = _md_escape(cell.text)
    if not text:
        return text
    if cell.underline:
        text = f"<ins>{text}</ins>"
    if cell.bold:
        text = f"**{text}**"
    if cell.mark:
        text = f"{WORSE_MARK} {text}"
    return text


def _flat_header(grid: Grid) -> list[str]:
    labels = [""] * grid.width
    for header_row in grid.header:
        column = 0
        for name, span in header_row:
            for k in range(column, column + span):
                labels[k] = f"{labels[k]} {name}".strip() if name else labels[k]
            column += span
    return labels


def to_markdown(grid: Grid) -> str:
    """A GitHub-flavoured Markdown table with the caption above and notes below."""
    marks = grid.row_marks is not None
    header = ([""] if marks else []) + [_md_escape(h) for h in _flat_header(grid)]
    rule = (["---"] if marks else []) + ["---" if a == "l" else "---:" for a in grid.align]
    lines = [grid.caption, "", "| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    for i, row in enumerate(grid.rows):
        if isinstance(row, str):
            cells = ([""] if marks else []) + [f"**{_md_escape(row)}**"] + [""] * (grid.width - 1)
        else:
            mark = WORSE_MARK if grid.row_marks is not None and grid.row_marks[i] else ""
            cells = ([mark] if marks else []) + [_md_cell(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    if grid.notes:
        lines += ["", *[" ".join(grid.notes)]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- LaTeX

LATEX_PACKAGES = (r"\usepackage{booktabs}", r"\usepackage[table]{xcolor}")
SHADE = r"\cellcolor{gray!25}"


def _latex_cell(cell: Cell) -> str:
    text = cell.latex if cell.latex is not None else latex_escape(cell.text)
    if cell.underline and text:
        text = rf"\underline{{{text}}}"
    if cell.bold and text:
        text = rf"\textbf{{{text}}}"
    if cell.shade:
        text = SHADE + text
    return text


def to_latex(grid: Grid) -> str:
    """A ``table`` float: booktabs rules, shaded cells, bold/underline; needs the packages in
    ``LATEX_PACKAGES``."""
    lines = ["% " + "  ".join(LATEX_PACKAGES), r"\begin{table}[htbp]", r"\centering",
             rf"\caption{{{latex_escape(grid.caption)}}}"]
    if grid.label:
        lines.append(rf"\label{{{grid.label}}}")
    lines += [r"\small", rf"\begin{{tabular}}{{{''.join(grid.align)}}}", r"\toprule"]
    for depth, header_row in enumerate(grid.header):
        cells, rules, column = [], [], 1
        last = depth == len(grid.header) - 1
        for name, span in header_row:
            text = latex_escape(name)
            if span > 1:
                cells.append(rf"\multicolumn{{{span}}}{{c}}{{{text}}}")
                rules.append(rf"\cmidrule(lr){{{column}-{column + span - 1}}}")
            else:
                cells.append(text)
            column += span
        lines.append(" & ".join(cells) + r" \\")
        if rules and not last:
            lines.append(" ".join(rules))
    lines.append(r"\midrule")
    for i, row in enumerate(grid.rows):
        if isinstance(row, str):
            if i:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{grid.width}}}{{l}}{{\textit{{{latex_escape(row)}}}}}"
                         r" \\")
            lines.append(r"\midrule")
        else:
            lines.append(" & ".join(_latex_cell(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if grid.notes:
        lines += [r"\par\smallskip", r"\begin{minipage}{0.95\linewidth}\footnotesize",
                  latex_escape(" ".join(grid.notes)), r"\end{minipage}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def latex_document(fragments: Sequence[str], title: str = "") -> str:
    """A complete LaTeX document (article, landscape-wide text block) holding ``fragments``
    (outputs of ``to_latex``); compiles with pdflatex."""
    head = [r"\documentclass{article}", r"\usepackage[margin=1.5cm,landscape]{geometry}",
            r"\usepackage[T1]{fontenc}", r"\usepackage{amssymb}", *LATEX_PACKAGES,
            r"\begin{document}"]
    if title:
        head.append(rf"\section*{{{latex_escape(title)}}}")
    body = [f"{f}\n\\clearpage" if i % 3 == 2 else f for i, f in enumerate(fragments)]
    return "\n".join([*head, *body, r"\end{document}"]) + "\n"


# ---------------------------------------------------------------------------- HTML

HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 78rem; padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table.paper { border-collapse: collapse; margin: 1rem 0 .3rem; font-size: .9rem;
              font-variant-numeric: tabular-nums; }
table.paper caption { caption-side: top; text-align: left; font-weight: 600;
                      padding-bottom: .4rem; }
table.paper thead tr:first-child th { border-top: 2px solid #000; }
table.paper thead tr:last-child th { border-bottom: 1px solid #000; }
table.paper tbody tr:last-child td { border-bottom: 2px solid #000; }
table.paper th, table.paper td { padding: .18rem .6rem; }
table.paper th.group { border-bottom: 1px solid #777; }
table.paper td.r, table.paper th.r { text-align: right; }
table.paper td.l, table.paper th.l { text-align: left; }
table.paper td.worse { background: #d9d9d9; }
table.paper td.block { font-style: italic; border-top: 1px solid #000;
                       border-bottom: 1px solid #000; }
table.paper .best { font-weight: 700; } table.paper .second { text-decoration: underline; }
p.note { font-size: .82rem; color: #444; max-width: 60rem; margin-top: .2rem; }
.warn { background: #fff4ce; border-left: 4px solid #e0b000; padding: .5rem .8rem; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #444; }
"""


def _html_cell(cell: Cell, align: str) -> str:
    text = html_lib.escape(cell.text)
    if cell.underline and text:
        text = f"<u>{text}</u>"
    if cell.bold and text:
        text = f"<strong>{text}</strong>"
    classes = [align] + (["worse"] if cell.shade else [])
    return f'<td class="{" ".join(classes)}">{text}</td>'


def to_html(grid: Grid) -> str:
    """A ``<table class="paper">`` fragment with caption, and the notes as a paragraph."""
    ident = f' id="{html_lib.escape(grid.label)}"' if grid.label else ""
    lines = [f'<table class="paper"{ident}>',
             f"<caption>{html_lib.escape(grid.caption)}</caption>", "<thead>"]
    for header_row in grid.header:
        cells, column = [], 0
        for name, span in header_row:
            align = grid.align[column] if span == 1 else "c"
            group = ' class="group"' if span > 1 else f' class="{align}"'
            colspan = f' colspan="{span}"' if span > 1 else ""
            cells.append(f"<th{group}{colspan}>{html_lib.escape(name)}</th>")
            column += span
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines += ["</thead>", "<tbody>"]
    for row in grid.rows:
        if isinstance(row, str):
            lines.append(f'<tr><td class="block" colspan="{grid.width}">'
                         f"{html_lib.escape(row)}</td></tr>")
        else:
            lines.append("<tr>" + "".join(_html_cell(c, a) for c, a in
                                          zip(row, grid.align, strict=True)) + "</tr>")
    lines += ["</tbody>", "</table>"]
    if grid.notes:
        lines.append(f'<p class="note">{html_lib.escape(" ".join(grid.notes))}</p>')
    return "\n".join(lines) + "\n"


def html_page(title: str, body: str | Sequence[str]) -> str:
    """A standalone HTML5 page (inline CSS, no external resources) around ``body``."""
    if not isinstance(body, str):
        body = "\n".join(body)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html_lib.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n"
            f"</head>\n<body>\n<h1>{html_lib.escape(title)}</h1>\n{body}\n</body>\n</html>\n")


# ---------------------------------------------------------------------------- CSV

def to_csv(table: pd.DataFrame) -> str:
    """The table as CSV, every number at full precision (a float reads back as the same
    float); flags, counts and hyperparameter values as they are. Rounding to the papers'
    one decimal is for the printed formats (Markdown, LaTeX, HTML) only."""
    return table.to_csv(index=False, lineterminator="\n")


# ---------------------------------------------------------------------------- shortcuts

def markdown(blocks: dict[str, pd.DataFrame], caption: str) -> str:
    """A Markdown sensitivity table with one block per entry of ``blocks`` (e.g. w/ and w/o
    post-processing), as 000 Table IV."""
    return to_markdown(sensitivity_grid(blocks, caption))


def latex(blocks: dict[str, pd.DataFrame], caption: str) -> str:
    """The LaTeX ``table`` of a sensitivity analysis (see ``markdown``)."""
    return to_latex(sensitivity_grid(blocks, caption))


def html(blocks: dict[str, pd.DataFrame], caption: str) -> str:
    """A standalone HTML page holding the sensitivity table (see ``markdown``)."""
    return html_page(caption, to_html(sensitivity_grid(blocks, caption)))
