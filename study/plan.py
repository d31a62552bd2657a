"""``study plan``: what a study file will run, trial by trial, without training anything.

:func:`plan` expands every experiment of a study file (no Ray, no data read) into one record
per trial — the public ``study plan --json`` contract: ``trial_id``, ``dataset``,
``fraction``, ``seed``, ``technique``, ``model``, ``preset``, ``hyperparameters`` (names as
the Parquet ``hp_*`` columns without the prefix, only those the technique uses),
``input_patch`` and ``output_patch`` (the training segment and the voxels it labels),
``augmentation`` (the regime's name, ``null`` when none), ``update`` (``summed`` or
``sequential``), ``iterations``, ``pretrain`` (the CE pre-training iterations within
``iterations``, 003 §4; 0 = none); plus the setting's label, the experiment's variant
(``null`` when none), sampling, batch, mixup λ form, test-time mirroring, GPU share and an
estimate of its GPU-hours.

GPU-hours are an **estimate** from a per-model reference speed on one whole GPU
(:data:`study.profiles.REFERENCE_SPEED`: training steps per second of the papers' networks
in bf16 on an H100-class GPU), scaled by the voxels per batch, times the forward/backward
passes a technique adds per iteration (:func:`passes_per_iteration`; one pass in the CE
pre-training iterations); evaluation is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from study.expand import Trial, expand
from study.identity import TrialConfig
from study.profiles import REFERENCE_SPEED, gpu_share
from study.spec import StudySpec


def passes_per_iteration(hp: Mapping[str, float]) -> int:
    """Forward/backward passes of one training iteration: the clean batch, plus two for
    adversarial training (the direction w.r.t. the input, then the perturbed batch; 001
    eq. 14-16) and one for mixup (eq. 17-19). Summed and sequential updates cost the same."""
    return 1 + 2 * ("eps" in hp) + ("mixup_alpha" in hp)


def gpu_hours(config: TrialConfig) -> float:
    """Estimated GPU-hours of one trial's training on one whole GPU (see the module
    docstring)."""
    training = config.training
    speed = REFERENCE_SPEED[config.model.name]
    voxels = training.batch_size * math.prod(training.input_patch)
    pretrain = training.pretrain  # one pass each: plain CE, no regularizer
    passes = pretrain + (training.iterations - pretrain) * passes_per_iteration(config.hp)
    seconds = passes / (speed.steps_per_second * speed.voxels / voxels)
    return seconds / 3600.0


def _record(spec: StudySpec, trial: Trial, gpu_share: float) -> dict[str, Any]:
    config = trial.config
    training = config.training
    return {
        "trial_id": trial.trial_id,
        "dataset": config.dataset.name,
        "fraction": config.fraction,
        "seed": config.seed,
        "technique": config.technique,
        "model": config.model.name,
        "preset": config.model.preset,
        "hyperparameters": dict(config.hp),
        "param_label": trial.param_label,
        "variant": trial.variant,
        "input_patch": list(training.input_patch),
        "output_patch": list(training.output_patch),
        "augmentation": None if config.augmentation == "none" else config.augmentation,
        "update": spec.training.update,
        "mixup_lambda": spec.training.mixup_lambda,
        "iterations": training.iterations,
        "pretrain": training.pretrain,
        "batch_size": training.batch_size,
        "sampling": training.sampling,
        "fg_fraction": training.fg_fraction,
        "mirroring": config.inference.mirroring,
        "gpu_share": gpu_share,
        "gpu_hours": gpu_hours(config),
    }


def plan(specs: Sequence[StudySpec]) -> dict[str, Any]:
    """The ``study plan --json`` object of a study file's experiments: ``{"study": NAME,
    "trials": [...], "gpu_hours": X}`` (trials in launch order)."""
    records: list[dict[str, Any]] = []
    for spec in specs:
        share = gpu_share(spec.model, spec.model_preset)
        records.extend(_record(spec, trial, share) for trial in expand(spec))
    seen: set[str] = set()
    for record in records:
        if record["trial_id"] in seen:
            raise ValueError(f"{specs[0].source}: experiments: two experiments describe the "
                             f"same trial ({record['technique']} {record['param_label']}, "
                             f"fraction {record['fraction']:g}, seed {record['seed']})")
        seen.add(record["trial_id"])
    return {"study": specs[0].name, "trials": records,
            "gpu_hours": sum(r["gpu_hours"] for r in records)}


def summary(planned: dict[str, Any], source: str | Path) -> str:
    """A readable summary: trials per experiment, technique and fraction; GPU shares; the
    GPU-hour estimate and what it assumes."""
    trials = planned["trials"]
    lines = [f"study {planned['study']} ({source}): {len(trials)} trials, "
             f"estimated {planned['gpu_hours']:,.0f} GPU-hours (an estimate, see below)"]
    experiments: dict[tuple, list[dict]] = {}
    for t in trials:
        key = (t["dataset"], t["model"], t["preset"], t["augmentation"] or "no augmentation",
               tuple(t["input_patch"]), tuple(t["output_patch"]), t["update"], t["pretrain"])
        experiments.setdefault(key, []).append(t)
    for (dataset, model, preset, augmentation, inp, out, update, pretrain), rows in \
            experiments.items():
        fractions = sorted({r["fraction"] for r in rows})
        seeds = sorted({r["seed"] for r in rows})
        lines.append("")
        lines.append(f"{dataset} - {model}/{preset}, {augmentation}, segments "
                     f"{'x'.join(map(str, inp))} -> {'x'.join(map(str, out))}, {update} update, "
                     f"{rows[0]['iterations']:,} iterations"
                     f"{f' ({pretrain:,} of CE pre-training)' if pretrain else ''} x batch "
                     f"{rows[0]['batch_size']}, "
                     f"GPU share {rows[0]['gpu_share']:g}, {len(seeds)} seed(s): "
                     f"{len(rows)} trials, {sum(r['gpu_hours'] for r in rows):,.0f} GPU-hours")
        header = f"  {'technique':<20} {'setting':<44} " + " ".join(
            f"{f * 100:>6g}%" for f in fractions)
        lines.append(header)
        settings: dict[tuple[str, str], dict[float, int]] = {}
        for r in rows:
            label = r["param_label"] if not r["variant"] else (
                r["variant"] if r["param_label"] == "—" else
                f"{r['param_label']} ({r['variant']})")
            cell = settings.setdefault((r["technique"], label), {})
            cell[r["fraction"]] = cell.get(r["fraction"], 0) + 1
        for (technique, label), counts in settings.items():
            cells = " ".join(f"{counts.get(f, 0) or '.':>7}" for f in fractions)
            lines.append(f"  {technique:<20} {label[:44]:<44} {cells}")
    lines.append("")
    lines.append("GPU-hours: training only, each trial alone on one GPU, at "
                 + "; ".join(f"{name} {s.steps_per_second:g} steps/s ({s.source})"
                             for name, s in REFERENCE_SPEED.items())
                 + ", scaled by voxels per batch and by the passes a technique adds "
                 "(adversarial x3, mixup x2 with the clean pass).")
    return "\n".join(lines)
