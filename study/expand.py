"""Deterministic expansion of a study into trials.

A trial is a canonical config (:class:`study.identity.TrialConfig`): dataset (name, test and
validation set sizes and, for synthetic data, its generator parameters; for an own dataset its
layout, the sha256 of its ``dataset.json`` and its resolved options), training fraction,
model, technique, hyperparameters, seed, training budget (with its CE pre-training, when any)
and segment sizes, augmentation regime and test-time mirroring; its ``trial_id`` hashes its
canonical JSON (:func:`study.identity.trial_id`), so the same study file expands to the same
ids in any process on any machine. Paths (data roots, storage) and the study name are not part
of the identity: the same trial in two studies is the same experiment.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from study.catalog import param_label
from study.identity import TrialConfig, canonical_json
from study.spec import SpecError, StudySpec


def _varying(settings: Sequence[dict[str, float]]) -> list[str]:
    """Hyperparameters whose value differs between the grid points of one technique."""
    names = list(dict.fromkeys(name for point in settings for name in point))
    return [n for n in names if len({point.get(n) for point in settings}) > 1]


@dataclass(frozen=True)
class Trial:
    """One training run of a study: its identity ``config`` and how to print it."""

    study: str
    trial_id: str
    config: TrialConfig
    param_label: str
    variant: str | None = None

    def as_param(self) -> dict[str, Any]:
        """The JSON-safe dict Ray Tune carries as this trial's config (``config`` as
        :meth:`TrialConfig.to_dict`)."""
        return {
            "study": self.study,
            "trial_id": self.trial_id,
            "param_label": self.param_label,
            "variant": self.variant,
            "config": self.config.to_dict(),
        }

    @classmethod
    def from_param(cls, param: dict[str, Any]) -> Trial:
        """The trial of a param (:meth:`as_param`, read back from Ray Tune or ``study.json``);
        ``ValueError`` for a config that is malformed or does not hash to the param's id."""
        trial = cls(param["study"], param["trial_id"], TrialConfig.from_dict(param["config"]),
                    param["param_label"], param.get("variant"))
        if trial.config.trial_id != trial.trial_id:
            raise ValueError(f"trial {trial.trial_id}: config does not hash to its id")
        return trial


def trial_augmentation(spec: StudySpec, hp: dict[str, float]) -> str:
    """The augmentation regime a trial trains with: the experiment's, except that eq. 21's
    gate (``bg_aug_prob``) in an experiment without augmentation gates the DeepMedic regime, as
    the reference code does for BraTS (001 §IV-E; there is nothing else to gate)."""
    if "bg_aug_prob" in hp and spec.augmentation == "none":
        return "deepmedic"
    return spec.augmentation


def trial_config(spec: StudySpec, fraction: float, technique: str, hp: dict[str, float],
                 seed: int) -> TrialConfig:
    """The canonical identity config of one trial of ``spec``.

    Options that cannot change a trial's result are left out, so that the same experiment is
    the same trial in every study: the update rule only where the technique adds batches
    (adversarial ``eps``/``l``, mixup ``mixup_alpha``), the mixup λ form only for asymmetric
    mixup (``mixup_m``), the CE pre-training iterations (003 §4) only when there are any.
    """
    dataset: dict[str, Any] = {"name": spec.dataset.name, "test_cases": spec.dataset.test_cases,
                               "validation_cases": spec.dataset.validation_cases}
    if spec.dataset.synthetic:
        dataset["synthetic"] = dict(spec.dataset.synthetic)
    if spec.dataset.layout is not None:  # an own dataset: never its folder (study.data.inline)
        dataset.update(layout=spec.dataset.layout, sha256=spec.dataset.sha256,
                       options=dict(spec.dataset.options))
    training = {
        "iterations": spec.training.iterations,
        "batch_size": spec.training.batch_size,
        "input_patch": list(spec.training.input_patch),
        "output_patch": list(spec.training.output_patch),
        "lr": spec.training.lr,
        "fg_fraction": spec.training.fg_fraction,
        "sampling": spec.training.sampling,
    }
    if "eps" in hp or "mixup_alpha" in hp:
        training["update"] = spec.training.update
    if "mixup_m" in hp:
        training["mixup_lambda"] = spec.training.mixup_lambda
    if spec.training.pretrain:  # absent when 0: trials without pre-training keep their ids
        training["pretrain"] = spec.training.pretrain
    config = {
        "dataset": dataset,
        "fraction": fraction,
        "model": {"name": spec.model, "preset": spec.model_preset},
        "technique": technique,
        "hp": {name: float(value) for name, value in hp.items()},
        "seed": seed,
        "training": training,
        "augmentation": trial_augmentation(spec, hp),
        "inference": {"mirroring": spec.mirroring},
    }
    return TrialConfig.from_dict(json.loads(canonical_json(config)))


MAX_TRIALS = 20_000  # per experiment, unless the caller allows more (a typo guard: 10^6 grids)


def expand(spec: StudySpec, max_trials: int = MAX_TRIALS) -> list[Trial]:
    """All trials of a study, ordered by fraction, technique, setting, seed.

    A setting's label is printed as the papers do (:func:`param_label`); the experiment's
    ``variant`` travels beside it. Raises ``SpecError`` naming the count before building
    anything when the experiment has more than ``max_trials`` trials, and ``ValueError`` if
    two entries of the study describe the same trial.
    """
    count = len(spec.seeds) * sum(len(run.settings_at(f)) for f in spec.fractions
                                  for run in spec.techniques)
    if count > max_trials:
        raise SpecError(f"{spec.source}: expands to {count:,} trials, more than the limit of "
                        f"{max_trials:,} (a grid or seed list larger than meant?); raise the "
                        "limit explicitly to run it")
    trials: dict[str, Trial] = {}
    for fraction in spec.fractions:
        for run in spec.techniques:
            shown = _varying(run.all_settings())
            for hp in run.settings_at(fraction):
                label = param_label(hp, shown)
                for seed in spec.seeds:
                    config = trial_config(spec, fraction, run.technique, hp, seed)
                    tid = config.trial_id
                    if tid in trials:
                        raise ValueError(
                            f"{spec.source}: {run.technique} {param_label(hp)} seed {seed} "
                            f"fraction {fraction} appears twice"
                        )
                    trials[tid] = Trial(spec.name, tid, config, label, spec.variant)
    return list(trials.values())
