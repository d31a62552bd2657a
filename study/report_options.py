"""The options of a report, defined once for ``study report`` / ``study demo`` and
``python -m analysis`` (which may import this module: it depends on nothing but argparse and
the catalog, so that building the command line loads no data stack)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from study.catalog import SPLITS, TEST


def add_report_options(parser: argparse.ArgumentParser, *, out_required: bool) -> None:
    """The options of a report, defined once for ``study report`` and ``python -m analysis``
    (:func:`report_options` turns them into ``analysis.write_report`` arguments)."""
    parser.add_argument("--out", required=out_required, default=None,
                        help="report folder to write" + ("" if out_required else
                                                         " (default: STORAGE/NAME/report)"))
    parser.add_argument("--title", default=None, help="report title (default: from the study)")
    parser.add_argument("--no-figures", action="store_true", help="tables only (faster)")
    parser.add_argument("--metric", default="dsc",
                        help="metric that chooses each technique's setting (default: dsc)")
    parser.add_argument("--select-raw", action="store_true", default=None,
                        help="choose settings on results without post-processing (default: "
                        "with; an optimize-mode study uses its search metric)")
    parser.add_argument("--select-on", choices=SPLITS, default=TEST,
                        help="split whose mean metric chooses each technique's setting: test "
                        "(default, as the papers) or validation (cases held out of training; "
                        "needs dataset.validation_cases in the study file); the tables report "
                        "the test split either way")
    parser.add_argument("--emphasis", choices=("bold-underline", "paper"),
                        default="bold-underline",
                        help="best bold + second underlined, or the papers' captions' "
                        "convention (both bold, best also underlined)")
    parser.add_argument("--strict", action="store_true",
                        help="stop on malformed Parquet files instead of skipping them")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def report_options(args: argparse.Namespace, select_raw: bool = False,
                   printer: Callable[[str], None] = print) -> dict[str, Any]:
    """``analysis.write_report`` keyword arguments from :func:`add_report_options`'s options
    (``select_raw``: the default of ``--select-raw``; ``printer`` prints progress unless
    ``--quiet``)."""
    raw = select_raw if args.select_raw is None else args.select_raw
    return {"figures": not args.no_figures, "metric": args.metric,
            "select_postprocessed": not raw, "select_on": args.select_on,
            "emphasis": args.emphasis,
            "progress": None if args.quiet else printer}
