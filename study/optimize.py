"""``study launch --mode optimize``: find each technique's best hyperparameters with Optuna.

For every (fraction, technique with hyperparameters) group of a study, one Ray Tune
experiment searches the technique's optimisation ranges (``search_spaces/<technique>.yaml``)
with Optuna's TPE sampler through Ray Tune's ``OptunaSearch``, for ``budget`` trials, at most
``max_concurrent`` at a time (without that limit Tune starts Optuna trials one by one). This
is how the papers' hyperparameter tables (000 Tables I-III) are produced.

The objective is the trial's mean post-processed test DSC (``dsc_pp``, the default, which is
also what ``study report`` selects settings on; ``dsc_raw`` without post-processing): the
papers tune on their evaluation cases, so the optimum is optimistic for those cases; use
separate seeds or a held-out study to report it. With ``prune``, Ray Tune's ASHA scheduler
stops trials whose validation DSC (``training.validate_every``) trails the others' at the same
iteration. A pruned trial stored no result: it is recorded as pruned (``"status": "pruned"`` on
its entry of ``study.json``, and a ``failed`` row whose error starts with ``pruned:``, the
results contract having no status of its own for it), so ``study status`` counts it and a
resume does not run it again.

The study's techniques without hyperparameters (``vanilla``, the baseline every report compares
against, and the other fixed losses) have nothing to search: their trials run per fraction and
seed as in grid mode (:func:`study.orchestrate.run_grid`), before the search, stored and
resumed like grid trials.

An optimize-mode launch is a study like any other: ``study.json`` (mode ``optimize``) holds
the search (groups, budget, metric) and every trial that started, so ``study status``,
``report`` and ``resume`` work on it; each trial is an ordinary trial (its sampled
hyperparameters, rounded to 4 significant digits, are part of its ``trial_id``) writing to
the same Parquet store. Optuna's record of every group is kept in
``<storage>/<study>/optuna.journal`` (:class:`StudyJournal`; browse it with
``optuna-dashboard <storage>/<study>/optuna.journal``); Tune's pickled searcher names it by the
study only, so a moved study folder resumes. The best setting of a group is written
to ``<storage>/<study>/optimize/<technique>-<fraction>-<key>.json``, which also marks the group
done; ``key`` hashes the group's whole identity (dataset with its generator parameters, model,
training budget, technique, fraction, search space, trial budget, metric, pruning), so that
changing any of them searches again instead of returning a stale answer.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow.fs as pafs
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from study import progress
from study.catalog import param_label
from study.expand import Trial, expand, trial_config
from study.identity import DatasetConfig, TrialConfig, trial_id
from study.orchestrate import (
    ProgressCallback,
    Runner,
    TrialFunction,
    check_before_ray,
    check_resources,
    ensure_ray,
    fit,
    gpus_per_trial,
    result_config,
    run_grid,
    run_tune_trial,
    say_resume_points,
    storage_of,
)
from study.progress import Interrupted
from study.results import FINISHED_STATUSES, ResultStore, filesystem
from study.run_options import RunOptions, record_failure
from study.spec import StudySpec, load_search_spaces
from study.status import PRUNED
from study.stored_plan import Plan, pending_trials, study_uri

METRICS = ("dsc_raw", "dsc_pp")
DEFAULT_METRIC = "dsc_pp"  # the report's default selection: post-processed test DSC
JOURNAL = "optuna.journal"
PRUNE_METRIC = "val_dsc"
PRUNE_REDUCTION = 3  # ASHA keeps the best third at each rung


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def search_groups(spec: StudySpec) -> list[dict[str, Any]]:
    """The study's search groups: per fraction, every technique with hyperparameters, with
    its base trial config (first seed) and optimisation ranges ``{name: [low, high, log]}``."""
    spaces = load_search_spaces()
    groups = []
    for fraction in spec.fractions:
        for run in spec.techniques:
            space = spaces[run.technique]
            if not space.hyperparameters:
                continue
            groups.append({
                "study": spec.name, "variant": spec.variant,
                "technique": run.technique, "fraction": fraction,
                "base": trial_config(spec, fraction, run.technique, {}, spec.seeds[0]).to_dict(),
                "space": {h.name: [h.low, h.high, h.log] for h in space.hyperparameters},
            })
    return groups


def fixed_trials(spec: StudySpec) -> list[Trial]:
    """The study's trials of techniques without hyperparameters (``vanilla``, the baseline, and
    the other fixed losses), per fraction and seed as grid mode expands them: run beside the
    search, not searched."""
    spaces = load_search_spaces()
    return [t for t in expand(spec) if not spaces[t.config.technique].hyperparameters]


def group_name(group: dict[str, Any], search: dict[str, Any]) -> str:
    """``<technique>-<fraction>-<key>``: ``key`` hashes the group's whole identity (its base
    trial config, search space) and the search settings (trial budget, metric, pruning)."""
    identity = {"base": group["base"], "space": group["space"], "budget": search["budget"],
                "metric": search["metric"], "prune": search["prune"]}
    return f"{group['technique']}-{group['fraction']:g}-{trial_id(identity)[:8]}"


def param_of(config: dict[str, Any]) -> dict[str, Any]:
    """The trial param of an optimize experiment's Tune config (the group's base config and
    the sampled hyperparameters, rounded)."""
    hp = {name: _round(value) for name, value in config["hp"].items()}
    trial_cfg = TrialConfig.from_dict({**config["base"], "hp": hp})
    return Trial(config["study"], trial_cfg.trial_id, trial_cfg, param_label(hp),
                 config["variant"]).as_param()


def _in_group(param: dict[str, Any], group: dict[str, Any]) -> bool:
    return {**param["config"], "hp": {}} == group["base"]


def _searched(param: dict[str, Any], groups: list[dict[str, Any]]) -> bool:
    return any(_in_group(param, g) for g in groups)


def _trainable(options: RunOptions, defaults: dict[str, float], trial: TrialFunction):
    def trainable(config: dict) -> None:
        run_tune_trial(param_of(config), options, defaults=defaults, trial=trial)

    return trainable


def _space(group: dict[str, Any]) -> dict[str, Any]:
    return {name: (tune.loguniform if log else tune.uniform)(low, high)
            for name, (low, high, log) in group["space"].items()}


def launch(specs: list[StudySpec], storage: str, options: RunOptions, *, budget: int,
           metric: str = DEFAULT_METRIC, prune: bool = False, max_concurrent: int = 2,
           cpus_per_trial: float = 1, gpus: float | None = None,
           **runner: Any) -> dict[str, dict[str, Any]]:
    """Search every group of the study's experiments; return ``{group name: best record}``.

    Writes ``study.json`` (mode ``optimize``): the fixed trials (:func:`fixed_trials`) and
    the trials of an earlier search of the same groups. ``runner``: the fields of
    :class:`study.orchestrate.Runner` (its ``trial`` runs every trial, fixed or searched). Raises
    :class:`study.orchestrate.Interrupted` after Ctrl-C.
    """
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    if budget < 1:
        raise ValueError(f"budget: expected a positive number of trials, got {budget}")
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent: expected at least 1, got {max_concurrent}")
    groups = [group for spec in specs for group in search_groups(spec)]
    if not groups:
        raise ValueError(f"{specs[0].source}: no technique of the study has hyperparameters "
                         "to search")
    if prune and any(not spec.training.validate_every for spec in specs):
        raise ValueError(f"{specs[0].source}: --prune compares validation DSC: set "
                         "training.validate_every (iterations between validations)")
    run = Runner(**runner)
    uri = study_uri(storage, specs[0].name)
    datasets = [DatasetConfig.from_dict(g["base"]["dataset"]) for g in groups]
    check_before_ray(options, uri, datasets, run.address)
    ensure_ray(run.address, run.num_cpus)
    models = {(s.model, s.model_preset) for s in specs}
    fixed = [t.as_param() for spec in specs for t in fixed_trials(spec)]
    earlier = _earlier_trials(uri, groups)
    plan = Plan.create(specs[0].name, fixed + earlier, options, storage,
                       cpus_per_trial=cpus_per_trial,
                       gpus_per_trial=gpus_per_trial(models, gpus), mode="optimize",
                       search={"budget": budget, "metric": metric, "prune": prune,
                               "max_concurrent": max_concurrent, "groups": groups})
    plan.save(uri)
    return run_search(plan, uri, run)


def _earlier_trials(uri: str, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials of an earlier optimize-mode ``study.json`` that belong to ``groups``."""
    try:
        old = Plan.load(uri)
    except FileNotFoundError:
        return []
    if old.mode != "optimize":
        return []
    return [p for p in old.trials if _searched(p, groups)]


_JOURNALS: dict[str, str] = {}  # study name -> its journal file, in the driver running it


class StudyJournal(JournalFileBackend):
    """Optuna's journal file of study ``study``, ``<study folder>/optuna.journal``.

    Tune pickles the searcher, and this backend with it, into the experiment (``tuner.pkl``,
    ``searcher-state-*.pkl``). Its pickle holds the study's name, not the path: unpickling
    opens the journal of the study folder this driver runs (:func:`optuna_storage`), so a
    study folder that moved, or sits under another mount point on another node, resumes.
    """

    def __init__(self, study: str):
        if study not in _JOURNALS:
            raise ValueError(f"study {study!r}: its Optuna journal is not known in this "
                             "process (expected optuna_storage(uri, study) first)")
        self.study = study
        super().__init__(_JOURNALS[study])

    def __reduce__(self) -> tuple[type[StudyJournal], tuple[str]]:
        return StudyJournal, (self.study,)


def optuna_storage(uri: str, study: str) -> JournalStorage | None:
    """Optuna's journal of ``study`` in its folder ``uri`` (:class:`StudyJournal`, which
    Tune's searcher pickles refer to from now on in this process); None on object stores,
    where Optuna's record lives in Tune's searcher checkpoint only."""
    fs, root = filesystem(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        return None
    _JOURNALS[study] = f"{root}/{JOURNAL}"
    return JournalStorage(StudyJournal(study))


def _settled(plan: Plan, uri: str) -> set[str]:
    """The ids of the plan's trials that need not run again: a stored result, or pruned."""
    pending = {p["trial_id"] for p in pending_trials(plan, uri)}
    return {p["trial_id"] for p in plan.trials if p["trial_id"] not in pending}


def _interrupted(plan: Plan, uri: str) -> Interrupted:
    """Ctrl-C stopped the launch: the unfinished trials' heartbeats say so, and the error
    counts what is done and left of the fixed trials and the budgets of all groups."""
    search, settled = plan.search_settings(), _settled(plan, uri)
    progress.mark_interrupted(f"{uri}/results", {p["trial_id"] for p in plan.trials} - settled)
    fixed = sum(not _searched(p, search["groups"]) for p in plan.trials)
    total = fixed + search["budget"] * len(search["groups"])
    return Interrupted(plan.study, storage_of(uri), len(settled), max(0, total - len(settled)))


def resume(plan: Plan, uri: str, runner: Runner) -> list[dict[str, Any]]:
    """Continue an interrupted search (:func:`study.orchestrate.prepare_resume`); return the groups
    still without a best setting. Says where each unfinished trial continues."""
    settled = _settled(plan, uri)
    say_resume_points(uri, [p for p in plan.trials if p["trial_id"] not in settled],
                      runner.printer)
    best = run_search(plan, uri, runner, restore=True)
    search = plan.search_settings()
    return [g for g in search["groups"] if group_name(g, search) not in best]


def run_search(plan: Plan, uri: str, runner: Runner, restore: bool = False
               ) -> dict[str, dict[str, Any]]:
    """Run (or continue) an optimize-mode ``plan``: its fixed trials without a result (as a
    grid; ``restore``: the newest grid experiment first), then the search; return the best
    record of every group finished. Finished groups (their marker exists) are skipped; an
    interrupted group's experiment is restored (Optuna's state is part of Tune's searcher
    checkpoint). Raises :class:`study.orchestrate.Interrupted` after Ctrl-C."""
    search = plan.search_settings()
    ensure_ray(runner.address, runner.num_cpus)
    check_resources(plan.cpus_per_trial, plan.gpus_per_trial, runner.address, runner.printer)
    fixed = [p for p in pending_trials(plan, uri) if not _searched(p, search["groups"])]
    if fixed:
        runner.printer(f"study {plan.study}: {len(fixed)} trial(s) of techniques without "
                       "hyperparameters to search, as a grid")
        with runner.monitor(plan.study, len(fixed), 0):
            if run_grid(plan, uri, fixed, runner, restore):
                raise _interrupted(plan, uri)
    fs, root = filesystem(uri)
    fs.create_dir(f"{root}/optimize", recursive=True)
    best: dict[str, dict[str, Any]] = {}
    for group in search["groups"]:
        name = group_name(group, search)
        marker = f"{root}/optimize/{name}.json"
        if fs.get_file_info(marker).type == pafs.FileType.File:
            try:
                with fs.open_input_stream(marker) as stream:
                    best[name] = json.loads(stream.read())
            except ValueError as error:
                raise ValueError(f"{marker}: damaged best-setting record ({error}); delete "
                                 "it to search the group again") from error
            runner.printer(f"{name}: already optimised, best {best[name]['hp']}")
            continue
        record = _search_group(plan, uri, group, name, runner)
        if record is not None:
            best[name] = record
            progress.write_json(ResultStore(uri), marker, record)
    return best


def _search_group(plan: Plan, uri: str, group: dict[str, Any], name: str,
                  runner: Runner) -> dict[str, Any] | None:
    """One group's Tune experiment; its best record, or None while it is unfinished."""
    search, options = plan.search_settings(), plan.run_options(uri)
    budget, metric = search["budget"], search["metric"]
    fs, root = filesystem(uri)
    defaults = {metric: math.nan, **({PRUNE_METRIC: math.nan} if search["prune"] else {})}
    trainable = tune.with_resources(_trainable(options, defaults, runner.trial),
                                    {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
    experiment = f"{root}/tune/optimize-{name}"
    settled = _settled(plan, uri)
    done = sum(p["trial_id"] in settled for p in plan.trials if _in_group(p, group))
    storage = optuna_storage(uri, plan.study)  # before a restore unpickles the searcher
    if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
        runner.printer(f"{name}: restoring the interrupted search")
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True,
                                   resume_errored=True, storage_filesystem=fs)
    else:
        done = 0
        runner.printer(f"{name}: searching {', '.join(group['space'])} with Optuna TPE for "
                       f"{budget} trials")
        tuner = tune.Tuner(
            trainable,
            param_space={"base": group["base"], "hp": _space(group), "study": plan.study,
                         "variant": group["variant"]},
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(metric=metric, mode="max", seed=group["base"]["seed"],
                                        storage=storage, study_name=f"{plan.study}-{name}"),
                scheduler=_scheduler(group, options) if search["prune"] else None,
                num_samples=budget,
                max_concurrent_trials=search["max_concurrent"],
                # as grid mode (study.orchestrate): a trial actor runs trial after trial, each from
                # its config alone; OptunaSearch and ASHA work on results, not on actors
                reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"optimize-{name}", storage_path=f"{root}/tune",
                storage_filesystem=fs, verbose=0,
                callbacks=[ProgressCallback(plan.study, param_of), JsonLoggerCallback()],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                failure_config=tune.FailureConfig(max_failures=runner.max_failures)),
        )

    def started(param: dict[str, Any]) -> None:
        if all(p["trial_id"] != param["trial_id"] for p in plan.trials):
            plan.trials.append(param)
            plan.save(uri)

    with runner.monitor(plan.study, budget, done, on_start=started):
        results, interrupted = fit(tuner, options, param_of, runner.printer)
    if interrupted:
        raise _interrupted(plan, uri)
    # (config, last metrics) of the trials that ended without an error
    ended = [(result_config(r), r.metrics or {}) for r in results if r.error is None]
    complete = [(c, m) for c, m in ended if m.get("status") in FINISHED_STATUSES]
    pruned = [(c, m) for c, m in ended if m and "status" not in m]
    _record_pruned(plan, uri, [(param_of(c), m) for c, m in pruned], options)
    if len(complete) + len(pruned) < budget or not complete:
        runner.printer(f"{name}: {len(complete)} of {budget} trials finished "
                       f"({len(pruned)} pruned); `study resume {plan.study}` continues")
        return None
    top_config, top = max(complete, key=lambda cm: (cm[1][metric] == cm[1][metric],
                                                    cm[1][metric]))
    hp = param_of(top_config)["config"]["hp"]
    runner.printer(f"{name}: best {metric} {top[metric]:.3f} at {param_label(hp)}")
    return {"technique": group["technique"], "fraction": group["fraction"], "metric": metric,
            "value": top[metric], "hp": hp, "trials": len(complete),
            "pruned": len(pruned)}


def _scheduler(group: dict[str, Any], options: RunOptions) -> ASHAScheduler:
    """ASHA on validation DSC at the validation iterations (``val_iteration``): rungs at
    ``validate_every`` x 3^k iterations, so that each rung is a validation point. A trial
    that reaches the last iteration is not stopped there (``stop_last_trials``): it still
    has to evaluate its test cases and store its result."""
    iterations = TrialConfig.from_dict(group["base"]).training.iterations
    return ASHAScheduler(time_attr="val_iteration", metric=PRUNE_METRIC, mode="max",
                         max_t=iterations, grace_period=min(options.validate_every, iterations),
                         reduction_factor=PRUNE_REDUCTION, stop_last_trials=False)


def _record_pruned(plan: Plan, uri: str, pruned: list[tuple[dict[str, Any], dict[str, Any]]],
                   options: RunOptions) -> None:
    """Record the trials ASHA stopped, (param, last metrics) each, that are not recorded yet
    and stored no result: ``"status": "pruned"`` on their ``study.json`` entry and a ``failed``
    row whose error starts with ``pruned:`` (``study status`` lists it with that reason); their
    heartbeats go."""
    settled = _settled(plan, uri)
    new = {p["trial_id"]: (p, m) for p, m in pruned if p["trial_id"] not in settled}
    if not new:
        return
    for param, metrics in new.values():
        record_failure(param, options, f"pruned: ASHA stopped it at iteration "
                       f"{metrics.get('val_iteration', '?')}, its validation DSC "
                       f"{metrics.get(PRUNE_METRIC, math.nan):.3f} trailing the other "
                       "trials' there", {"iterations_done": metrics.get("iteration")})
    plan.trials[:] = [{**p, "status": PRUNED} if p["trial_id"] in new else p
                      for p in plan.trials]
    plan.save(uri)
    progress.remove_beats(ResultStore(options.results_uri), set(new))
