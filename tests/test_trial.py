"""The trial runner without Ray: results rows, divergence, failure, exact resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from study import techniques
from study.results import ResultStore
from study.trial import LocalSession, run_trial
from study.trials import expand


def _with_iterations(spec, iterations):
    training = dataclasses.replace(spec.training, iterations=iterations)
    return dataclasses.replace(spec, training=training)


def test_trial_writes_one_trial_row_and_all_case_rows(tiny_spec, run_options):
    """One trials row; cases rows = test cases x foreground classes x {raw, post-processed}."""
    trial = expand(tiny_spec)[1]
    summary = run_trial(trial.as_param(), run_options)
    store = ResultStore(run_options.results_uri)
    trials, cases = store.trials(), store.cases()
    assert len(trials) == 1 and trials.loc[0, "status"] == "ok" == summary["status"]
    assert trials.loc[0, "hp_gamma"] == 2.0 and pd.isna(trials.loc[0, "hp_m"])
    assert len(cases) == 2 * 1 * 2
    assert set(cases["postprocessed"]) == {False, True}
    assert cases["dsc"].between(0, 1).all() and (cases["ref_voxels"] > 0).all()
    assert trials.loc[0, "iterations_done"] == 4 and trials.loc[0, "train_cases"] == 2


def test_nan_loss_is_recorded_as_diverged(tiny_spec, run_options, monkeypatch):
    """A NaN training loss ends the trial as `diverged` with rows, not an exception."""

    class NanLoss(torch.nn.Module):
        def forward(self, logits, target):
            return logits.sum() * float("nan")

    monkeypatch.setitem(techniques.TECHNIQUES, "vanilla", lambda hp, rare: NanLoss())
    summary = run_trial(expand(tiny_spec)[0].as_param(), run_options)
    store = ResultStore(run_options.results_uri)
    row = store.trials().iloc[0]
    assert summary["status"] == row["status"] == "diverged"
    assert "nan" in row["error"] and row["iterations_done"] == 0
    cases = store.cases()
    assert len(cases) == 4 and (cases["status"] == "diverged").all() and cases["dsc"].isna().all()
    assert store.finished_ids() == {row["trial_id"]}


def test_failure_is_stored_then_raised(tiny_spec, run_options):
    """A broken dataset stores a `failed` row naming the error, then re-raises (Tune retries)."""
    options = dataclasses.replace(run_options, data_dir="/proc/forbidden")
    with pytest.raises(OSError):
        run_trial(expand(tiny_spec)[0].as_param(), options)
    row = ResultStore(run_options.results_uri).trials().iloc[0]
    assert row["status"] == "failed" and "forbidden" in row["error"]
    assert ResultStore(run_options.results_uri).finished_ids() == set()


class _Killed(Exception):
    pass


class _KillAfterFirstCheckpoint(LocalSession):
    def report(self, metrics, checkpoint=None):
        super().report(metrics, checkpoint)
        if checkpoint is not None:
            raise _Killed


def test_resume_from_checkpoint_equals_uninterrupted_run(tiny_spec, run_options, tmp_path):
    """Killed after its checkpoint at iteration 3 and resumed, a trial ends bit-exactly as an
    uninterrupted one (model, optimizer, sampler and RNG state are all checkpointed; CPU)."""
    param = expand(_with_iterations(tiny_spec, 6))[0].as_param()
    options = dataclasses.replace(run_options, checkpoint_every=3)
    run_trial(param, options)
    uninterrupted = ResultStore(options.results_uri)

    interrupted = dataclasses.replace(options, results_uri=str(tmp_path / "resumed"))
    session = _KillAfterFirstCheckpoint()
    with pytest.raises(_Killed):
        run_trial(param, interrupted, session)
    assert session.reports[-1]["iteration"] == 3
    resumed = LocalSession(checkpoint=session.checkpoint)
    run_trial(param, interrupted, resumed)
    assert [r["iteration"] for r in resumed.reports] == [4, 5, 6]
    store = ResultStore(interrupted.results_uri)
    assert store.trials().loc[0, "final_train_loss"] == (
        uninterrupted.trials().loc[0, "final_train_loss"])
    columns = ["case_id", "postprocessed", "dsc", "hd95", "pred_voxels"]
    np.testing.assert_array_equal(store.cases()[columns].to_numpy(),
                                  uninterrupted.cases()[columns].to_numpy())
