"""The phenomenon the study is about, at tiny scale on the synthetic benchmark (001 §III).

With fewer training cases the rare class over-fits: test sensitivity drops while precision
changes less, and the foreground logits of unseen cases shift toward the decision boundary
more than those of the training cases (001 Fig. 1 and 3). A network trained on 2 cases is
compared with the same network trained on more, both for the same number of iterations on
synthetic-brats volumes, evaluated on held-out cases; data, splits and patches come from the
package (generator, loader, splits, sampler) as in a trial.

Default lane: a two-layer CNN on 24^3 volumes, 2 vs 8 cases, 100 iterations (~5 s). Slow lane:
the tiny U-Net on 32^3 volumes, 2 vs 16 cases, 300 iterations, on one and on four datasets.
Everything runs in one thread: deterministic, and not slowed tenfold by a loaded machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import study.objectives as obj
from study.data import loader, presets, sampling, splits, synthetic
from study.data.registry import DATASETS
from study.inference import sliding_window_logits
from study.models import build_model

PRESET = "synthetic-brats"
INFO = DATASETS[PRESET]


@pytest.fixture(autouse=True)
def one_thread():
    """Train in one thread (and give the previous setting back)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _small_cnn() -> torch.nn.Module:
    """Logits [N, 2, *S] for [N, C, *S]: a 3^3 convolution, ReLU, a 1^3 classifier."""
    return torch.nn.Sequential(torch.nn.Conv3d(len(INFO.channels), 8, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.Conv3d(8, len(INFO.classes), 1))


def _train_and_measure(make_model, cases, train_ids, test_ids, patch, iterations, batch_size,
                       lr, logits, seed=0) -> dict[str, float]:
    """Train ``make_model()`` (CE + Dice, Adam) on patches of ``train_ids``; return the pooled test
    sensitivity / precision of the tumour core and the mean foreground logit margin
    (z_fg - z_bg on tumour voxels) of (up to 4) training and of the test cases.
    ``logits(model, image)`` gives the logits [2, D, H, W] of a whole case."""
    torch.manual_seed(seed)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss = obj.CrossEntropyLoss() + obj.DiceLoss()
    sampler = sampling.PatchSampler([cases[c] for c in train_ids], patch, 0.5, seed)
    model.train()
    for _ in range(iterations):
        images, labels = sampler.sample(batch_size)
        value = loss(model(torch.from_numpy(images)), torch.from_numpy(labels))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    model.eval()
    counts = {"tp": 0, "fp": 0, "fn": 0}
    margins: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    with torch.no_grad():
        for split, ids in (("train", train_ids[:4]), ("test", test_ids)):
            for case_id in ids:
                case = cases[case_id]
                z = logits(model, case.image)
                reference = case.label == 1
                margins[split].append((z[1] - z[0])[reference])
                if split == "test":
                    prediction = z.argmax(axis=0) == 1
                    counts["tp"] += int((prediction & reference).sum())
                    counts["fp"] += int((prediction & ~reference).sum())
                    counts["fn"] += int((~prediction & reference).sum())
    tp = counts["tp"]
    return {"sensitivity": tp / (tp + counts["fn"]), "precision": tp / max(tp + counts["fp"], 1),
            "train_margin": float(np.concatenate(margins["train"]).mean()),
            "test_margin": float(np.concatenate(margins["test"]).mean())}


def _few_and_many(root_dir, params, test_cases, many, make_model, **training):
    """(2 training cases, ``many`` training cases): the measures of :func:`_train_and_measure`
    on one generated dataset, the same test set for both."""
    root = synthetic.ensure_generated(params, root_dir / f"data{params['seed']}", preset=PRESET)
    ids = loader.list_cases(INFO, root)
    cases = {c: loader.load_case(INFO, root, c) for c in ids}
    pool, test_ids = splits.split(ids, test_cases, 1.0)
    return tuple(_train_and_measure(make_model, cases, pool[:n], test_ids, **training)
                 for n in (2, many))


def _whole(model, image) -> np.ndarray:
    return model(torch.from_numpy(np.ascontiguousarray(image))[None])[0].numpy()


def _unet():
    return build_model("unet", "tiny", len(INFO.channels), len(INFO.classes))


UNET = {"patch": (16, 16, 16), "iterations": 300, "batch_size": 4, "lr": 3e-3,
        "logits": lambda model, image: sliding_window_logits(model, image, (16, 16, 16)).numpy()}


def _unet_params(data_seed: int) -> dict:
    return {**presets.DEFAULTS[PRESET], "cases": 24, "shape": [32, 32, 32], "seed": data_seed}


def test_fewer_training_cases_lose_sensitivity_not_precision(tmp_path):
    """2 vs 8 training cases, 8 test cases: test sensitivity drops by more than 0.1, precision
    moves by less than half as much, and the test foreground logits fall further below the
    training ones with 2 cases (the logit shift, 001 Fig. 3)."""
    params = {**presets.DEFAULTS[PRESET], "cases": 16, "shape": [24, 24, 24], "seed": 0}
    few, many = _few_and_many(tmp_path, params, 8, 8, _small_cnn, patch=(12, 12, 12),
                              iterations=100, batch_size=4, lr=1e-2, logits=_whole)
    sensitivity_drop = many["sensitivity"] - few["sensitivity"]
    assert sensitivity_drop > 0.1, (few, many)
    assert abs(many["precision"] - few["precision"]) < 0.5 * sensitivity_drop, (few, many)
    shift_few = few["train_margin"] - few["test_margin"]
    shift_many = many["train_margin"] - many["test_margin"]
    assert shift_few > shift_many + 2, (few, many)


@pytest.mark.slow
def test_the_unet_loses_sensitivity_with_fewer_cases(tmp_path):
    """The tiny U-Net, 2 vs 16 training cases, 8 test cases: test sensitivity drops by more
    than 0.15, precision moves by less than half as much, and the logit shift is larger with
    2 cases."""
    few, many = _few_and_many(tmp_path, _unet_params(0), 8, 16, _unet, **UNET)
    sensitivity_drop = many["sensitivity"] - few["sensitivity"]
    assert sensitivity_drop > 0.15, (few, many)
    assert abs(many["precision"] - few["precision"]) < 0.5 * sensitivity_drop, (few, many)
    shift_few = few["train_margin"] - few["test_margin"]
    shift_many = many["train_margin"] - many["test_margin"]
    assert shift_few > shift_many + 2, (few, many)


@pytest.mark.slow
def test_the_phenomenon_holds_on_average_over_datasets(tmp_path):
    """The U-Net comparison on four independently generated datasets: which two cases a small
    training set holds matters (some pairs cover the test set well), but on average
    sensitivity drops clearly more than precision changes, and the logit shift is larger with
    2 cases on every dataset."""
    drops, changes = [], []
    for data_seed in range(4):
        few, many = _few_and_many(tmp_path, _unet_params(data_seed), 8, 16, _unet, **UNET)
        drops.append(many["sensitivity"] - few["sensitivity"])
        changes.append(abs(many["precision"] - few["precision"]))
        assert (few["train_margin"] - few["test_margin"]
                > many["train_margin"] - many["test_margin"]), (data_seed, few, many)
    assert np.mean(drops) > 0.08 and np.mean(changes) < 0.6 * np.mean(drops), (drops, changes)
