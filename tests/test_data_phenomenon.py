"""The phenomenon the study is about, at tiny scale on the synthetic benchmark (001 §III).

With fewer training cases the rare class over-fits: test sensitivity drops while precision
changes less, and the foreground logits of unseen cases shift toward the decision boundary
more than those of the training cases (001 Fig. 1 and 3). A tiny U-Net trained on 2 cases is
compared with the same network trained on 16, both for the same number of iterations on
synthetic-brats volumes of 32^3, evaluated on 8 held-out cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import study.objectives as obj
from study.data import loader, sampling, splits, synthetic
from study.data.registry import DATASETS
from study.inference import sliding_window_logits
from study.models import build_model

PRESET = "synthetic-brats"
PARAMS = {**synthetic.DEFAULTS[PRESET], "cases": 24, "shape": [32, 32, 32], "seed": 0}
PATCH = (16, 16, 16)


def _train_and_measure(cases, train_ids, test_ids, seed=0, iterations=300):
    """Pooled test sensitivity / precision of the tumour core and the mean foreground logit
    margin (z_fg - z_bg on tumour voxels) of training and test cases."""
    info = DATASETS[PRESET]
    torch.manual_seed(seed)
    model = build_model("unet", "tiny", len(info.channels), len(info.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss = obj.CrossEntropyLoss() + obj.DiceLoss()
    sampler = sampling.PatchSampler([cases[c] for c in train_ids], PATCH, 0.5, seed)
    model.train()
    for _ in range(iterations):
        images, labels = sampler.sample(4)
        value = loss(model(torch.from_numpy(images)), torch.from_numpy(labels))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    out = {"tp": 0, "fp": 0, "fn": 0}
    per_case = {"sensitivity": [], "precision": []}
    margins = {"train": [], "test": []}
    for split, ids in (("train", train_ids[:4]), ("test", test_ids)):
        for case_id in ids:
            case = cases[case_id]
            logits = sliding_window_logits(model, case.image, PATCH).numpy()
            reference = case.label == 1
            margins[split].append((logits[1] - logits[0])[reference])
            if split == "test":
                prediction = logits.argmax(axis=0) == 1
                tp = int((prediction & reference).sum())
                out["tp"] += tp
                out["fp"] += int((prediction & ~reference).sum())
                out["fn"] += int((~prediction & reference).sum())
                per_case["sensitivity"].append(tp / reference.sum())
                if prediction.any():
                    per_case["precision"].append(tp / prediction.sum())
    out["sensitivity"] = out["tp"] / (out["tp"] + out["fn"])
    out["precision"] = out["tp"] / max(out["tp"] + out["fp"], 1)
    out["case_sensitivity"] = float(np.mean(per_case["sensitivity"]))
    out["case_precision"] = float(np.mean(per_case["precision"]))
    out["train_margin"] = float(np.concatenate(margins["train"]).mean())
    out["test_margin"] = float(np.concatenate(margins["test"]).mean())
    return out


def _few_and_many(tmp_path, data_seed: int, seed: int = 0):
    info = DATASETS[PRESET]
    params = {**PARAMS, "seed": data_seed}
    root = synthetic.ensure_generated(params, tmp_path / f"data{data_seed}", preset=PRESET)
    ids = loader.list_cases(info, root)
    cases = {c: loader.load_case(info, root, c) for c in ids}
    pool, test_ids = splits.split(ids, 8, 1.0)
    return (_train_and_measure(cases, pool[:2], test_ids, seed),
            _train_and_measure(cases, pool, test_ids, seed))


def test_fewer_training_cases_lose_sensitivity_not_precision(tmp_path):
    """2 vs 16 training cases (001 §III at tiny scale, ~12 s on 2 cores): test sensitivity
    drops by more than 0.15, precision moves by less than half as much, and the test
    foreground logits fall further below the training ones (the logit shift, 001 Fig. 3)."""
    torch.set_num_threads(2)
    few, many = _few_and_many(tmp_path, data_seed=0)
    sensitivity_drop = many["sensitivity"] - few["sensitivity"]
    precision_change = abs(many["precision"] - few["precision"])
    assert sensitivity_drop > 0.15, (few, many)
    assert precision_change < 0.5 * sensitivity_drop, (few, many)
    shift_few = few["train_margin"] - few["test_margin"]
    shift_many = many["train_margin"] - many["test_margin"]
    assert shift_few > shift_many + 2, (few, many)


@pytest.mark.slow
def test_the_phenomenon_holds_on_average_over_datasets(tmp_path):
    """The same comparison on four independently generated datasets (~50 s): which two cases
    a small training set holds matters (some pairs cover the test set well), but on average
    sensitivity drops clearly more than precision changes, and the logit shift is larger with
    2 cases on every dataset."""
    torch.set_num_threads(2)
    drops, changes = [], []
    for data_seed in range(4):
        few, many = _few_and_many(tmp_path, data_seed)
        drops.append(many["sensitivity"] - few["sensitivity"])
        changes.append(abs(many["precision"] - few["precision"]))
        assert (few["train_margin"] - few["test_margin"]
                > many["train_margin"] - many["test_margin"]), (data_seed, few, many)
    assert np.mean(drops) > 0.08 and np.mean(changes) < 0.6 * np.mean(drops), (drops, changes)
