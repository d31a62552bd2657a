"""Tables and figures from a study's Parquet results. Imports neither torch nor ray.

>>> cases = load("study-results/demo/results")                      # doctest: +SKIP
>>> sensitivity_table(cases, "synthetic-brats", 0.5, postprocessed=True)  # doctest: +SKIP
"""

from analysis.load import load
from analysis.render import markdown
from analysis.report import write_report
from analysis.tables import sensitivity_table

__all__ = ["load", "markdown", "sensitivity_table", "write_report"]
