"""`--mode optimize`: Optuna TPE through Ray Tune as a study (study.json, journal, status,
report), its fixed (vanilla) trials, pruning, a moved study folder, and the identity of a
search group."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import signal
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from study import optimize, orchestrate
from study.cli import main
from study.optimize import DEFAULT_METRIC, group_name, search_groups
from study.progress import Interrupted
from study.results import ResultStore, identity_columns, summarise
from study.run_options import RunOptions
from study.stored_plan import Plan

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
    """3 trials of asym_focal with γ sampled in its range, and the vanilla baseline (nothing
    to search) as a grid trial: per-trial progress lines; study.json (mode optimize) lists
    them, so `status` and `report` (vanilla included) work; Optuna's journal file holds the 3
    searched trials; the best record is the best one's post-processed DSC; a second launch
    reruns nothing."""
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
    assert plan.mode == "optimize" and len(plan.trials) == 4
    trials = ResultStore(str(storage / "tiny" / "results")).trials()
    assert set(trials["trial_id"]) == {p["trial_id"] for p in plan.trials}
    assert (trials["status"] == "ok").all()
    assert sorted(trials["technique"]) == ["asym_focal"] * 3 + ["vanilla"]
    searched = trials[trials["technique"] == "asym_focal"]
    assert searched["hp_gamma"].between(0, 6).all() and searched["hp_gamma"].nunique() == 3

    import optuna

    (name,) = [path.stem for path in (storage / "tiny" / "optimize").glob("*.json")]
    record = json.loads((storage / "tiny" / "optimize" / f"{name}.json").read_text())
    found = optuna.load_study(study_name=f"tiny-{name}", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert [t.state.name for t in found.trials] == ["COMPLETE"] * 3
    assert record["value"] == pytest.approx(found.best_value)
    cases = ResultStore(str(storage / "tiny" / "results")).cases()
    pp = cases[cases["postprocessed"] & (cases["split"] == "test")
               & cases["trial_id"].isin(searched["trial_id"])]
    means = pp.groupby("trial_id")["dsc"].mean()
    assert record["value"] == pytest.approx(max(means)) and record["metric"] == "dsc_pp"

    assert main(["status", "tiny", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"asym_focal\s+3\s+0\s+0\s+0\s+0", out), out
    assert re.search(r"vanilla\s+1\s+0\s+0\s+0\s+0", out), out
    assert main(["report", "tiny", "--storage", str(storage), "--no-figures"]) == 0
    assert "vanilla" in (storage / "tiny" / "report" / "index.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{name}: already optimised" in out and "as a grid" not in out
    assert len(ResultStore(str(storage / "tiny" / "results")).trials()) == 4
    assert len(list(Path(storage / "tiny" / "optimize").glob("*.json"))) == 1


def test_journal_pickle_names_the_study_not_its_folder(tmp_path, monkeypatch):
    """Tune pickles the searcher with Optuna's journal in it: the pickle holds no path of the
    study folder, and restoring it after the folder moved reads and extends the journal at
    its new place; unpickling where the study's folder is unknown is one clear error."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    old, new = tmp_path / "old" / "tiny", tmp_path / "new" / "tiny"
    old.mkdir(parents=True)

    def searcher(uri: Path) -> OptunaSearch:
        return OptunaSearch(space={"gamma": tune.uniform(0.0, 6.0)}, metric="dsc_pp",
                            mode="max", seed=0, study_name="tiny-g",
                            storage=optimize.optuna_storage(str(uri), "tiny"))

    first = searcher(old)
    gamma = first.suggest("t1")["gamma"]
    first.on_trial_complete("t1", {"dsc_pp": 0.5})
    first.save(str(tmp_path / "searcher.pkl"))
    assert str(old).encode() not in (tmp_path / "searcher.pkl").read_bytes()
    shutil.move(tmp_path / "old", tmp_path / "new")

    restored = searcher(new)  # the driver resuming the moved study
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.suggest("t2")
    restored.on_trial_complete("t2", {"dsc_pp": 0.6})
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(new / optimize.JOURNAL)))
    found = optuna.load_study(study_name="tiny-g", storage=journal)
    assert [t.value for t in found.trials] == [0.5, 0.6]  # t2 joined t1 in the moved journal
    assert found.trials[0].params["gamma"] == gamma
    assert not (tmp_path / "old").exists()
    monkeypatch.setattr(optimize, "_JOURNALS", {})
    with pytest.raises(ValueError, match="study 'tiny': its Optuna journal is not known"):
        pickle.loads((tmp_path / "searcher.pkl").read_bytes())


@dataclasses.dataclass(frozen=True)
class QuickTrial:
    """A ``study.orchestrate.Runner.trial`` without data or model: reports validation DSC at every
    iteration (the first searched trial to start 0.9, later ones 0.1), pausing after each
    report so that a stop arrives before the next, and stores a minimal ``ok`` row; its
    objective is ``1 - gamma / 10``. ``starts``: a file with a line per searched trial start;
    the searched start number ``interrupt`` sends SIGINT (Ctrl-C) to the process ``driver``."""

    starts: str
    driver: int = 0
    interrupt: int = 0

    def __call__(self, param, options, session):
        hp = param["config"]["hp"]
        start = 0
        if hp:
            with open(self.starts, "a") as stream:
                stream.write(param["trial_id"] + "\n")
            start = len(Path(self.starts).read_text().split())
            if start == self.interrupt:
                os.kill(self.driver, signal.SIGINT)
        for iteration in range(1, param["config"]["training"]["iterations"] + 1):
            session.report({"iteration": iteration, "train_loss": 0.5,
                            "val_dsc": 0.9 if start <= 1 else 0.1})
            time.sleep(0.4)
        now = datetime.now(timezone.utc)
        row = {**identity_columns(param), "config": json.dumps(param["config"]),
               "status": "ok", "error": None, "started_at": now, "finished_at": now,
               "train_seconds": 0.0, "eval_seconds": 0.0, "iterations_done": iteration,
               "code_version": "test", "host": socket.gethostname(), "device": "cpu"}
        ResultStore(options.results_uri).write_trial(row, [])
        return {**summarise(row, []), "dsc_pp": 1 - hp.get("gamma", 0.0) / 10}


@pytest.fixture
def quick(tmp_path, tiny_spec, data_dir):
    """(spec validating every iteration, storage, run options, QuickTrial maker): the Ray
    workers unpickle QuickTrial by value (they cannot import this test module)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec = dataclasses.replace(tiny_spec, training=dataclasses.replace(tiny_spec.training,
                                                                       validate_every=1))
    storage = tmp_path / "storage"
    options = RunOptions(data_dir=str(data_dir), results_uri=f"{storage}/tiny/results",
                         validate_every=1, threads=1)

    def trial(**kwargs) -> QuickTrial:
        return QuickTrial(str(tmp_path / "starts"), **kwargs)

    yield spec, storage, options, trial
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_prune_records_pruned_trials_and_never_reruns_them(ray_session, quick, capsys):
    """--prune end to end, one trial at a time: the first searched trial validates at 0.9 and
    runs to the end; ASHA stops the next two (0.1 trails it at the first rung). They stay in
    study.json marked pruned, with a `failed` row saying so, `status` counts them, the
    group's record counts 1 trial and 2 pruned, and neither a relaunch nor a resume runs
    anything again. The vanilla trial ran as a fixed grid trial."""
    spec, storage, options, trial = quick
    best = optimize.launch([spec], str(storage), options, budget=3, prune=True,
                           max_concurrent=1, trial=trial())
    (record,) = best.values()
    assert (record["trials"], record["pruned"]) == (1, 2), record
    plan = Plan.load(str(storage / "tiny"))
    assert [p["config"]["technique"] for p in plan.trials] == ["vanilla"] + ["asym_focal"] * 3
    pruned = {p["trial_id"] for p in plan.trials if p.get("status") == optimize.PRUNED}
    assert len(pruned) == 2
    rows = ResultStore(options.results_uri).trials().set_index("trial_id")
    assert set(rows.index) == {p["trial_id"] for p in plan.trials}
    assert (rows.loc[sorted(pruned), "status"] == "failed").all()
    assert rows.loc[sorted(pruned), "error"].str.match(
        r"pruned: ASHA stopped it at iteration 1, its validation DSC 0\.100").all()
    assert (rows.drop(sorted(pruned))["status"] == "ok").all()
    assert not list((storage / "tiny" / "results" / "running").glob("*.json"))
    capsys.readouterr()
    assert main(["status", "tiny", "--storage", str(storage)]) == 0  # pruned is no failure
    out = capsys.readouterr().out
    assert re.search(r"asym_focal\s+1\s+0\s+0\s+0\s+0\s+2", out), out
    assert re.search(r"vanilla\s+1\s+0\s+0\s+0\s+0\s+0", out), out
    assert not [line for line in out.splitlines() if line.startswith("failed ")], out
    starts = Path(trial().starts).read_text().split()
    assert len(starts) == 3
    optimize.launch([spec], str(storage), options, budget=3, prune=True, max_concurrent=1,
                    trial=trial())
    plan, uri, run = orchestrate.prepare_resume("tiny", str(storage), trial=trial())
    assert optimize.resume(plan, uri, run) == []
    assert Path(trial().starts).read_text().split() == starts
    assert len(ResultStore(options.results_uri).trials()) == 4


@pytest.mark.slow
def test_search_resumes_after_the_study_folder_moved(ray_session, quick, tmp_path):
    """Ctrl-C during the second searched trial, the storage folder moved elsewhere, resume
    from there: the search finishes with Optuna's journal at the new place holding every
    trial, Tune's searcher state names no path of the old folder, and the vanilla trial,
    done before the search, does not run again."""
    import optuna

    spec, storage, options, trial = quick
    with pytest.raises(Interrupted):
        optimize.launch([spec], str(storage), options, budget=3, max_concurrent=1,
                        trial=trial(driver=os.getpid(), interrupt=2), printer=lambda _: None)
    vanilla = ResultStore(options.results_uri).trials()
    assert sorted(vanilla["technique"]) == ["asym_focal", "vanilla"]
    moved = tmp_path / "moved"
    shutil.move(storage, moved)
    lines: list[str] = []
    plan, uri, run = orchestrate.prepare_resume("tiny", str(moved), trial=trial(),
                                         printer=lines.append)
    assert optimize.resume(plan, uri, run) == [], lines
    assert any("restoring the interrupted search" in line for line in lines), lines
    assert not storage.exists()
    (name,) = [path.stem for path in (moved / "tiny" / "optimize").glob("*.json")]
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(moved / "tiny" / optimize.JOURNAL)))
    found = optuna.load_study(study_name=f"tiny-{name}", storage=journal)
    assert [t.state.name for t in found.trials] == ["COMPLETE"] * 3
    for state in (moved / "tiny" / "tune").glob("optimize-*/searcher-state-*.pkl"):
        assert str(storage).encode() not in state.read_bytes()
    trials = ResultStore(f"{moved}/tiny/results").trials()
    assert sorted(trials["technique"]) == ["asym_focal"] * 3 + ["vanilla"]
    assert (trials["status"] == "ok").all()
    assert trials["trial_id"].tolist() == list(dict.fromkeys(trials["trial_id"]))
    assert (trials[trials["technique"] == "vanilla"]["started_at"]
            == vanilla[vanilla["technique"] == "vanilla"]["started_at"].iloc[0]).all()
