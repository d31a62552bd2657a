"""``study launch --mode optimize``: find each technique's best hyperparameters with Optuna.

For every (fraction, technique with hyperparameters) of a study, one Ray Tune experiment
searches the technique's optimisation ranges (``search_spaces/<technique>.yaml``) with Optuna's
TPE sampler through Ray Tune's ``OptunaSearch``, for ``budget`` trials, at most
``max_concurrent`` at a time (without that limit Tune starts Optuna trials one by one). This
is how the papers' hyperparameter tables (000 Tables I-III) are produced.

The objective is the trial's mean test DSC (``dsc_raw``; ``dsc_pp`` after post-processing):
the papers tune on their evaluation cases, so the optimum is optimistic for those cases; use
separate seeds or a held-out study to report it. Every trial is an ordinary trial (its
sampled hyperparameters, rounded to 4 significant digits, are part of its ``trial_id``) and its
results go to the same Parquet store; the best setting per group is written to
``<storage>/<study>/optimize/<technique>-<fraction>.json``, which also marks the group done.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from study.results import FINISHED_STATUSES, filesystem
from study.spec import SearchSpace, StudySpec, load_search_spaces
from study.trial import RunOptions
from study.trials import Trial, param_label, trial_config, trial_id
from study.tune import ensure_ray, gpus_per_trial, run_tune_trial, study_uri

METRICS = ("dsc_raw", "dsc_pp")


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _distributions(space: SearchSpace) -> dict[str, Any]:
    return {h.name: (tune.loguniform if h.log else tune.uniform)(h.low, h.high)
            for h in space.hyperparameters}


def _trainable(options: RunOptions, study: str, metric: str) -> Callable[[dict], None]:
    def trainable(config: dict) -> None:
        hp = {name: _round(value) for name, value in config["hp"].items()}
        trial_cfg = {**config["base"], "hp": hp}
        trial = Trial(study, trial_id(trial_cfg), trial_cfg, param_label(hp))
        run_tune_trial(trial.as_param(), options, defaults={metric: math.nan, "hp": hp})

    return trainable


def optimize(spec: StudySpec, storage: str, options: RunOptions, *, budget: int,
             metric: str = "dsc_raw", max_concurrent: int = 2, cpus_per_trial: float = 1,
             gpus: float | None = None, address: str | None = None,
             num_cpus: int | None = None, max_failures: int = 1,
             printer: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Search each (fraction, technique) group; return {group: best record}.

    Groups already finished (their ``optimize/*.json`` exists) are skipped; an interrupted
    group's experiment is restored (Optuna's state is part of Tune's searcher checkpoint).
    """
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    if budget < 1:
        raise ValueError(f"budget: expected a positive number of trials, got {budget}")
    spaces = load_search_spaces()
    uri = study_uri(storage, spec.name)
    fs, root = filesystem(uri)
    fs.create_dir(f"{root}/optimize", recursive=True)
    ensure_ray(address, num_cpus)
    share = gpus_per_trial({(spec.model, spec.model_preset)}, gpus)
    trainable = tune.with_resources(_trainable(options, spec.name, metric),
                                    {"cpu": cpus_per_trial, "gpu": share})
    best: dict[str, dict[str, Any]] = {}
    for fraction in spec.fractions:
        for run in spec.techniques:
            space = spaces[run.technique]
            if not space.hyperparameters:
                continue
            group = f"{run.technique}-{fraction:g}"
            marker = f"{root}/optimize/{group}.json"
            if fs.get_file_info(marker).type == pafs.FileType.File:
                with fs.open_input_stream(marker) as stream:
                    best[group] = json.loads(stream.read())
                printer(f"{group}: already optimised, best {best[group]['hp']}")
                continue
            base = trial_config(spec, fraction, run.technique, {}, spec.seeds[0])
            experiment = f"{root}/tune/optimize-{group}"
            if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
                printer(f"{group}: restoring the interrupted search")
                tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True,
                                           resume_errored=True, storage_filesystem=fs)
            else:
                printer(f"{group}: searching {', '.join(_distributions(space))} with Optuna "
                        f"TPE for {budget} trials")
                tuner = tune.Tuner(
                    trainable,
                    param_space={"base": base, "hp": _distributions(space)},
                    tune_config=tune.TuneConfig(
                        search_alg=OptunaSearch(metric=metric, mode="max",
                                                seed=spec.seeds[0]),
                        num_samples=budget,
                        max_concurrent_trials=max_concurrent),
                    run_config=tune.RunConfig(
                        name=f"optimize-{group}", storage_path=f"{root}/tune",
                        storage_filesystem=fs, verbose=0,
                        failure_config=tune.FailureConfig(max_failures=max_failures)),
                )
            results = tuner.fit()
            finished = [r for r in results if r.error is None and r.metrics
                        and r.metrics.get("status") in FINISHED_STATUSES]
            if len(finished) < budget:
                printer(f"{group}: {len(finished)} of {budget} trials finished; "
                        "run the same command again to continue")
                continue
            top = max(finished, key=lambda r: (r.metrics[metric] == r.metrics[metric],
                                               r.metrics[metric]))
            best[group] = {"technique": run.technique, "fraction": fraction, "metric": metric,
                           "value": top.metrics[metric], "hp": top.metrics["hp"],
                           "trials": len(finished)}
            staging = f"{marker}.tmp"
            with fs.open_output_stream(staging) as stream:
                stream.write(json.dumps(best[group], indent=1).encode())
            fs.move(staging, marker)  # a kill mid-write never leaves a broken marker
            printer(f"{group}: best {metric} {top.metrics[metric]:.3f} at "
                    f"{param_label(top.metrics['hp'])}")
    return best
