"""imbalance-study: hyperparameter sensitivity studies of class-imbalance regularizers.

Data flows one way: study file (``study.spec``) -> trials (``study.trials``) -> one training
run each (``study.trial``) scheduled by Ray Tune (``study.tune``) -> Parquet results
(``study.results``) -> tables and figures (the separate ``analysis`` package).
"""

__version__ = "0.1.0"
