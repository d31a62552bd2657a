"""Tables and figures from a study's Parquet results. Imports neither torch nor ray.

>>> cases = load("study-results/demo/results")                              # doctest: +SKIP
>>> sensitivity_table(cases, "synthetic-brats", 0.5, postprocessed=True)   # doctest: +SKIP
>>> comparison_table(cases, "synthetic-brats", postprocessed=True)         # doctest: +SKIP
>>> best_settings(cases, "synthetic-brats", select_on="validation")        # doctest: +SKIP
>>> write_report(load_results("study-results/demo/results"), "report/")    # doctest: +SKIP

``python -m analysis RESULTS --out DIR`` writes the whole report from the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module defining it. Imported on first use, so that light modules of the
# package (``analysis.options`` for the command lines) load without pandas, SciPy or seaborn.
_EXPORTS = {
    "analysis.importance": ("Importance", "hyperparameter_importance"),
    "analysis.load": ("Results", "ResultsError", "load", "load_results", "load_trials"),
    "analysis.logits": ("logit_histograms", "logit_shift_table", "logit_statistics"),
    "analysis.render": ("Grid", "best_hyperparameters_grid", "comparison_grid", "html",
                        "html_page", "importance_grid", "latex", "latex_document",
                        "logit_shift_grid", "markdown", "sensitivity_grid", "to_csv", "to_html",
                        "to_latex", "to_markdown"),
    "analysis.report": ("write_report",),
    "analysis.tables": ("best_hyperparameters", "best_settings", "comparison_table",
                        "method_name", "selection_description", "sensitivity_table"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
