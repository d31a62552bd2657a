"""Synthetic study results in the results-store layout, for tests and benchmarks.

``write_study(root, ...)`` stores, through the results writer itself
(``study.results.ResultStore.write_trial``, as a trial runner does), a grid of techniques x
settings (the papers' grids) x fractions x seeds, and optionally reruns of techniques under a
variant, with per-case values drawn around a known mean: DSC rises with the training fraction
and each technique has a fixed effect (a variant another), HD95 is infinite on a small share
of cases (empty predictions), and a trial's ``logit_stats`` holds train/test histograms whose
foreground mean shifts toward the boundary on test data the less data there is (001 Fig. 3).
Settings are labelled as the trial expansion labels them (``study.catalog.param_label``,
printing the hyperparameters that vary in the technique's grid). Deterministic for a given
``seed``.

``store_trial(store, ...)`` writes one trial with given per-case DSC values, for small
fixtures with known answers; ``full_config(...)`` is a complete trial config (what
``study.results.identity_columns`` reads), for fixtures that build trial params.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from study.catalog import param_label
from study.results import TEST, TRAIN, VALIDATION, ResultStore, identity_columns

# The papers' grids (000 Tables I-IV).
GRIDS: dict[str, list[dict]] = {
    "vanilla": [{}],
    "large_margin": [{"m": v} for v in (0.2, 0.5, 1, 1.5, 2, 3)],
    "asym_large_margin": [{"m": v} for v in (0.2, 0.5, 1, 1.5, 2, 3)],
    "focal": [{"gamma": v} for v in (0.5, 1, 1.5, 2, 3, 4)],
    "asym_focal": [{"gamma": v} for v in (0.5, 1, 1.5, 2, 3, 4)],
    "asym_adversarial": [{"eps": e, "l": v} for e, v in (
        (1e-5, 2.5), (1e-5, 5), (1e-5, 10), (1e-5, 15), (1e-5, 20), (1e-4, 10), (1e-6, 10))],
    "asym_mixup": [{"mixup_m": v, "mixup_alpha": 1.0} for v in
                   (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.8)],
    "margin_calibration": [{"tau": t, "nu": v} for t, v in
                           ((1, 10), (1, 1), (10, 1), (10, 0.1), (10, 0.01))],
}
EFFECTS = {"vanilla": 0.0, "large_margin": -0.01, "asym_large_margin": 0.03, "focal": 0.005,
           "asym_focal": 0.05, "asym_adversarial": 0.04, "asym_mixup": 0.06,
           "margin_calibration": 0.02}
VARIANT_EFFECT = -0.06  # a rerun under a changed regime (e.g. w/o augmentation) does worse
BINS = np.linspace(-30.0, 30.0, 61)


def label(technique: str, hp: Mapping[str, float]) -> str:
    """The setting's label as the trial expansion writes it: the hyperparameters that vary
    in the technique's grid (``GRIDS``)."""
    grid = GRIDS.get(technique, [hp])
    shown = [k for k in hp if len({setting.get(k) for setting in grid}) > 1]
    return param_label(hp, shown)


def trials_grid(techniques=None, fractions=(0.1, 0.5), seeds=(0, 1),
                variants: Mapping[str, Sequence[str]] | None = None) -> list[dict]:
    """The (technique, variant, hp, fraction, seed) of every trial, in launch order;
    ``variants`` maps a technique to the variants it is rerun as (every setting again)."""
    out = []
    for fraction in fractions:
        for seed in seeds:
            for technique in techniques or GRIDS:
                for variant in (None, *(variants or {}).get(technique, ())):
                    for hp in GRIDS[technique]:
                        out.append({"technique": technique, "variant": variant, "hp": hp,
                                    "fraction": fraction, "seed": seed})
    return out


def _trial_id(trial: dict, dataset: str) -> str:
    key = json.dumps({**trial, "dataset": dataset}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _setting_effect(trial: dict) -> float:
    """A smooth, peaked response to the hyperparameter values (the best setting is inside
    the grid) plus the technique's and the variant's effects."""
    bump = 0.0
    for name, value in trial["hp"].items():
        grid = [hp[name] for hp in GRIDS[trial["technique"]]]
        middle = float(np.median(grid))
        if name != "mixup_alpha" and value > 0 and middle > 0:
            bump -= 0.02 * np.log10(value / middle) ** 2
    variant = VARIANT_EFFECT if trial.get("variant") else 0.0
    return EFFECTS.get(trial["technique"], 0.0) + bump + variant


def full_config(*, dataset: str = "d", model: str = "unet-tiny", technique: str = "vanilla",
                hp: Mapping[str, float] | None = None, fraction: float = 0.5, seed: int = 0
                ) -> dict[str, Any]:
    """A complete canonical trial config (as ``study.identity.TrialConfig.to_dict`` writes
    it) of a synthetic trial: ``dataset`` by name (10 test and 2 validation cases), ``model``
    as ``name-preset``, ``technique`` with ``hp`` (none by default), ``fraction``, ``seed``,
    100 training iterations of 2 segments of 16³ voxels, no augmentation, no mirroring."""
    name, _, preset = model.partition("-")
    return {"dataset": {"name": dataset, "test_cases": 10, "validation_cases": 2},
            "fraction": float(fraction), "model": {"name": name, "preset": preset},
            "technique": technique, "hp": dict(hp or {}), "seed": int(seed),
            "training": {"iterations": 100, "batch_size": 2, "input_patch": [16, 16, 16],
                         "output_patch": [16, 16, 16], "lr": None, "fg_fraction": 0.5,
                         "sampling": "balanced"},
            "augmentation": "none", "inference": {"mirroring": False}}


def _trial_param(study: str, trial_id: str, dataset: str, model: str, trial: Mapping) -> dict:
    """A trial's Tune param, as the trial expansion makes it (for ``identity_columns``)."""
    return {"study": study, "trial_id": trial_id, "variant": trial.get("variant"),
            "param_label": label(trial["technique"], trial["hp"]),
            "config": full_config(dataset=dataset, model=model, technique=trial["technique"],
                                  hp=trial["hp"], fraction=trial["fraction"],
                                  seed=trial["seed"])}


def _logit_stats(classes: list[str], fraction: float, rng: np.random.Generator) -> str:
    centres = {}
    for t, true in enumerate(classes):
        for k, logit in enumerate(classes):
            centres[(true, logit)] = (4.0 if t == k else -1.5) + (0.5 if t == 0 else 0.0)
    out = {"bin_edges": BINS.tolist()}
    for split in ("train", "test"):
        out[split] = {}
        for t, true in enumerate(classes):
            out[split][true] = {}
            for k, logit in enumerate(classes):
                mean = centres[(true, logit)]
                if split == "test" and t > 0 and t == k:  # foreground shifts toward 0
                    mean -= 2.0 * (1 - fraction) + rng.normal(0, 0.1)
                std = 1.2 + 0.3 * (t > 0)
                voxels = int(200_000 if t == 0 else 2_000 * (t + 1))
                hist = np.diff(stats.norm.cdf(BINS, mean, std)) * voxels
                out[split][true][logit] = {"voxels": voxels, "mean": mean, "std": std,
                                           "hist": np.round(hist).astype(int).tolist()}
    return json.dumps(out)


CASE_VOXELS = 32_768  # voxels of a synthetic case (a 32^3 crop)


def _later_columns(columns: dict[str, np.ndarray], every: int, classes: int) -> dict:
    """The later contract columns of ``write_study``'s rows (class-major, then case, then
    post-processing), consistent with their sensitivity and precision: ``tp = sensitivity x
    ref``, ``pred = tp / precision``; aRVD ``|pred - ref| / ref``; ABD a third of HD95; the
    case's correct voxels its voxels less every class's disagreeing ones."""
    ref = columns["ref_voxels"]
    sensitivity = np.nan_to_num(columns["sensitivity"])
    precision = columns["precision"]
    tp = np.round(sensitivity * ref).astype(np.int64)
    usable = np.isfinite(precision) & (precision > 0)
    pred = np.where(usable, np.round(tp / np.where(usable, precision, 1.0)), 0).astype(np.int64)
    wrong = (pred + ref - 2 * tp).reshape(classes, every * 2).sum(axis=0)
    correct = np.tile(np.maximum(CASE_VOXELS - wrong, 0), classes)
    return {"tp_voxels": tp, "pred_voxels": pred, "arvd": np.abs(pred - ref) / ref,
            "abd": columns["hd95"] / 3.0, "case_voxels": np.full(len(ref), CASE_VOXELS),
            "case_correct_voxels": correct}


def write_study(root: str | Path, *, dataset: str = "synthetic-kits",
                model: str = "unet-tiny", classes=("background", "kidney", "tumour"),
                techniques=None, fractions=(0.1, 0.5), seeds=(0, 1), cases: int = 6,
                max_trials: int | None = None, diverged_every: int = 0, seed: int = 0,
                logits: bool = True, validation_cases: int = 0, train_cases: int = 0,
                later: bool = False,
                variants: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Write a synthetic study under ``root``; return the trial ids written.

    ``cases`` test cases, ``validation_cases`` validation cases and ``train_cases`` of the
    trial's training cases (``split`` column; these fit better, the more so the less training
    data: 001 Fig. 1) per trial; every class but the first (background) gets rows, with and
    without post-processing, so a trial has ``(cases + validation_cases + train_cases) x
    (len(classes) - 1) x 2`` rows. ``later=True`` also fills the columns that joined the
    results contract later (voxel counts consistent with sensitivity and precision, aRVD,
    ABD, the case's voxel and correct-voxel counts, the final validation loss); without it
    they are null, as in results written before them. ``variants`` reruns techniques under
    variants (``{"vanilla": ["w/o augmentation"]}``). ``max_trials`` keeps the first trials of
    the grid only (a partial study); ``diverged_every=k`` marks every k-th trial
    diverged (NaN metrics)."""
    store = ResultStore(str(root))
    rng = np.random.default_rng(seed)
    grid = trials_grid(techniques, fractions, seeds, variants)[:max_trials]
    foreground = list(classes[1:])
    every = cases + validation_cases + train_cases
    case_ids = np.array([f"case_{i:05d}" for i in range(cases)]
                        + [f"validation_{i:05d}" for i in range(validation_cases)]
                        + [f"train_{i:05d}" for i in range(train_cases)])
    splits = np.array([TEST] * cases + [VALIDATION] * validation_cases + [TRAIN] * train_cases)
    case_effect = rng.normal(0, 0.08, every)
    n = every * len(foreground) * 2
    case_column = np.tile(np.repeat(case_ids, 2), len(foreground))
    split_column = np.tile(np.repeat(splits, 2), len(foreground))
    class_column = np.repeat(foreground, every * 2)
    pp_column = np.tile([False, True], every * len(foreground))
    written = []
    for index, trial in enumerate(grid):
        trial_id = _trial_id(trial, dataset)
        diverged = bool(diverged_every) and index % diverged_every == diverged_every - 1
        status = "diverged" if diverged else "ok"
        level = 0.45 + 0.3 * np.sqrt(trial["fraction"]) + _setting_effect(trial)
        class_level = np.repeat([0.35 * (k == 0) for k in range(len(foreground))], every * 2)
        dsc = (level + class_level + np.tile(np.repeat(case_effect, 2), len(foreground))
               + 0.02 * pp_column + rng.normal(0, 0.03, n))
        if train_cases:  # the training cases fit better, the more so with less data
            dsc += (split_column == TRAIN) * 0.3 * (1 - trial["fraction"])
        dsc = np.clip(dsc, 0.0, 0.99)
        sensitivity = np.clip(dsc - 0.05 + rng.normal(0, 0.03, n), 0.0, 1.0)
        precision = np.clip(dsc + 0.08 + rng.normal(0, 0.03, n), 0.0, 1.0)
        hd95 = np.abs(30 * (1 - dsc) + rng.normal(0, 2, n)) * np.where(pp_column, 0.7, 1.0)
        empty = rng.random(n) < 0.01
        hd95[empty], dsc[empty], sensitivity[empty] = np.inf, 0.0, 0.0
        precision[empty] = np.nan
        if diverged:
            dsc[:] = sensitivity[:] = precision[:] = hd95[:] = np.nan
        param = _trial_param("synthetic", trial_id, dataset, model, trial)
        identity = identity_columns(param)
        columns = {"case_id": case_column, "class_name": class_column,
                   "postprocessed": pp_column, "dsc": dsc, "sensitivity": sensitivity,
                   "precision": precision, "iou": dsc / (2 - dsc), "hd95": hd95,
                   "hd95_max": hd95 * 1.5, "pred_voxels": np.where(empty, 0, 500),
                   "ref_voxels": np.full(n, 500), "split": split_column}
        if later:
            columns.update(_later_columns(columns, every, len(foreground)))
        rows = [{**identity, "status": status, **dict(zip(columns, values, strict=True))}
                for values in zip(*(c.tolist() for c in columns.values()), strict=True)]
        store.write_trial({
            **identity, "config": json.dumps(param["config"]), "status": status,
            "error": "loss is NaN" if diverged else None, "train_seconds": 1.0,
            "eval_seconds": 0.5, "iterations_done": 100, "final_train_loss": 0.1,
            "final_val_loss": 0.1 + 0.2 * (1 - trial["fraction"]) if later and not diverged
            else None,
            "train_cases": 10, "test_cases": cases, "code_version": "synthetic",
            "host": "localhost", "device": "cpu",
            "logit_stats": (_logit_stats(list(classes), trial["fraction"], rng)
                            if logits and not diverged else None)}, rows)
        written.append(trial_id)
    return written


def store_trial(store: ResultStore, technique: str, hp: dict, seed: int, dsc: Sequence[float],
                *, validation: Sequence[float] = (), train: Sequence[float] = (),
                status: str = "ok", fraction: float = 0.5, dataset: str = "d", study: str = "s",
                class_name: str = "tumour", variant: str | None = None,
                later: Mapping[str, Sequence] | None = None,
                final_val_loss: float | None = None) -> str:
    """Store one trial through the results writer (``ResultStore.write_trial``), as a trial
    runner does; return its trial id. Test case ``case_i`` has DSC ``dsc[i]`` and validation
    case ``validation_i`` DSC ``validation[i]``, with and without post-processing alike;
    sensitivity = DSC, precision 0.8, HD95 = 10 (1 - DSC) + 1. A ``diverged`` trial's metrics
    are NaN whatever ``dsc`` says. Training case ``train_i`` (split ``train``) has DSC
    ``train[i]``. ``later`` gives test case ``case_i`` the value ``later[column][i]`` of
    columns that joined the results contract later (``arvd``, ``abd``, ``tp_voxels``,
    ``pred_voxels``, ``case_voxels``...; null otherwise), and ``final_val_loss`` goes to the
    trials row. The setting is labelled with every hyperparameter of ``hp``
    (``study.catalog.param_label``)."""
    trial_id = _trial_id({"study": study, "technique": technique, "variant": variant, "hp": hp,
                          "fraction": fraction, "seed": seed, "class_name": class_name},
                         dataset)
    param: dict[str, Any] = {
        "study": study, "trial_id": trial_id, "param_label": param_label(hp),
        "variant": variant,
        "config": full_config(dataset=dataset, technique=technique, hp=hp, fraction=fraction,
                              seed=seed)}
    identity = identity_columns(param)
    values = [(TEST, f"case_{i}", v) for i, v in enumerate(dsc)]
    values += [(VALIDATION, f"validation_{i}", v) for i, v in enumerate(validation)]
    values += [(TRAIN, f"train_{i}", v) for i, v in enumerate(train)]
    rows = []
    for index, (split, case_id, value) in enumerate(values):
        value = np.nan if status == "diverged" else float(value)
        extra = {column: given[index] for column, given in (later or {}).items()
                 if split == TEST}
        for postprocessed in (False, True):
            rows.append({**identity, "case_id": case_id, "class_name": class_name,
                         "postprocessed": postprocessed, "dsc": value, "sensitivity": value,
                         "precision": np.nan if np.isnan(value) else 0.8,
                         "iou": value / (2 - value), "hd95": 10 * (1 - value) + 1,
                         "hd95_max": 20.0, "pred_voxels": 10, "ref_voxels": 10,
                         "status": status, "split": split, **extra})
    store.write_trial({**identity, "config": json.dumps(param["config"]), "status": status,
                       "error": "loss is NaN" if status == "diverged" else None,
                       "final_val_loss": final_val_loss}, rows)
    return trial_id
