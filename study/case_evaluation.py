"""Whole-volume evaluation of a trained trial's cases: metric rows and logit statistics.

A trial evaluates, by split (:func:`evaluated_cases`, the rows' ``split`` column): the test
cases; the validation cases when the dataset holds some out; and a fixed subset of its own
training cases, the first :data:`LOGIT_STAT_TRAIN_CASES` of its sorted training ids (all of
them when it has fewer), for the train-vs-test gap of 001 Fig. 1. Every case is predicted
whole by :func:`study.inference.predict_logits`, with test-time mirroring where the experiment
asks for it (``inference.mirroring``), and scored by
:func:`study.evaluate.evaluate_segmentation` with and without largest-component
post-processing — the training cases exactly as the test cases. The logits of the training
subset and of the test cases are summarised by :class:`study.logit_stats.LogitStats` (001
§III-A, Fig. 3) from the same inference. A diverged trial has no model to evaluate:
:func:`diverged_rows` gives its rows, of the same cases, metrics NaN.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from study.data.registry import DatasetInfo
from study.evaluate import evaluate_segmentation
from study.identity import TrialConfig
from study.inference import predict_logits
from study.logit_stats import SPLITS as LOGIT_SPLITS
from study.logit_stats import LogitStats
from study.results import TEST, TRAIN, VALIDATION

# Training cases evaluated as the test cases (split "train") and whose logits are summarised:
# the first of the trial's sorted training ids (whole-volume inference is costly).
LOGIT_STAT_TRAIN_CASES = 4
# binary_metrics' ratios and distances: NaN in a diverged trial's rows.
METRIC_KEYS = ("dsc", "sensitivity", "precision", "iou", "arvd", "hd95", "hd95_max", "abd")
# Counts that need a prediction: null in a diverged trial's rows.
PREDICTED_COUNT_KEYS = ("pred_voxels", "tp_voxels", "case_correct_voxels")


def evaluated_cases(train_cases: Sequence, test_cases: Sequence,
                    validation_cases: Sequence = ()) -> dict[str, list]:
    """The cases a trial evaluates, by split: ``"train"``, the first
    :data:`LOGIT_STAT_TRAIN_CASES` of ``train_cases`` (sorted by id, as
    :func:`study.data.splits.split` returns them: a fixed subset of each trial's training set);
    ``"test"``; and ``"validation"`` when ``validation_cases`` holds any."""
    evaluated = {TRAIN: list(train_cases[:LOGIT_STAT_TRAIN_CASES]), TEST: list(test_cases)}
    if len(validation_cases):
        evaluated[VALIDATION] = list(validation_cases)
    return evaluated


def evaluate_cases(model, config: TrialConfig, info: DatasetInfo, evaluated: dict[str, list], device
                   ) -> tuple[list[dict], dict[str, LogitStats]]:
    """Per-case metric rows of the evaluated cases (:func:`evaluated_cases`; each row tagged
    with its ``split``) and the logit statistics of the ``"train"`` and ``"test"`` cases (for
    :func:`study.logit_stats.to_json`), from one inference per case.

    Whole-volume logits by :func:`study.inference.predict_logits` (U-Net: Gaussian sliding
    window over the training patch, overlap 0.5, optionally averaged over mirrorings;
    DeepMedic: dense tiling with its inference segments), argmax, metrics with and without
    largest-component post-processing.
    """
    patch = config.training.output_patch
    mirror = (0, 1, 2) if config.inference.mirroring else ()
    rows = []
    stats = {split: LogitStats(len(info.classes)) for split in LOGIT_SPLITS}
    for split, cases in evaluated.items():
        for case in cases:
            logits = predict_logits(model, case.image, patch, device=device,
                                    mirror_axes=mirror).numpy()
            if split in stats:
                stats[split].add(logits, case.label, case.roi)
            prediction = logits.argmax(axis=0).astype(np.uint8)
            for row in evaluate_segmentation(prediction, case.label, case.spacing,
                                             info.class_names, info.lcc_classes):
                rows.append({"case_id": case.case_id, "split": split, **row})
    return rows, stats


def diverged_rows(evaluated: dict[str, list], info: DatasetInfo) -> list[dict]:
    """Rows for a diverged trial: metrics undefined (NaN), counts that need a prediction
    null, reference sizes and case sizes kept."""
    rows = []
    for split, cases in evaluated.items():
        for case, k in itertools.product(cases, range(1, len(info.class_names))):
            name = info.class_names[k]
            for postprocessed in (False, True):
                rows.append({"case_id": case.case_id, "split": split, "class_name": name,
                             "postprocessed": postprocessed,
                             "ref_voxels": int((case.label == k).sum()),
                             "case_voxels": int(case.label.size),
                             **dict.fromkeys(PREDICTED_COUNT_KEYS),
                             **{key: math.nan for key in METRIC_KEYS}})
    return rows
