"""Opt-in experiment tracking with MLflow (``study launch --mlflow [URI]``).

One MLflow run per trial, in an MLflow experiment named after the study: the trial's identity
and hyperparameters as params (dataset, model, technique, fraction, seed, ``hp_<name>``), its
training-loss and validation-DSC curves as metrics by iteration, its final mean test DSC
without / with post-processing (``dsc_raw``, ``dsc_pp``), and its case table (``cases.csv``,
the trial's ``cases`` rows) as an artifact. A resumed trial continues its run (found by the
``trial_id`` tag). The Parquet results stay the record the analysis reads; MLflow is a view.

MLflow is an optional extra (``pip install 'imbalance-study[mlflow]'``). A tracking problem
inside a trial (a server that went away) is warned about once and tracking stops for that
trial; it never fails the training.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from study.identity import TrialConfig

CURVES = ("train_loss", "val_loss", "val_dsc")  # reported during training, by iteration
FINAL = ("dsc_raw", "dsc_pp", "dsc_raw_validation", "dsc_pp_validation")


def default_uri(storage: str) -> str:
    """The local file store used when ``--mlflow`` is given without a URI."""
    base = storage if "://" not in storage else str(Path.cwd())
    return f"file:{Path(base).resolve() / 'mlruns'}"


def client(uri: str):
    """An ``MlflowClient`` for ``uri``; a clear error when MLflow is not installed. A
    ``file:`` store is opted into (recent MLflow releases keep the file store in maintenance
    and refuse it unless ``MLFLOW_ALLOW_FILE_STORE`` is set); give a ``sqlite:///`` or
    ``http(s)://`` URI for a database or server backend."""
    try:
        from mlflow import MlflowClient
    except ImportError as error:
        raise ValueError("--mlflow needs MLflow: pip install 'imbalance-study[mlflow]'"
                         ) from error
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow, name: str) -> str:
    """The id of MLflow experiment ``name``, created if missing (by whichever trial or
    driver comes first)."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow.create_experiment(name)
    except Exception:  # created meanwhile by a concurrent trial
        return mlflow.get_experiment_by_name(name).experiment_id


class Tracker:
    """The MLflow run of one trial."""

    def __init__(self, uri: str, param: dict[str, Any]):
        from mlflow.entities import Param

        self.mlflow = client(uri)
        config = TrialConfig.from_dict(param["config"])
        experiment = experiment_id(self.mlflow, param["study"])
        runs = self.mlflow.search_runs(
            [experiment], filter_string=f"tags.trial_id = '{param['trial_id']}'", max_results=1)
        if runs:
            self.run_id = runs[0].info.run_id
            return
        self.run_id = self.mlflow.create_run(
            experiment, run_name=f"{config.technique} {param['param_label']} "
            f"fraction {config.fraction:g} seed {config.seed}",
            tags={"trial_id": param["trial_id"], "study": param["study"]}).info.run_id
        params = {"dataset": config.dataset.name,
                  "model": config.model.label,
                  "technique": config.technique, "fraction": config.fraction,
                  "seed": config.seed, "iterations": config.training.iterations,
                  "variant": param.get("variant"),
                  **{f"hp_{name}": value for name, value in config.hp.items()}}
        self._call(self.mlflow.log_batch, self.run_id,
                   params=[Param(k, str(v)) for k, v in params.items()])

    def _call(self, method, *args, **kwargs) -> None:
        if self.run_id is None:
            return
        try:
            method(*args, **kwargs)
        except Exception as error:
            warnings.warn(f"MLflow tracking stopped for this trial: {error}", stacklevel=2)
            self.run_id = None

    def curves(self, metrics: dict[str, Any]) -> None:
        """Log a training report's curve points at its iteration."""
        from mlflow.entities import Metric

        step, now = int(metrics["iteration"]), int(time.time() * 1000)
        points = [Metric(k, float(metrics[k]), now, step) for k in CURVES
                  if metrics.get(k) is not None and metrics[k] == metrics[k]]
        if points:
            self._call(self.mlflow.log_batch, self.run_id, metrics=points)

    def finish(self, status: str, summary: dict[str, Any],
               case_rows: Sequence[dict[str, Any]]) -> None:
        """Log the final DSC and the case table; end the run (``FAILED`` unless ok)."""
        import pandas as pd

        for key in FINAL:
            value = summary.get(key)
            if value is not None and value == value:
                self._call(self.mlflow.log_metric, self.run_id, key, float(value))
        self._call(self.mlflow.set_tag, self.run_id, "status", status)
        if case_rows:
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / "cases.csv"
                pd.DataFrame(list(case_rows)).to_csv(path, index=False)
                self._call(self.mlflow.log_artifact, self.run_id, str(path))
        self._call(self.mlflow.set_terminated, self.run_id,
                   "FINISHED" if status in ("ok", "diverged") else "FAILED")


class TrackedSession:
    """A ``study.trial.Session`` that also logs each report's curves to a :class:`Tracker`."""

    def __init__(self, session, tracker: Tracker):
        self.session, self.tracker = session, tracker

    def restore(self) -> bytes | None:
        return self.session.restore()

    def report(self, metrics: dict[str, Any], checkpoint: bytes | None = None) -> None:
        self.session.report(metrics, checkpoint)
        if "iteration" in metrics:
            self.tracker.curves(metrics)
