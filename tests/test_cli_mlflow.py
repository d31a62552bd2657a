"""`--mlflow`: each trial's params, curves and case table in a local MLflow file store."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from study import tracking
from study.expand import expand
from study.trial import run_trial


def test_a_trial_is_tracked_in_a_local_file_store(tiny_spec, run_options, tmp_path):
    """A trial with validation logs: hp and identity params, a training-loss point per
    report and validation-DSC points at the validation iterations, its final DSC, and its
    case table as cases.csv; running it again continues the same MLflow run."""
    pytest.importorskip("mlflow")
    uri = f"file:{tmp_path / 'mlruns'}"
    param = next(t for t in expand(tiny_spec) if t.config.technique == "asym_focal")
    options = dataclasses.replace(run_options, validate_every=2, mlflow_uri=uri)
    summary = run_trial(param.as_param(), options)
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["trial_id"] == param.trial_id and run.info.status == "FINISHED"
    assert run.data.params["hp_gamma"] == "2.0" and run.data.params["technique"] == "asym_focal"
    assert run.data.params["fraction"] == "0.5" and run.data.params["iterations"] == "4"
    loss = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in loss] == [1, 2, 3, 4]  # tiny: a report every iteration
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_dsc")] == [2, 4]
    assert run.data.metrics["dsc_pp"] == pytest.approx(summary["dsc_pp"])
    local = client.download_artifacts(run.info.run_id, "cases.csv", str(tmp_path))
    cases = pd.read_csv(local)
    assert set(cases["trial_id"]) == {param.trial_id}
    assert len(cases[cases["split"] == "test"]) == 4
    run_trial(param.as_param(), options)
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_mlflow_without_a_uri_is_a_file_store_in_the_storage(tmp_path):
    """`--mlflow` alone logs to file:STORAGE/mlruns."""
    assert tracking.default_uri(str(tmp_path)) == f"file:{tmp_path.resolve() / 'mlruns'}"
