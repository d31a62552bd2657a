"""``study data check ROOT --layout NAME``: validate a whole dataset before spending GPU hours.

Lists every problem of every case (not just the first; each names its file: unreadable,
truncated or damaged files, paths that leave the dataset folder, broken ``dataset.json``,
mismatched geometry, bad labels, cases without foreground, constant images) and exits 1 if
there is any; otherwise prints a summary (cases, channels, shapes, spacings, class shares,
001 Table I class-imbalance ratio and the papers' split sizes) and exits 0. Unknown dataset
names exit 2. ``--layout nnunet`` / ``--layout msd`` check a task folder as its own
``dataset.json`` declares it (channels, labels; :mod:`study.data.inline`).
:func:`check_dataset` runs the checks of :func:`study.data.reader.read_case` over every case
and adds what only shows across cases.

``--figures DIR`` also collects, in the same pass, the statistics of 001 Fig. 10 (intensity
histograms of each class's voxels per channel: :class:`FigureStatistics`) and Fig. 11 (voxels
per class), over the cases without a problem, and writes them as CSV, PNG and SVG
(:func:`write_figures`), even when other cases have problems.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from study.data import inline, splits
from study.data.case import Case, DataError
from study.data.preprocess import parameters, preprocess
from study.data.reader import class_lut, read_case, scan
from study.data.registry import DATASETS, DatasetInfo

if TYPE_CHECKING:
    import pandas as pd


def class_voxels(info: DatasetInfo, raw_label: np.ndarray) -> list[int]:
    """Voxels per class of ``info`` (index order, background first) in a raw label volume."""
    classes = class_lut(info)[raw_label]
    return np.bincount(classes.ravel(), minlength=len(info.classes)).tolist()


def imbalance_ratio(counts: Sequence[Sequence[int]], k: int) -> tuple[float, float, int] | None:
    """001 Table I's class-imbalance ratio of class ``k``: the mean and std over the images
    containing class ``k`` of (background voxels / class-``k`` voxels), and the number of those
    images; ``None`` if no image contains it. ``counts``: per image, voxels per class
    (:func:`class_voxels`; class 0 is the background)."""
    ratios = [c[0] / c[k] for c in counts if c[k]]
    if not ratios:
        return None
    return float(np.mean(ratios)), float(np.std(ratios)), len(ratios)


INTENSITY_RANGE = (-5.0, 5.0)  # z-score units; voxels beyond are counted in the edge bins
INTENSITY_BINS = 100
INTENSITY_AXIS = "intensity (z-score)"


@dataclass
class FigureStatistics:
    """The statistics of 001 Fig. 10 and Fig. 11, gathered case by case.

    ``counts[c, k, b]``: voxels of class ``k`` in intensity bin ``b`` of channel ``c`` over the
    region of interest of every added case, with the intensities the networks see — the
    dataset's own preprocessing (CT window, z-score within the region of interest,
    :func:`study.data.preprocess.preprocess`) without resampling; :data:`INTENSITY_BINS` equal
    bins over :data:`INTENSITY_RANGE`, values beyond it in the edge bins, so every voxel of the
    region is counted once. ``class_voxels``: per added case, voxels per class of its label
    file (:func:`class_voxels`). ``left_out``: the cases not added, with why.
    """

    channels: tuple[str, ...]
    class_names: tuple[str, ...]
    rare: tuple[bool, ...]
    counts: np.ndarray
    cases: list[str] = field(default_factory=list)
    class_voxels: list[list[int]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, info: DatasetInfo) -> FigureStatistics:
        shape = (len(info.channels), len(info.class_names), INTENSITY_BINS)
        return cls(info.channels, info.class_names,
                   tuple(name in info.rare for name in info.class_names),
                   np.zeros(shape, dtype=np.int64))

    def add(self, case: Case, class_counts: list[int]) -> None:
        """Count ``case``'s region-of-interest voxels into the histograms (one ``bincount``
        per channel) and keep its voxels per class."""
        low, high = INTENSITY_RANGE
        classes, bins = self.counts.shape[1:]
        offset = case.label[case.roi].astype(np.int64) * bins
        for c, channel in enumerate(case.image):
            index = np.floor((channel[case.roi] - low) * (bins / (high - low)))
            index = np.clip(index, 0, bins - 1).astype(np.int64)
            self.counts[c] += np.bincount(offset + index,
                                          minlength=classes * bins).reshape(classes, bins)
        self.cases.append(case.case_id)
        self.class_voxels.append(class_counts)

    def intensity_table(self, dataset: str) -> pd.DataFrame:
        """One row per (channel, class, bin): ``dataset``, ``channel``, ``class``,
        ``bin_low``, ``bin_high``, ``voxels``."""
        import pandas as pd

        edges = np.linspace(*INTENSITY_RANGE, INTENSITY_BINS + 1)
        rows = [(dataset, channel, name, float(edges[b]), float(edges[b + 1]),
                 int(self.counts[c, k, b]))
                for c, channel in enumerate(self.channels)
                for k, name in enumerate(self.class_names) for b in range(INTENSITY_BINS)]
        return pd.DataFrame(rows, columns=["dataset", "channel", "class", "bin_low", "bin_high",
                                           "voxels"])

    def class_table(self, dataset: str) -> pd.DataFrame:
        """One row per class: ``dataset``, ``class_index``, ``class``, ``rare``, ``voxels``
        (total over the cases), ``cases_present`` and ``cases``."""
        import pandas as pd

        per_case = np.asarray(self.class_voxels, dtype=np.int64).reshape(-1, len(self.rare))
        rows = [(dataset, k, name, self.rare[k], int(per_case[:, k].sum()),
                 int((per_case[:, k] > 0).sum()), len(per_case))
                for k, name in enumerate(self.class_names)]
        return pd.DataFrame(rows, columns=["dataset", "class_index", "class", "rare", "voxels",
                                           "cases_present", "cases"])


def write_figures(stats: FigureStatistics, dataset: str, folder: str | Path) -> list[Path]:
    """Write ``DATASET-intensity`` (001 Fig. 10) and ``DATASET-classes`` (001 Fig. 11) into
    ``folder`` as CSV, PNG and SVG; return the paths (none when no case was added)."""
    if not stats.cases:
        return []
    from analysis.figures import class_distribution_figure, intensity_figure, save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    histograms, classes = stats.intensity_table(dataset), stats.class_table(dataset)
    for name, table, figure in (
            ("intensity", histograms, intensity_figure(histograms, INTENSITY_AXIS)),
            ("classes", classes, class_distribution_figure(classes))):
        csv = folder / f"{dataset}-{name}.csv"
        table.to_csv(csv, index=False)
        paths += [csv, *save(figure, folder / f"{dataset}-{name}")]
    return paths


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``problems`` empty = the dataset is usable."""

    dataset: str
    root: str
    cases: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    channels: tuple[str, ...] = ()
    shapes: list[tuple[int, int, int]] = field(default_factory=list)
    spacings: list[tuple[float, float, float]] = field(default_factory=list)
    class_voxels: list[list[int]] = field(default_factory=list)  # per case, per class
    class_names: tuple[str, ...] = ()
    given_test: list[str] = field(default_factory=list)  # the dataset's own test set
    figures: FigureStatistics | None = None  # collected when asked for (001 Fig. 10-11)
    seconds: float = 0.0

    def imbalance(self) -> dict[str, tuple[float, float, int]]:
        """Per foreground class present in some case: :func:`imbalance_ratio`."""
        ratios = {name: imbalance_ratio(self.class_voxels, k)
                  for k, name in enumerate(self.class_names[1:], start=1)}
        return {name: ratio for name, ratio in ratios.items() if ratio is not None}

    def summary(self) -> list[str]:
        """Human-readable summary lines."""
        lines = [f"{self.dataset} at {self.root}: {len(self.cases)} cases, "
                 f"{len(self.channels)} channel(s) ({', '.join(self.channels)}), "
                 f"checked in {self.seconds:.1f} s"]
        if self.shapes:
            for title, values in (("shape (D, H, W)", self.shapes),
                                  ("spacing mm (D, H, W)", self.spacings)):
                columns = list(zip(*values, strict=True))
                low = tuple(min(c) for c in columns)
                mid = tuple(statistics.median(c) for c in columns)
                high = tuple(max(c) for c in columns)
                lines.append(f"  {title}: min {_fmt(low)}  median {_fmt(mid)}  max {_fmt(high)}")
        totals = np.sum(self.class_voxels, axis=0) if self.class_voxels else []
        for k, name in enumerate(self.class_names):
            if len(totals):
                share = totals[k] / max(int(np.sum(totals)), 1)
                present = sum(1 for c in self.class_voxels if c[k])
                lines.append(f"  class {k} {name}: {int(totals[k])} voxels ({share:.3%}), "
                             f"present in {present}/{len(self.class_voxels)} cases")
        for name, (mean, std, n) in self.imbalance().items():
            lines.append(f"  class-imbalance ratio (001 Table I) {name}: {mean:.1f} ± {std:.1f} "
                         f"over {n} images")
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def check_dataset(info: DatasetInfo, root: str | Path,
                  progress: Callable[[int, int], None] | None = None,
                  figures: bool = False) -> CheckReport:
    """Check every case of a dataset; return all problems and, per case, the statistics of
    the summary; with ``figures``, also the :class:`FigureStatistics` of the cases without a
    problem (``report.figures``). Never raises for bad data (only for an unknown layout)."""
    clock = time.perf_counter()
    report = CheckReport(info.name, str(root), channels=info.channels,
                         class_names=info.class_names)
    if figures:
        report.figures = FigureStatistics.empty(info)
        # the dataset's own normalisation without resampling (no median-spacing pass either)
        params = parameters(replace(info, target_spacing=None), root)
    found = scan(info, root, fresh=True)
    report.problems.extend(found.problems)
    report.notes.extend(found.notes)
    report.cases = sorted(found.cases)
    report.given_test = sorted(found.given_test)
    for i, case_id in enumerate(report.cases, start=1):
        files = found.cases[case_id]
        before = len(report.problems)
        try:
            raw, problems = read_case(info, files)
        except (OSError, RuntimeError, MemoryError) as error:  # one case must not hide the rest
            raw, problems = None, [f"{files.labels[0].parent}: case {case_id} could not be "
                                   f"read ({type(error).__name__}: {error})"]
        report.problems.extend(problems)
        if raw is not None:
            counts = class_voxels(info, raw.label)
            if not any(counts[1:]):
                report.problems.append(f"{raw.source}: no foreground voxel (classes "
                                       f"{', '.join(info.class_names[1:])}): a training case "
                                       "without foreground teaches nothing about the rare class")
            for image, (_n, path, _k) in zip(raw.images, raw.files.channels, strict=True):
                array = sitk.GetArrayViewFromImage(image)
                if array.size and float(array.min()) == float(array.max()):
                    report.problems.append(f"{path}: constant image (every voxel "
                                           f"{float(array.min()):g})")
            depth, height, width = raw.label.shape
            report.shapes.append((int(depth), int(height), int(width)))
            report.spacings.append(raw.spacing)
            report.class_voxels.append(counts)
        if report.figures is not None:
            if raw is None or len(report.problems) > before:
                report.figures.left_out.append(f"{case_id} (has a problem)")
            else:
                try:
                    report.figures.add(preprocess(info, raw, params), counts)
                except DataError as error:
                    report.figures.left_out.append(f"{case_id} ({error})")
        if progress is not None:
            progress(i, len(report.cases))
    report.seconds = time.perf_counter() - clock
    return report


def _say_figures(report: CheckReport, folder: str | Path, say: Callable[[str], None]) -> None:
    """Write the figures of ``report`` into ``folder`` and say which files and cases."""
    assert report.figures is not None
    stats = report.figures
    paths = write_figures(stats, report.dataset, folder)
    if not paths:
        say(f"figures: none written to {folder}: no case without a problem")
        return
    say(f"figures of {len(stats.cases)} case(s) (001 Fig. 10-11):")
    for path in paths:
        say(f"  {path}")
    if stats.left_out:
        say(f"  left out of the figures: {', '.join(stats.left_out)}")


def run(root: str | Path, name: str, printer: Callable[[str], None] = print,
        progress_to=None, figures: str | Path | None = None) -> int:
    """Check ``root`` as dataset ``name`` — a declared dataset, or ``nnunet`` / ``msd`` for a
    task folder described by its own ``dataset.json`` (:func:`study.data.inline.folder_info`);
    return the exit status (0 ok, 1 problems, 2 usage). Progress goes to ``progress_to``
    (default: standard error). ``figures``: a folder for the figures of 001 Fig. 10-11 of the
    cases without a problem (:func:`write_figures`), written whether or not others have
    problems."""
    say = printer
    notes: list[str] = []
    if name in inline.LAYOUTS:
        try:
            info, notes = inline.folder_info(name, root)
        except ValueError as error:  # dataset.json unreadable or incomplete: nothing to scan
            problems = (error.problems if isinstance(error, inline.DatasetJsonError)
                        else [str(error)])
            say(f"{len(problems)} problem(s) in {root} read as an own {name} dataset:")
            for problem in problems:
                say(f"  - {problem}")
            if figures is not None:
                say(f"figures: none written to {figures}: the dataset could not be read")
            say("fix the problems above and run the check again")
            return 1
    elif name in DATASETS:
        info = DATASETS[name]
    else:
        print(f"study: error: --layout {name!r}: unknown dataset (known: "
              f"{', '.join((*DATASETS, *inline.LAYOUTS))})", file=sys.stderr)
        return 2
    progress_to = progress_to or sys.stderr
    step = [0]

    def progress(done: int, total: int) -> None:
        if total >= 20 and (done == total or done >= step[0]):
            step[0] = done + max(1, total // 10)
            print(f"checked {done}/{total} cases", file=progress_to, flush=True)

    report = check_dataset(info, root, progress, figures=figures is not None)
    report.notes.extend(notes)
    if report.problems:
        say(f"{len(report.problems)} problem(s) in {root} read as {info.name} "
            f"({info.layout} layout; {info.description}):")
        for problem in report.problems:
            say(f"  - {problem}")
        for note in report.notes:
            say(f"  note: {note}")
        if figures is not None:
            _say_figures(report, figures, say)
        say(f"{len(report.cases)} case(s) found; fix the problems above and run the check again")
        return 1
    for line in report.summary():
        say(line)
    if report.given_test:
        say(f"  splits: the dataset's own test set ({len(report.given_test)} labelled cases "
            f"of imagesTs/), training pool {len(report.cases) - len(report.given_test)}")
    elif info.test_cases is not None:
        pool = len(report.cases) - info.test_cases
        if pool <= 0:
            say(f"  splits: the papers' test set alone has {info.test_cases} cases; set "
                "dataset.test_cases in the study file")
        else:
            sizes = ", ".join(f"{f:g} -> {splits.train_count(pool, f, info.train_counts)}"
                              for f in sorted(info.train_counts or {1.0: pool}, reverse=True))
            source = ("the papers' counts" if info.train_counts.get(1.0) == pool
                      else "fraction x pool, rounded")
            say(f"  splits: {info.test_cases} test cases, training pool {pool}: {sizes} "
                f"({source})")
    if figures is not None:
        _say_figures(report, figures, say)
    say(f"ok: {len(report.cases)} cases of {info.name} at {root} passed every check")
    return 0
