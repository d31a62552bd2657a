"""Whole-volume evaluation of a trained trial's cases: metric rows and logit statistics.

The test cases and, when the dataset holds some out, the validation cases (the rows'
``split`` column) are predicted whole by :func:`study.inference.predict_logits`, with
test-time mirroring where the experiment asks for it (``inference.mirroring``), and scored by
:func:`study.evaluate.evaluate_segmentation` with and without largest-component
post-processing. The logits of the test cases and of the first
:data:`LOGIT_STAT_TRAIN_CASES` training cases are summarised by
:class:`study.logit_stats.LogitStats` (001 §III-A, Fig. 3). A diverged trial has no model to
evaluate: :func:`diverged_rows` gives its rows, metrics NaN.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from study.data.registry import DatasetInfo
from study.evaluate import evaluate_segmentation
from study.inference import predict_logits
from study.logit_stats import LogitStats

LOGIT_STAT_TRAIN_CASES = 4  # training cases whose logits are summarised (inference is costly)
METRIC_KEYS = ("dsc", "sensitivity", "precision", "iou", "hd95", "hd95_max")


def evaluate_cases(model, config, info: DatasetInfo, evaluated: dict[str, list], train_cases,
                   device) -> tuple[list[dict], dict[str, LogitStats]]:
    """Per-case metric rows of the evaluated cases (``{"test": cases, "validation": cases}``,
    each row tagged with its ``split``) and the logit statistics of the ``"train"`` and
    ``"test"`` cases (for :func:`study.logit_stats.to_json`).

    Whole-volume logits by :func:`study.inference.predict_logits` (U-Net: Gaussian sliding
    window over the training patch, overlap 0.5, optionally averaged over mirrorings;
    DeepMedic: dense tiling with its inference segments), argmax, metrics with and without
    largest-component post-processing.
    """
    patch = config["training"]["output_patch"]
    mirror = (0, 1, 2) if config.get("inference", {}).get("mirroring") else ()

    def logits_of(case) -> np.ndarray:
        return predict_logits(model, case.image, patch, device=device,
                              mirror_axes=mirror).numpy()

    rows = []
    stats = {"train": LogitStats(len(info.classes)), "test": LogitStats(len(info.classes))}
    for case in train_cases[:LOGIT_STAT_TRAIN_CASES]:
        stats["train"].add(logits_of(case), case.label, case.roi)
    for split, cases in evaluated.items():
        for case in cases:
            logits = logits_of(case)
            if split == "test":
                stats["test"].add(logits, case.label, case.roi)
            prediction = logits.argmax(axis=0).astype(np.uint8)
            for row in evaluate_segmentation(prediction, case.label, case.spacing,
                                             info.class_names, info.lcc_classes):
                rows.append({"case_id": case.case_id, "split": split, **row})
    return rows, stats


def diverged_rows(evaluated: dict[str, list], info: DatasetInfo) -> list[dict]:
    """Rows for a diverged trial: metrics undefined (NaN), reference sizes kept."""
    rows = []
    for split, cases in evaluated.items():
        for case, k in itertools.product(cases, range(1, len(info.class_names))):
            name = info.class_names[k]
            for postprocessed in (False, True):
                rows.append({"case_id": case.case_id, "split": split, "class_name": name,
                             "postprocessed": postprocessed, "pred_voxels": None,
                             "ref_voxels": int((case.label == k).sum()),
                             **{key: math.nan for key in METRIC_KEYS}})
    return rows
