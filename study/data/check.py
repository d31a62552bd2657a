"""``study data check ROOT --layout NAME``: validate a whole dataset before spending GPU hours.

Lists every problem of every case (not just the first; each names its file: unreadable,
truncated or damaged files, paths that leave the dataset folder, broken ``dataset.json``,
mismatched geometry, bad labels) and exits 1 if there is any; otherwise prints
a summary (cases, channels, shapes, spacings, class shares, 001 Table I class-imbalance ratio
and the papers' split sizes) and exits 0. Unknown dataset names exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from study.data import loader, splits
from study.data.registry import DATASETS


def run(root: str | Path, name: str, printer: Callable[[str], None] = print,
        progress_to=None) -> int:
    """Check ``root`` as dataset ``name``; return the exit status (0 ok, 1 problems, 2 usage).
    Progress goes to ``progress_to`` (default: standard error)."""
    if name not in DATASETS:
        print(f"study: error: --layout {name!r}: unknown dataset (known: "
              f"{', '.join(DATASETS)})", file=sys.stderr)
        return 2
    info = DATASETS[name]
    say = printer
    progress_to = progress_to or sys.stderr
    step = [0]

    def progress(done: int, total: int) -> None:
        if total >= 20 and (done == total or done >= step[0]):
            step[0] = done + max(1, total // 10)
            print(f"checked {done}/{total} cases", file=progress_to, flush=True)

    report = loader.check_dataset(info, root, progress)
    if report.problems:
        say(f"{len(report.problems)} problem(s) in {root} read as {info.name} "
            f"({info.layout} layout; {info.description}):")
        for problem in report.problems:
            say(f"  - {problem}")
        for note in report.notes:
            say(f"  note: {note}")
        say(f"{len(report.cases)} case(s) found; fix the problems above and run the check again")
        return 1
    for line in report.summary():
        say(line)
    if info.test_cases is not None:
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
    say(f"ok: {len(report.cases)} cases of {info.name} at {root} passed every check")
    return 0
