"""`--mode optimize`: Optuna TPE through Ray Tune finds a technique's best setting."""

from __future__ import annotations

import json

from study.optimize import optimize
from study.results import ResultStore


def test_optimize_runs_budget_trials_in_range_and_records_best(ray_session, tiny_spec,
                                                                run_options, tmp_path):
    """3 trials of asym_focal with gamma sampled in [0, 6]; vanilla (no hyperparameter) is not
    searched; the best record is the best stored trial's; a second call reruns nothing."""
    storage = str(tmp_path / "storage")
    options = run_options.__class__(**{**run_options.__dict__,
                                       "results_uri": f"{storage}/tiny/results"})
    lines: list[str] = []
    best = optimize(tiny_spec, storage, options, budget=3, printer=lines.append)
    assert list(best) == ["asym_focal-0.5"]
    trials = ResultStore(options.results_uri).trials()
    assert len(trials) == 3 and (trials["technique"] == "asym_focal").all()
    assert trials["hp_gamma"].between(0, 6).all() and trials["hp_gamma"].nunique() == 3
    cases = ResultStore(options.results_uri).cases()
    means = cases[~cases["postprocessed"]].groupby("trial_id")["dsc"].mean()
    record = best["asym_focal-0.5"]
    assert record["value"] == max(means) and record["trials"] == 3
    stored = json.loads((tmp_path / "storage/tiny/optimize/asym_focal-0.5.json").read_text())
    assert stored == record
    again = optimize(tiny_spec, storage, options, budget=3, printer=lines.append)
    assert again == best and "already optimised" in lines[-1]
    assert len(ResultStore(options.results_uri).trials()) == 3
