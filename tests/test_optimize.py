"""`--mode optimize`: Optuna TPE through Ray Tune as a study (study.json, journal, status,
report), and the identity of a search group."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from study.cli import main
from study.optimize import DEFAULT_METRIC, group_name, search_groups
from study.results import ResultStore
from study.tune import Plan

SEARCH = {"budget": 3, "metric": DEFAULT_METRIC, "prune": False}


def test_group_identity_covers_dataset_model_budget_space(tiny_spec):
    """Changing the dataset's generator, the model, the training budget, the fraction, the
    search space or the search settings changes the group's name (its marker and Tune
    experiment), so a changed study searches again instead of returning a stale best."""
    group = search_groups(tiny_spec)[0]
    name = group_name(group, SEARCH)
    assert re.fullmatch(r"asym_focal-0\.5-[0-9a-f]{8}", name)
    assert group_name(search_groups(tiny_spec)[0], dict(SEARCH)) == name
    synthetic = {**tiny_spec.dataset.synthetic, "seed": 2}
    changed = [
        dataclasses.replace(tiny_spec, dataset=dataclasses.replace(tiny_spec.dataset,
                                                                    synthetic=synthetic)),
        dataclasses.replace(tiny_spec, model_preset="paper"),
        dataclasses.replace(tiny_spec, training=dataclasses.replace(tiny_spec.training,
                                                                     iterations=5)),
        dataclasses.replace(tiny_spec, fractions=(0.25,)),
    ]
    names = {group_name(search_groups(spec)[0], SEARCH) for spec in changed}
    wider = {**group, "space": {"gamma": [0.0, 8.0, False]}}
    names |= {group_name(wider, SEARCH), group_name(group, {**SEARCH, "budget": 4}),
              group_name(group, {**SEARCH, "metric": "dsc_raw"}),
              group_name(group, {**SEARCH, "prune": True})}
    assert name not in names and len(names) == 8


@pytest.mark.slow
def test_optimize_is_a_study(ray_session, tiny_study_path, data_dir, tmp_path, capsys):
    """3 trials of asym_focal with γ sampled in its range (vanilla has nothing to search):
    per-trial progress lines; study.json (mode optimize) lists them, so `status` and
    `report` work; Optuna's journal file holds the 3 trials; the best record is the best
    trial's post-processed DSC; a second launch reruns nothing."""
    storage = tmp_path / "storage"
    argv = ["launch", str(tiny_study_path), "--mode", "optimize", "--budget", "3",
            "--storage", str(storage), "--data-dir", str(data_dir), "--progress-every", "0.2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  synthetic-brats asym_focal γ = [\d.]+ fraction 0\.5 seed 0: ", out,
                     re.MULTILINE), out
    assert re.search(r"^\[3/3\] synthetic-brats asym_focal", out, re.MULTILINE), out
    journal = storage / "tiny" / "optuna.journal"
    assert f"optuna-dashboard {journal}" in out
    plan = Plan.load(str(storage / "tiny"))
    assert plan.mode == "optimize" and len(plan.trials) == 3
    trials = ResultStore(str(storage / "tiny" / "results")).trials()
    assert set(trials["trial_id"]) == {p["trial_id"] for p in plan.trials}
    assert trials["hp_gamma"].between(0, 6).all() and trials["hp_gamma"].nunique() == 3

    import optuna

    (name,) = [path.stem for path in (storage / "tiny" / "optimize").glob("*.json")]
    record = json.loads((storage / "tiny" / "optimize" / f"{name}.json").read_text())
    found = optuna.load_study(study_name=f"tiny-{name}", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert [t.state.name for t in found.trials] == ["COMPLETE"] * 3
    assert record["value"] == pytest.approx(found.best_value)
    cases = ResultStore(str(storage / "tiny" / "results")).cases()
    means = cases[cases["postprocessed"]].groupby("trial_id")["dsc"].mean()
    assert record["value"] == pytest.approx(max(means)) and record["metric"] == "dsc_pp"

    assert main(["status", "tiny", "--storage", str(storage)]) == 0
    assert re.search(r"asym_focal\s+3\s+0\s+0\s+0\s+0", capsys.readouterr().out)
    assert main(["report", "tiny", "--storage", str(storage), "--no-figures"]) == 0
    assert (storage / "tiny" / "report" / "index.md").exists()
    capsys.readouterr()
    assert main(argv) == 0
    assert f"{name}: already optimised" in capsys.readouterr().out
    assert len(ResultStore(str(storage / "tiny" / "results")).trials()) == 3
    assert len(list(Path(storage / "tiny" / "optimize").glob("*.json"))) == 1
