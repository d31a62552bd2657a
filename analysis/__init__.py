"""Tables and figures from a study's Parquet results. Imports neither torch nor ray.

>>> cases = load("study-results/demo/results")                              # doctest: +SKIP
>>> sensitivity_table(cases, "synthetic-brats", 0.5, postprocessed=True)   # doctest: +SKIP
>>> comparison_table(cases, "synthetic-brats", postprocessed=True)         # doctest: +SKIP
>>> best_settings(cases, "synthetic-brats", select_on="validation")        # doctest: +SKIP
>>> write_report(load_results("study-results/demo/results"), "report/")    # doctest: +SKIP

``python -m analysis RESULTS --out DIR`` writes the whole report from the command line.
"""

from analysis.dataset_tables import distance_table, iou_table, per_class_table, rare_classes
from analysis.importance import Importance, hyperparameter_importance
from analysis.load import Results, ResultsError, load, load_results, load_trials
from analysis.logits import logit_histograms, logit_shift_table, logit_statistics
from analysis.render import (
    Grid,
    best_hyperparameters_grid,
    comparison_grid,
    html,
    html_page,
    importance_grid,
    latex,
    latex_document,
    logit_shift_grid,
    markdown,
    sensitivity_grid,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)
from analysis.report import write_report
from analysis.tables import (
    best_hyperparameters,
    best_settings,
    comparison_table,
    method_name,
    selection_description,
    sensitivity_table,
)

__all__ = [
    "Grid", "Importance", "Results", "ResultsError", "best_hyperparameters",
    "best_hyperparameters_grid", "best_settings", "comparison_grid", "comparison_table",
    "distance_table", "html", "html_page", "hyperparameter_importance", "importance_grid",
    "iou_table", "latex", "latex_document", "load", "load_results", "load_trials",
    "logit_histograms", "logit_shift_grid", "logit_shift_table", "logit_statistics", "markdown",
    "method_name", "per_class_table", "rare_classes", "selection_description",
    "sensitivity_grid", "sensitivity_table", "to_csv", "to_html", "to_latex", "to_markdown",
    "write_report",
]
