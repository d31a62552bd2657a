"""The trial runner without Ray: results rows, every technique's training step, divergence,
failure, out-of-memory reports, exact resume; the logit statistics and their JSON format."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import spec_variant, tiny_training

import study.objectives as obj
from study import case_evaluation, techniques
from study.case_evaluation import LOGIT_STAT_TRAIN_CASES
from study.data import loader, splits
from study.data.registry import DATASETS
from study.expand import expand, trial_config
from study.inference import predict_logits
from study.logit_stats import LOGIT_BINS, LogitStats, MalformedLogitStats, from_json, to_json
from study.results import ResultStore
from study.spec import load_search_spaces
from study.techniques import IGNORE
from study.training import Training
from study.trial import LocalSession, dataset_root, run_trial


def test_trial_writes_one_trial_row_and_all_case_rows(tiny_spec, run_options, monkeypatch):
    """One trials row; cases rows = (test cases + the first LOGIT_STAT_TRAIN_CASES sorted
    training cases) x foreground classes x {raw, post-processed}, one inference per case
    (the training cases' logits serve their rows and the logit statistics); no periodic
    validation, no final_val_loss."""
    inferences = []

    def counted(model, image, *args, **kwargs):
        inferences.append(image.shape)
        return predict_logits(model, image, *args, **kwargs)

    monkeypatch.setattr(case_evaluation, "predict_logits", counted)
    trial = expand(tiny_spec)[1]
    summary = run_trial(trial.as_param(), run_options)
    store = ResultStore(run_options.results_uri)
    trials, cases = store.trials(), store.cases()
    assert len(trials) == 1 and trials.loc[0, "status"] == "ok" == summary["status"]
    assert trials.loc[0, "hp_gamma"] == 2.0 and pd.isna(trials.loc[0, "hp_m"])
    assert pd.isna(trials.loc[0, "final_val_loss"])
    dataset = trial.config.dataset
    ids = loader.list_cases(DATASETS[dataset.name], dataset_root(trial.config, run_options))
    train_ids, test_ids = splits.split(ids, dataset.test_cases, trial.config.fraction)
    by_split = cases.groupby("split")["case_id"].unique()
    assert sorted(by_split["test"]) == test_ids
    assert sorted(by_split["train"]) == train_ids[:LOGIT_STAT_TRAIN_CASES]
    assert len(cases) == (2 + 2) * 1 * 2 and len(inferences) == 2 + 2
    assert set(cases["postprocessed"]) == {False, True}
    assert cases["dsc"].between(0, 1).all() and (cases["ref_voxels"] > 0).all()
    assert (cases["arvd"] >= 0).all() and (cases["abd"] >= 0).all()
    assert (cases["tp_voxels"] <= cases[["pred_voxels", "ref_voxels"]].min(axis=1)).all()
    assert (cases["case_correct_voxels"] <= cases["case_voxels"]).all()
    assert trials.loc[0, "iterations_done"] == 4 and trials.loc[0, "train_cases"] == 2
    edges, summaries = from_json(trials.loc[0, "logit_stats"], trials.loc[0, "trial_id"])
    assert len(summaries) == 2 * 2 * 2  # (train, test) x true class x logit channel
    for s in summaries:  # every channel sees the same voxels; the histogram holds them all
        same = {(t.split, t.true_class) for t in summaries if t.voxels == s.voxels}
        assert (s.split, s.true_class) in same and s.hist.sum() == s.voxels > 0


def test_validation_cases_are_held_out_and_evaluated(tiny_spec, run_options):
    """``dataset.validation_cases``: held out of the training pool (fewer training cases, the
    same test cases) and evaluated like them, rows tagged ``split == "validation"``; the
    variant label of the experiment reaches both tables."""
    spec = dataclasses.replace(tiny_spec, variant="held out", dataset=dataclasses.replace(
        tiny_spec.dataset, validation_cases=1))
    trial = expand(spec)[0]
    assert trial.config.dataset.validation_cases == 1
    run_trial(trial.as_param(), run_options)
    store = ResultStore(run_options.results_uri)
    trials, cases = store.trials(), store.cases()
    # 6 cases: 2 test, 1 validation, a pool of 3 of which 0.5 (rounded half up) trains
    assert trials.loc[0, "train_cases"] == 2 and trials.loc[0, "test_cases"] == 2
    by_split = cases.groupby("split")["case_id"].unique()
    assert len(by_split["test"]) == 2 and len(by_split["validation"]) == 1
    ids = [f"c{i}" for i in range(6)]
    held_out = set(splits.validation(ids, 2, 1))
    for fraction in (0.5, 1.0):
        train, test = splits.split(ids, 2, fraction, validation_cases=1)
        assert not held_out & (set(train) | set(test))
        assert test == splits.split(ids, 2, fraction)[1]  # the test set never moves
    assert set(trials["variant"]) == set(cases["variant"]) == {"held out"}


def test_tiny_deepmedic_trial_trains_and_evaluates(tiny_spec, run_options):
    """DeepMedic end to end on the synthetic preset: 17^3 packed inputs for 9^3 outputs,
    RMSProp with the halving schedule (reported LR), dense-tiling evaluation of whole volumes."""
    spec = spec_variant(tiny_spec, "deepmedic", iterations=8, lr=None)
    session = LocalSession()
    summary = run_trial(expand(spec)[0].as_param(), run_options, session)
    assert summary["status"] == "ok" and summary["iterations_done"] == 8
    trials = ResultStore(run_options.results_uri).trials()
    assert trials.loc[0, "model"] == "deepmedic-tiny"
    cases = ResultStore(run_options.results_uri).cases()
    assert len(cases[cases["split"] == "test"]) == 4 and cases["pred_voxels"].notna().all()
    lrs = [r["lr"] for r in session.reports]
    assert lrs[0] == 1e-3 and lrs[-1] == pytest.approx(1e-3 / 32)


def test_deepmedic_labels_outside_the_output_are_ignored(tiny_spec, tiny_data, run_options):
    """Labels travel at the input size; only the central output part is not IGNORE."""
    training = tiny_training(tiny_spec, tiny_data, run_options, "vanilla", {}, model="deepmedic")
    assert training.input_size == (17, 17, 17) and training.output_patch == (9, 9, 9)
    labels = torch.randint(0, 2, (2, 17, 17, 17))
    marked = training.labels_at_input(labels)
    inner = (slice(None), *[slice(4, 13)] * 3)
    assert (marked[inner] == labels[inner]).all()
    marked[inner] = IGNORE
    assert (marked == IGNORE).all()


EXTRA_BATCHES = {"adversarial": 1, "asym_adversarial": 1, "mixup": 1, "asym_mixup": 1,
                 "combination": 2, "asym_combination": 2}


@pytest.mark.parametrize("model", ["unet", "deepmedic"])
def test_every_technique_trains_with_its_batches(tiny_spec, tiny_data, run_options, model):
    """Two iterations of every technique (first grid point of its search space): one loss term
    per extra batch (adversarial, mixup), the gated augmentation where ``bg_aug_prob`` is set
    (the tiny study has no regime of its own), finite losses."""
    for technique, space in load_search_spaces().items():
        training = tiny_training(tiny_spec, tiny_data, run_options, technique, space.settings()[0],
                             model=model)
        for _ in range(2):
            result = training.step()
        training.check()
        assert len(result.losses) == 1 + EXTRA_BATCHES.get(technique, 0), technique
        augments = training.sampler.augmentation.name != "none"
        assert augments == ("bg_aug_prob" in space.settings()[0]), technique
        assert np.isfinite(training.last_loss), technique


def test_asymmetric_adversarial_step_trains_on_a_perturbation_of_norm_l(
        tiny_spec, tiny_data, run_options, monkeypatch):
    """asym_adversarial: the direction is searched on the rare voxels and the second batch is
    x + perturbation with ||perturbation|| = l per sample (eq. 14, 16), same labels."""
    seen = []
    original = techniques.AlignedAdversarialPerturbation.__call__

    def spy(self, model, x, target, generator=None):
        x_adv, t_adv = original(self, model, x, target, generator)
        seen.append(((x_adv - x).flatten(1).norm(dim=1), torch.equal(t_adv, target)))
        return x_adv, t_adv

    monkeypatch.setattr(techniques.AlignedAdversarialPerturbation, "__call__", spy)
    training = tiny_training(tiny_spec, tiny_data, run_options, "asym_adversarial",
                         {"eps": 1e-5, "l": 10.0}, model="deepmedic")
    assert training.regularizers[0].rare == (0.0, 1.0)
    training.sampler.fg_fraction = 1.0  # a rare voxel at the centre (without: no direction)
    training.step()
    norms, same_labels = seen[0]
    assert len(seen) == 1 and same_labels
    torch.testing.assert_close(norms, torch.full_like(norms, 10.0))


@pytest.mark.parametrize("model", ["unet", "deepmedic"])
def test_update_rule_and_mixup_lambda_reach_the_step(tiny_spec, tiny_data, run_options, model):
    """``training.update``: one optimizer step per iteration when summed, one per loss term
    when sequential (the reference code: 3 for adversarial + mixup); the order follows the
    model (DeepMedic's extra batches from the weights before the clean step).
    ``training.mixup_lambda: code`` draws λ in [0, 1 - m]."""
    hp = {"eps": 1e-5, "l": 10.0, "mixup_m": 0.2, "mixup_alpha": 1.0}
    steps = {}
    for update in ("summed", "sequential"):
        spec = spec_variant(tiny_spec, model, update=update, mixup_lambda="code")
        config = trial_config(spec, spec.fractions[0], "asym_combination", hp, 0)
        assert config.training.update == update
        assert config.training.mixup_lambda == "code"
        info, train, _ = tiny_data
        training = Training(config, train, info, torch.device("cpu"), run_options)
        assert training.recipe.generate_before_clean == (model == "deepmedic")
        steps[update] = training.step().optimizer_steps
        mixup = next(r for r in training.regularizers if isinstance(r, obj.AsymmetricMixup))
        assert float(mixup.draw_lambda(1000).max()) <= 0.8
    assert steps == {"summed": 1, "sequential": 3}


def test_mixup_steps_train_on_mixed_targets(tiny_spec, tiny_data, run_options, monkeypatch):
    """mixup: the second loss term gets soft targets summing to 1 (eq. 18); asym_mixup: hard
    targets in which eq. 19 ignores or relabels voxels, so they differ from the batch's."""
    targets = []
    original = obj.SumLoss.forward

    def record(self, logits, target):
        targets.append(target)
        return original(self, logits, target)

    monkeypatch.setattr(obj.SumLoss, "forward", record)
    training = tiny_training(tiny_spec, tiny_data, run_options, "mixup", {"mixup_alpha": 0.2})
    training.step()
    clean, mixed = targets
    assert mixed.is_floating_point() and mixed.shape[1] == 2
    torch.testing.assert_close(mixed.sum(1), torch.ones_like(mixed[:, 0]))
    targets.clear()
    training = tiny_training(tiny_spec, tiny_data, run_options, "asym_mixup",
                         {"mixup_m": 0.2, "mixup_alpha": 1.0})
    training.config = dataclasses.replace(training.config, training=dataclasses.replace(
        training.config.training, batch_size=2))
    training.batches.batch_size = 2
    training.sampler.fg_fraction = 1.0
    training.step()
    clean, mixed = targets
    assert mixed.dtype == torch.int64 and not torch.equal(mixed, clean)
    assert set(mixed.unique().tolist()) <= {IGNORE, 0, 1}


@pytest.mark.parametrize("model", ["unet", "deepmedic"])
def test_asymmetric_augmentation_gate_reaches_the_sampler(tiny_spec, tiny_data, run_options,
                                                          model):
    """asym_augmentation with bg_aug_prob = 0 (eq. 21): a patch is augmented exactly when its
    output region holds a rare voxel; labels arrive at the output size and are padded."""
    training = tiny_training(tiny_spec, tiny_data, run_options, "asym_augmentation",
                         {"bg_aug_prob": 0.0}, model=model)
    assert training.sampler.bg_aug_prob == 0.0
    training.batches.batch_size = 8
    for _ in range(3):
        training.step()
        last = training.sampler.last
        np.testing.assert_array_equal(last["augmented"], last["rare"])
    images, labels, _, _ = training.batches.next()
    assert tuple(labels.shape[1:]) == training.output_patch
    assert tuple(images.shape[2:]) == training.input_size


class _NanAfter(torch.nn.Module):
    """CE whose value is NaN from its ``start``-th call on."""

    def __init__(self, start: int):
        super().__init__()
        self.calls, self.start = 0, start

    def forward(self, logits, target):
        self.calls += 1
        value = obj.CrossEntropyLoss(ignore_index=IGNORE)(logits, target)
        return value * float("nan") if self.calls >= self.start else value


@pytest.mark.parametrize("start, check_every", [(1, None), (3, 4)])
def test_nan_loss_is_recorded_as_diverged(tiny_spec, run_options, monkeypatch, start,
                                          check_every):
    """A NaN training loss ends the trial as `diverged` with rows, not an exception; with the
    loss read only every 4 iterations the first bad iteration is still the one named."""
    loss = _NanAfter(start)
    monkeypatch.setitem(techniques.BUILDERS, "regularized",
                        lambda technique, hp, context: techniques.TrainingObjective(loss))
    options = dataclasses.replace(run_options, check_every=check_every)
    summary = run_trial(expand(tiny_spec)[0].as_param(), options)
    store = ResultStore(run_options.results_uri)
    row = store.trials().iloc[0]
    assert summary["status"] == row["status"] == "diverged"
    assert f"nan at iteration {start}" in row["error"] and row["iterations_done"] == start - 1
    cases = store.cases()
    assert len(cases) == 8 and (cases["status"] == "diverged").all() and cases["dsc"].isna().all()
    assert set(cases["split"]) == {"train", "test"}  # NaN train rows too
    assert cases[["arvd", "abd", "tp_voxels", "case_correct_voxels"]].isna().all().all()
    assert (cases["case_voxels"] > 0).all() and (cases["ref_voxels"] > 0).all()
    assert store.finished_ids() == {row["trial_id"]}


def test_failure_is_stored_then_raised(tiny_spec, run_options):
    """A broken dataset stores a `failed` row naming the error, then re-raises (Tune retries)."""
    options = dataclasses.replace(run_options, data_dir="/proc/forbidden")
    with pytest.raises(OSError):
        run_trial(expand(tiny_spec)[0].as_param(), options)
    row = ResultStore(run_options.results_uri).trials().iloc[0]
    assert row["status"] == "failed" and "forbidden" in row["error"]
    assert ResultStore(run_options.results_uri).finished_ids() == set()


def test_out_of_memory_names_model_batch_patch_and_config(tiny_spec, run_options, monkeypatch):
    """A CUDA OOM is stored as `failed` with what was being trained and the full config."""

    def out_of_memory(self):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Training, "step", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_trial(expand(tiny_spec)[0].as_param(), run_options)
    error = ResultStore(run_options.results_uri).trials().iloc[0]["error"]
    assert ("training unet/tiny with batch 1 x input segment [16, 16, 16] (output "
            "[16, 16, 16])") in error
    assert "Tried to allocate 2.00 GiB" in error and '"technique":"vanilla"' in error


def test_validation_reports_are_periodic(tiny_spec, run_options):
    """validate_every adds val_loss/val_dsc to the reports at its multiples only; the last
    val_loss is the trials row's final_val_loss."""
    session = LocalSession()
    options = dataclasses.replace(run_options, validate_every=2)
    run_trial(expand(tiny_spec)[0].as_param(), options, session)
    validated = [r["iteration"] for r in session.reports if "val_dsc" in r]
    assert validated == [2, 4] and all(np.isfinite(r["val_loss"]) for r in session.reports
                                       if "val_loss" in r)
    last = [r["val_loss"] for r in session.reports if "val_loss" in r][-1]
    assert ResultStore(run_options.results_uri).trials().loc[0, "final_val_loss"] == last


class _Killed(Exception):
    pass


class _KillAfterFirstCheckpoint(LocalSession):
    def report(self, metrics, checkpoint=None):
        super().report(metrics, checkpoint)
        if checkpoint is not None:
            raise _Killed


@pytest.mark.parametrize("model, technique, options", [
    ("unet", "vanilla", {}),
    ("deepmedic", {"technique": "asym_combination",
                   "settings": ({"gamma": 2.0, "eps": 1e-5, "l": 10.0, "mixup_m": 0.2,
                                 "mixup_alpha": 1.0, "bg_aug_prob": 0.5},)},
     {"prefetch": 2, "check_every": 4}),
])
def test_resume_from_checkpoint_equals_uninterrupted_run(tiny_spec, run_options, tmp_path,
                                                         model, technique, options):
    """Killed after its checkpoint at iteration 3 and resumed, a trial ends bit-exactly as an
    uninterrupted one: model, optimizer, LR schedule, sampler (also when batches are sampled
    ahead in a thread) and the RNG of the regularizers are all checkpointed (CPU)."""
    if isinstance(technique, dict):
        from study.spec import TechniqueRun

        technique = TechniqueRun(technique["technique"], technique["settings"])
    else:
        technique = tiny_spec.techniques[0]
    spec = spec_variant(tiny_spec, model, iterations=6, technique=technique)
    param = expand(spec)[0].as_param()
    options = dataclasses.replace(run_options, checkpoint_every=3, **options)
    straight = LocalSession()
    run_trial(param, options, straight)
    uninterrupted = ResultStore(options.results_uri)

    interrupted = dataclasses.replace(options, results_uri=str(tmp_path / "resumed"))
    session = _KillAfterFirstCheckpoint()
    with pytest.raises(_Killed):
        run_trial(param, interrupted, session)
    assert session.reports[-1]["iteration"] == 3
    resumed = LocalSession(checkpoint=session.checkpoint)
    run_trial(param, interrupted, resumed)
    assert [r["iteration"] for r in resumed.reports] == [4, 5, 6]
    assert resumed.reports == straight.reports[3:]
    store = ResultStore(interrupted.results_uri)
    assert store.trials().loc[0, "final_train_loss"] == (
        uninterrupted.trials().loc[0, "final_train_loss"])
    columns = ["case_id", "postprocessed", "dsc", "hd95", "pred_voxels"]
    np.testing.assert_array_equal(store.cases()[columns].to_numpy(),
                                  uninterrupted.cases()[columns].to_numpy())
    assert store.trials().loc[0, "logit_stats"] == uninterrupted.trials().loc[0, "logit_stats"]


def test_logit_stats_round_trip_through_json():
    """Writer -> reader: per (true class, logit channel) the count, mean and population std of
    the ROI voxels' logits as NumPy gives them, histograms over the fixed bins with values
    beyond them clipped into the end bins; a class without voxels has NaN mean and std."""
    rng = np.random.default_rng(0)
    stats = {"train": LogitStats(3), "test": LogitStats(3)}
    cases = {split: [(rng.normal(0, 20, (3, 6, 7, 5)), rng.integers(0, 2, (6, 7, 5)),
                      rng.random((6, 7, 5)) < 0.7) for _ in range(2)] for split in stats}
    for split, split_cases in cases.items():
        for logits, label, roi in split_cases:
            stats[split].add(logits, label, roi)
    names = ["background", "kidney", "tumour"]
    edges, summaries = from_json(to_json(stats, names), "t1")
    np.testing.assert_array_equal(edges, LOGIT_BINS)
    assert [(s.split, s.true_class, s.logit_class) for s in summaries] == [
        (split, t, k) for split in ("train", "test") for t in names for k in names]
    for s in summaries:
        t, k = names.index(s.true_class), names.index(s.logit_class)
        values = np.concatenate([logits[k][(label == t) & roi]
                                 for logits, label, roi in cases[s.split]])
        assert s.voxels == values.size
        if t == 2:
            assert s.voxels == 0 and np.isnan(s.mean) and np.isnan(s.std)
            continue
        assert s.mean == pytest.approx(values.mean()) and s.std == pytest.approx(values.std())
        expected = np.histogram(np.clip(values, edges[0], edges[-1]), edges)[0]
        np.testing.assert_array_equal(s.hist, expected)
        assert s.hist[0] == (values < edges[1]).sum() > (values == edges[0]).sum()
        assert s.hist[-1] == (values >= edges[-2]).sum() > (values == edges[-1]).sum()


def _logit_json(**changes) -> dict:
    stats = LogitStats(2)
    stats.add(np.zeros((2, 4)), np.array([0, 0, 1, 1]), np.ones(4, bool))
    document = json.loads(to_json({"test": stats}, ["bg", "fg"]))
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = document
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[key]
        else:
            target[key] = value
    return document


@pytest.mark.parametrize("document, field, problem", [
    ("{not json", "", "not JSON"),
    (_logit_json(bin_edges=[1.0]), "bin_edges", "at least 2 increasing numbers"),
    (_logit_json(bin_edges=[0.0, 2.0, 1.0]), "bin_edges", "at least 2 increasing numbers"),
    (_logit_json(test=[]), "test", "expected an object, got list"),
    (_logit_json(test__fg__bg__voxels=None), "test.fg.bg", "missing voxels"),
    (_logit_json(test__fg__bg__voxels=-1), "test.fg.bg.voxels", "expected a count"),
    (_logit_json(test__bg__fg__mean="0.5"), "test.bg.fg.mean", "a number or null"),
    (_logit_json(test__bg__bg__hist=[1, 2]), "test.bg.bg.hist", "2 bins for 61 bin edges"),
])
def test_logit_stats_reader_names_trial_and_field(document, field, problem):
    """A malformed ``logit_stats`` document is refused naming the trial and the field; the
    analysis reports it as a results error naming the trial's file."""
    from analysis import logit_statistics
    from analysis.load import ResultsError

    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(MalformedLogitStats, match=problem) as error:
        from_json(text, "abc123")
    assert error.value.trial == "abc123" and error.value.field == field
    assert "trial abc123" in str(error.value) and (not field or repr(field) in str(error.value))
    trials = pd.DataFrame([{"dataset": "d", "model": "m", "technique": "vanilla",
                            "param_label": "-", "fraction": 1.0, "trial_id": "abc123",
                            "seed": 0, "status": "ok", "logit_stats": text}])
    with pytest.raises(ResultsError, match=r"trials/abc123\.parquet: .*" + problem):
        logit_statistics(trials)


class _KillAtCheckpoint(LocalSession):
    """Killed right after reporting the checkpoint of iteration ``at``."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def report(self, metrics, checkpoint=None):
        super().report(metrics, checkpoint)
        if checkpoint is not None and metrics["iteration"] == self.at:
            raise _Killed


PRETRAINED = {"technique": "asym_combination",
              "settings": ({"gamma": 2.0, "mixup_m": 0.2, "mixup_alpha": 1.0,
                            "bg_aug_prob": 0.0},)}


def test_pretraining_is_plain_ce_then_the_technique(tiny_spec, tiny_data, run_options):
    """003 §4: the first `pretrain` iterations train plain CE without the technique's batch
    regularizers and with eq. 21's gate open (every patch augmented); from then on the
    technique's loss, regularizers and gate."""
    from study.spec import TechniqueRun

    spec = spec_variant(tiny_spec, "deepmedic", iterations=4, pretrain=2,
                    technique=TechniqueRun(PRETRAINED["technique"], PRETRAINED["settings"]))
    spec = dataclasses.replace(spec, augmentation="deepmedic")
    config = expand(spec)[0].config
    assert config.training.pretrain == 2
    info, train, _ = tiny_data
    training = Training(config, train, info, torch.device("cpu"), run_options)
    for _ in range(2):
        assert isinstance(training.loss.loss, obj.CrossEntropyLoss)
        assert training.regularizers == () and training.sampler.bg_aug_prob == 1.0
        training.step()
        assert training.sampler.last["augmented"].all()
    assert isinstance(training.loss.loss, obj.FocalLoss)
    assert len(training.regularizers) == 1 and training.sampler.bg_aug_prob == 0.0
    training.batches.batch_size = 8
    training.step()
    last = training.sampler.last
    np.testing.assert_array_equal(last["augmented"], last["rare"])


@pytest.mark.parametrize("kill_at", [2, 4])  # a checkpoint in pre-training, one after the switch
def test_resume_across_the_pretraining_switch_equals_uninterrupted_run(
        tiny_spec, run_options, tmp_path, kill_at):
    """Resumed from a checkpoint taken during CE pre-training (iteration 2 of 3) or after the
    switch to the technique (iteration 4), with batches sampled ahead in a thread, a trial ends
    bit-exactly as an uninterrupted one (CPU)."""
    from study.spec import TechniqueRun

    spec = spec_variant(tiny_spec, "deepmedic", iterations=6, pretrain=3,
                    technique=TechniqueRun(PRETRAINED["technique"], PRETRAINED["settings"]))
    spec = dataclasses.replace(spec, augmentation="deepmedic")
    param = expand(spec)[0].as_param()
    options = dataclasses.replace(run_options, checkpoint_every=2, prefetch=2, check_every=4)
    straight = LocalSession()
    run_trial(param, options, straight)
    uninterrupted = ResultStore(options.results_uri)

    interrupted = dataclasses.replace(options, results_uri=str(tmp_path / "resumed"))
    session = _KillAtCheckpoint(kill_at)
    with pytest.raises(_Killed):
        run_trial(param, interrupted, session)
    resumed = LocalSession(checkpoint=session.checkpoint)
    run_trial(param, interrupted, resumed)
    assert [r["iteration"] for r in resumed.reports] == list(range(kill_at + 1, 7))
    assert resumed.reports == straight.reports[kill_at:]
    store = ResultStore(interrupted.results_uri)
    assert store.trials().loc[0, "final_train_loss"] == (
        uninterrupted.trials().loc[0, "final_train_loss"])
    assert store.trials().loc[0, "logit_stats"] == uninterrupted.trials().loc[0, "logit_stats"]
