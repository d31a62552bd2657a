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
iteration.

An optimize-mode launch is a study like any other: ``study.json`` (mode ``optimize``) holds
the search (groups, budget, metric) and every trial that started, so ``study status``,
``report`` and ``resume`` work on it; each trial is an ordinary trial (its sampled
hyperparameters, rounded to 4 significant digits, are part of its ``trial_id``) writing to
the same Parquet store. Optuna's record of every group is kept in
``<storage>/<study>/optuna.journal`` (a ``JournalFileBackend``; browse it with
``optuna-dashboard <storage>/<study>/optuna.journal``). The best setting of a group is written
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
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from study import progress
from study.catalog import param_label
from study.identity import TrialConfig, trial_id
from study.progress import Interrupted
from study.results import FINISHED_STATUSES, ResultStore, filesystem
from study.spec import StudySpec, load_search_spaces
from study.trial import RunOptions
from study.trials import Trial, trial_config
from study.tune import (
    Plan,
    ProgressCallback,
    Runner,
    check_before_ray,
    check_resources,
    ensure_ray,
    fit,
    gpus_per_trial,
    pending_trials,
    result_config,
    run_tune_trial,
    say_resume_points,
    storage_of,
    study_uri,
)

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


def _trainable(options: RunOptions, defaults: dict[str, float]):
    def trainable(config: dict) -> None:
        run_tune_trial(param_of(config), options, defaults=defaults)

    return trainable


def _space(group: dict[str, Any]) -> dict[str, Any]:
    return {name: (tune.loguniform if log else tune.uniform)(low, high)
            for name, (low, high, log) in group["space"].items()}


def launch(specs: list[StudySpec], storage: str, options: RunOptions, *, budget: int,
           metric: str = DEFAULT_METRIC, prune: bool = False, max_concurrent: int = 2,
           cpus_per_trial: float = 1, gpus: float | None = None,
           **runner: Any) -> dict[str, dict[str, Any]]:
    """Search every group of the study's experiments; return ``{group name: best record}``.

    Writes ``study.json`` (mode ``optimize``), keeping the trials of an earlier search of the
    same groups. ``runner``: the fields of :class:`study.tune.Runner`. Raises
    :class:`study.tune.Interrupted` after Ctrl-C.
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
    check_before_ray(options, uri, [g["base"]["dataset"] for g in groups], run.address)
    ensure_ray(run.address, run.num_cpus)
    models = {(s.model, s.model_preset) for s in specs}
    earlier = _earlier_trials(uri, groups)
    plan = Plan.create(specs[0].name, earlier, options, storage, cpus_per_trial=cpus_per_trial,
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
    return [p for p in old.trials if any(_in_group(p, g) for g in groups)]


def _optuna_storage(uri: str):
    """Optuna's journal file in the study folder (local storage only; None on object stores,
    where Optuna's record lives in Tune's searcher checkpoint only)."""
    fs, root = filesystem(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        return None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(f"{root}/{JOURNAL}"))


def resume(plan: Plan, uri: str, runner: Runner) -> list[dict[str, Any]]:
    """Continue an interrupted search (:func:`study.tune.prepare_resume`); return the groups
    still without a best setting. Says where each unfinished trial continues."""
    say_resume_points(uri, pending_trials(plan, uri), runner.printer)
    best = run_search(plan, uri, runner)
    search = plan.search_settings()
    return [g for g in search["groups"] if group_name(g, search) not in best]


def run_search(plan: Plan, uri: str, runner: Runner) -> dict[str, dict[str, Any]]:
    """Run (or continue) the search of an optimize-mode ``plan``; return the best record of
    every group finished. Finished groups (their marker exists) are skipped; an interrupted
    group's experiment is restored (Optuna's state is part of Tune's searcher checkpoint)."""
    search = plan.search_settings()
    ensure_ray(runner.address, runner.num_cpus)
    check_resources(plan.cpus_per_trial, plan.gpus_per_trial, runner.address, runner.printer)
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
    trainable = tune.with_resources(_trainable(options, defaults),
                                    {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
    experiment = f"{root}/tune/optimize-{name}"
    finished = ResultStore(options.results_uri).finished_ids()
    done = sum(p["trial_id"] in finished for p in plan.trials if _in_group(p, group))
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
                                        storage=_optuna_storage(uri),
                                        study_name=f"{plan.study}-{name}"),
                scheduler=_scheduler(group, options) if search["prune"] else None,
                num_samples=budget,
                max_concurrent_trials=search["max_concurrent"]),
            run_config=tune.RunConfig(
                name=f"optimize-{name}", storage_path=f"{root}/tune",
                storage_filesystem=fs, verbose=0,
                callbacks=[ProgressCallback(plan.study, param_of)],
                failure_config=tune.FailureConfig(max_failures=runner.max_failures)),
        )

    def started(param: dict[str, Any]) -> None:
        if all(p["trial_id"] != param["trial_id"] for p in plan.trials):
            plan.trials.append(param)
            plan.save(uri)

    with runner.monitor(plan.study, budget, done, on_start=started):
        results, interrupted = fit(tuner, options, param_of, runner.printer)
    if interrupted:
        finished = ResultStore(options.results_uri).finished_ids()
        unfinished = {p["trial_id"] for p in plan.trials} - finished
        progress.mark_interrupted(options.results_uri, unfinished)
        total = budget * len(search["groups"])
        done_all = sum(p["trial_id"] in finished for p in plan.trials)
        raise Interrupted(plan.study, storage_of(uri), done_all, max(0, total - done_all))
    # (config, last metrics) of the trials that ended without an error
    ended = [(result_config(r), r.metrics or {}) for r in results if r.error is None]
    complete = [(c, m) for c, m in ended if m.get("status") in FINISHED_STATUSES]
    pruned = [c for c, m in ended if m and "status" not in m]
    _forget_pruned(plan, uri, [param_of(c) for c in pruned], options.results_uri)
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
    ``validate_every`` x 3^k iterations, so that each rung is a validation point."""
    iterations = TrialConfig.from_dict(group["base"]).training.iterations
    return ASHAScheduler(time_attr="val_iteration", metric=PRUNE_METRIC, mode="max",
                         max_t=iterations, grace_period=min(options.validate_every, iterations),
                         reduction_factor=PRUNE_REDUCTION)


def _forget_pruned(plan: Plan, uri: str, params: list[dict[str, Any]], results_uri: str
                   ) -> None:
    """Pruned trials stored nothing: drop them from ``study.json`` and their heartbeats."""
    if not params:
        return
    ids = {p["trial_id"] for p in params}
    plan.trials[:] = [p for p in plan.trials if p["trial_id"] not in ids]
    plan.save(uri)
    progress.remove_beats(ResultStore(results_uri), ids)
