"""Synthetic presets, preprocessing and its cache, nested splits, patch sampling."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
import SimpleITK as sitk

from study.data import augmentation, check, loader, preprocess, presets, sampling, splits, synthetic
from study.data.case import Case
from study.data.registry import DATASETS

INFO = DATASETS["synthetic-brats"]
PARAMS = {**presets.DEFAULTS["synthetic-brats"], "cases": 4, "shape": [24, 24, 24], "seed": 3}
PRESETS = ("synthetic-brats", "synthetic-atlas", "synthetic-kits")


def _small(preset: str, **changes) -> dict:
    shape = [16, 40, 40] if preset == "synthetic-kits" else [32, 32, 32]
    return {**presets.DEFAULTS[preset], "cases": 4, "shape": shape, **changes}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic.ensure_generated(PARAMS, tmp_path_factory.mktemp("ds") / "synthetic")


# ----------------------------------------------------------------------------- generator

@pytest.mark.parametrize("preset", PRESETS)
def test_presets_are_seeded_and_declare_their_labels(preset):
    """Same parameters, same case; another seed, another case; the declared channels; labels
    within the declared set and every class the registry declares occurs."""
    params = _small(preset)
    a_img, a_lab = synthetic.generate_case(params, 1, preset)
    b_img, b_lab = synthetic.generate_case(params, 1, preset)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, _ = synthetic.generate_case({**params, "seed": 1}, 1, preset)
    assert not np.array_equal(a_img, c_img)
    info = DATASETS[preset]
    assert a_img.shape == (len(info.channels), *params["shape"]) and a_img.dtype == np.float32
    assert set(np.unique(a_lab)) <= info.raw_labels
    assert all(check.class_voxels(info, a_lab))  # every class, background included


def test_imbalance_ratios_are_of_the_order_of_table_i():
    """001 Table I: BRATS 712.8, ATLAS 1768.7, KiTS kidney 122.8 and tumour 6736.6 (mean
    over images of background / foreground voxels). The presets land within a factor ~3, with
    the heavy tail (std > mean) of the brain lesions, and the ratio hardly depends on size."""
    ratios = {}
    for preset, shape in (("synthetic-brats", [32, 32, 32]), ("synthetic-atlas", [40, 40, 40]),
                          ("synthetic-kits", [24, 64, 64])):
        info = DATASETS[preset]
        params = {**presets.DEFAULTS[preset], "shape": shape}
        counts = [check.class_voxels(info, synthetic.generate_case(params, i, preset)[1])
                  for i in range(24)]
        for k, name in enumerate(info.class_names[1:], start=1):
            ratios[name] = check.imbalance_ratio(counts, k)
    assert 250 < ratios["tumour_core"][0] < 2500
    assert 600 < ratios["lesion"][0] < 6000 and ratios["lesion"][1] > ratios["lesion"][0] * 0.8
    assert 60 < ratios["kidney"][0] < 250
    assert ratios["tumour"][0] > 10 * ratios["kidney"][0]  # the tumour is the rare class


def test_cases_differ_in_lesion_size_position_and_contrast():
    """Few training cases must not cover the variety: lesion volumes spread (log-normal),
    centroids move, and lesion contrast in t1ce differs between cases."""
    params = _small("synthetic-brats")
    volumes, centres, contrasts = [], [], []
    for i in range(12):
        image, label = synthetic.generate_case(params, i)
        core = np.isin(label, (1, 4))
        volumes.append(core.sum())
        centres.append(np.argwhere(core).mean(axis=0))
        tissue = np.median(image[1][(label == 0) & (image[1] > 0)])
        contrasts.append(np.abs(image[1][core] - tissue).mean() / tissue)
    assert np.std(np.log(volumes)) > 0.4
    assert np.ptp(np.array(centres), axis=0).min() > 4
    assert np.ptp(contrasts) > 0.1


def test_imbalance_ratio_is_table_i_definition():
    """Per class: mean and std over the images containing it of background / class voxels;
    images without the class are left out. Background is class 0 as declared: BraTS oedema
    (raw 2) counts as background, KiTS counts label 0 only, the same for kidney and tumour."""
    counts = [[90, 10], [96, 4], [100, 0]]
    assert check.imbalance_ratio(counts, 1) == pytest.approx(((9 + 24) / 2, 7.5, 2))
    assert check.imbalance_ratio([[100, 0]], 1) is None
    brats = np.array([0] * 50 + [2] * 30 + [1] * 15 + [4] * 5)
    assert check.class_voxels(DATASETS["synthetic-brats"], brats) == [80, 20]
    kits = np.array([0] * 92 + [1] * 4 + [2] * 4)
    counts = [check.class_voxels(DATASETS["kits19"], kits)]
    assert counts == [[92, 4, 4]]
    assert check.imbalance_ratio(counts, 2) == pytest.approx((23.0, 0.0, 1))


@pytest.mark.parametrize(("change", "message"), [
    ({"cases": 1}, "cases: expected an integer 2..10,000"),
    ({"cases": 10**9}, "cases: expected an integer 2..10,000, got 1000000000"),
    ({"shape": [8, 8, 8]}, "shape: expected 3 integers"),
    ({"spacing": [1, 1]}, "spacing: expected 3 numbers"),
    ({"lesions": [3, 1]}, "lesions: expected"),
    ({"contrast": [0.9, 0.2]}, "contrast: expected"),
    ({"noise": -1}, "noise: expected"),
    ({"version": 1}, "version: this code generates version"),
    ({"seed": True}, "seed: expected"),
])
def test_bad_generator_parameters_name_the_parameter(change, message):
    with pytest.raises(ValueError, match=message):
        presets.check_params("synthetic-brats", {**presets.DEFAULTS["synthetic-brats"],
                                                   **change})
    with pytest.raises(ValueError, match="unknown parameters"):
        presets.check_params("synthetic-atlas", {**presets.DEFAULTS["synthetic-atlas"],
                                                   "size": 3})


def test_registry_checks_generator_parameters_under_their_key():
    """The registry fills in the defaults, types numbers like them (9.0 cases is 9, one trial
    identity) and names a bad parameter under the dotted key it was written at."""
    info = DATASETS["synthetic-kits"]
    merged = info.validate_synthetic({"cases": 9.0, "noise": 5}, "dataset.synthetic")
    assert merged == {**presets.DEFAULTS["synthetic-kits"], "cases": 9, "noise": 5.0}
    assert type(merged["cases"]) is int and type(merged["noise"]) is float
    with pytest.raises(ValueError, match=r"^dataset.synthetic.size: unknown generator param"):
        info.validate_synthetic({"size": 3}, "dataset.synthetic")
    with pytest.raises(ValueError, match=r"^synthetic: noise: expected a number in \[0, 200\] HU, "
                                         r"got 500.0$"):
        info.validate_synthetic({"noise": 500})


def test_concurrent_generation_leaves_one_complete_copy(tmp_path):
    """Several trials asking for the same dataset at once: one generates, the others wait;
    a staging folder left by a killed generator is removed; no staging folder remains."""
    params = _small("synthetic-atlas", cases=3)
    target = tmp_path / "atlas"
    (tmp_path / ".atlas.tmp-killed").mkdir()  # a generator killed mid-way
    (tmp_path / ".atlas.tmp-killed" / "half.nii.gz").write_bytes(b"partial")
    errors = []

    def generate():
        try:
            synthetic.ensure_generated(params, target, preset="synthetic-atlas")
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["atlas"]
    assert loader.list_cases(DATASETS["synthetic-atlas"], target) == [
        "sub-synth0000", "sub-synth0001", "sub-synth0002"]


# ----------------------------------------------------------------------------- loading

def test_loader_reads_what_generator_wrote(root):
    """The BraTS layout round-trips: classes mapped (core = 1 | 4), z-scored inside the ROI,
    cropped to the ROI's bounding box."""
    case = loader.load_case(INFO, root, "Synth_0000")
    _, raw = synthetic.generate_case(PARAMS, 0)
    assert case.image.shape[0] == 4 and case.image.shape[1:] == case.label.shape
    assert case.label.shape < raw.shape
    assert case.label.sum() == np.isin(raw, (1, 4)).sum() > 0
    np.testing.assert_allclose(case.image[:, case.roi].mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(case.image[:, case.roi].std(axis=1), 1, atol=1e-3)
    assert (case.image[:, ~case.roi] == 0).all()
    for axis in range(3):  # the crop is tight: the ROI touches both faces of every axis
        extent = np.any(case.roi, axis=tuple(a for a in range(3) if a != axis))
        assert extent[0] and extent[-1]


def test_target_spacing_goes_to_the_coarse_axis():
    """An anisotropic target (KiTS 1.6 x 1.6 x 3.2) gives its coarse value to the case's
    coarsest axis whatever the file's axis order; isotropic cases keep the declared order."""
    target = (3.2, 1.6, 1.6)
    assert preprocess.target_for((0.78, 0.78, 5.0), target) == (1.6, 1.6, 3.2)  # KiTS19 files
    assert preprocess.target_for((5.0, 0.78, 0.78), target) == (3.2, 1.6, 1.6)
    assert preprocess.target_for((1.0, 1.0, 1.1), target) == target
    assert preprocess.target_for((0.5, 0.7, 0.6), (1.0, 1.0, 1.0)) == (1.0, 1.0, 1.0)


def test_resampling_to_the_target_spacing(tmp_path):
    """A synthetic KiTS dataset written at 0.8 x 0.8 mm in-plane and 2.4 mm slices comes out
    at 3.2 x 1.6 x 1.6 mm with the physical extent kept, labels still 0/1/2, HU clipped to the
    KiTS window before z-scoring."""
    params = _small("synthetic-kits", cases=2, shape=[20, 64, 64], spacing=[2.4, 0.8, 0.8])
    info = DATASETS["synthetic-kits"]
    root = synthetic.ensure_generated(params, tmp_path / "kits", preset="synthetic-kits")
    case = loader.load_case(info, root, "case_00000")
    assert case.spacing == pytest.approx((3.2, 1.6, 1.6))
    assert case.label.shape[0] <= round(20 * 2.4 / 3.2) and case.label.shape[1] <= 32
    assert set(np.unique(case.label)) <= {0, 1, 2} and (case.label == 1).any()
    raw_kidney = (synthetic.generate_case(params, 0, "synthetic-kits")[1] == 1).sum()
    volume = (case.label == 1).sum() * np.prod(case.spacing)
    assert volume == pytest.approx(raw_kidney * 2.4 * 0.8 * 0.8, rel=0.2)
    image = case.image[0]  # air (-1000 HU + noise) and bone (600 HU) clipped to the window
    assert np.isclose(image, image.min()).mean() > 0.02 and np.isclose(image, image.max()).sum() > 5


def test_preprocessing_cache_is_reused_refreshed_and_never_half_written(tmp_path, root):
    """First load writes the case atomically; the second maps it (memory-mapped, equal);
    concurrent loads compute once; a changed source is recomputed; a failing case writes
    nothing; staging left by a killed writer is removed."""
    cache = tmp_path / "cache"
    first = loader.load_case(INFO, root, "Synth_0001", cache_dir=cache)
    folder = next(cache.iterdir()) / "Synth_0001"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["case_id"] == "Synth_0001" and meta["params"]["roi"] == "nonzero"
    second = loader.load_case(INFO, root, "Synth_0001", cache_dir=cache)
    assert isinstance(second.image, np.memmap)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.label, second.label)
    np.testing.assert_array_equal(first.roi, second.roi)
    direct = loader.load_case(INFO, root, "Synth_0001")
    np.testing.assert_array_equal(direct.image, second.image)

    (folder.parent / ".Synth_0002.tmp-killed").mkdir()
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        loader.load_case(INFO, root, "Synth_0002", cache_dir=cache))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]

    seg = root / "Synth_0001" / "Synth_0001_seg.nii.gz"
    before = seg.read_bytes()
    try:
        labels = sitk.ReadImage(str(seg))
        array = sitk.GetArrayFromImage(labels)
        array[np.isin(array, (1, 4))] = 2  # the core becomes oedema (= background)
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(labels)
        sitk.WriteImage(image, str(seg))
        refreshed = loader.load_case(INFO, root, "Synth_0001", cache_dir=cache)
        assert first.label.sum() > 0 and refreshed.label.sum() == 0
        seg.write_bytes(b"garbage")
        with pytest.raises(loader.DataError, match="Synth_0001_seg.nii.gz: not a readable"):
            loader.load_case(INFO, root, "Synth_0001", cache_dir=cache)
    finally:
        seg.write_bytes(before)
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]


# ----------------------------------------------------------------------------- splits

@pytest.mark.parametrize(("dataset", "total", "expected"), [
    ("brats", 285, {1.0: 190, 0.5: 95, 0.2: 38, 0.1: 19, 0.05: 10}),
    ("atlas", 220, {1.0: 145, 0.5: 73, 0.4: 57, 0.3: 43}),
    ("kits19", 210, {1.0: 140, 0.5: 70, 0.2: 28, 0.1: 14, 0.05: 7}),
    ("btcv", 30, {1.0: 20, 0.25: 5}),
])
def test_splits_use_the_papers_counts_nested(dataset, total, expected):
    """001 §V-A: BRATS 95 test / 190 95 38 19 10, ATLAS 75 / 145 73 57 43, KiTS 70 / 140 70
    28 14 7, abdomen 10 / 20 5; the smaller training sets are inside the larger ones and the
    test set does not depend on the fraction."""
    info = DATASETS[dataset]
    ids = [f"case{i:03d}" for i in range(total)]
    tests, previous = set(), None
    for fraction in sorted(expected):
        train, test = splits.split(ids, info.test_cases, fraction, counts=info.train_counts)
        assert len(train) == expected[fraction] and len(test) == info.test_cases
        assert not set(train) & set(test)
        assert previous is None or previous <= set(train)
        previous = set(train)
        tests.add(tuple(test))
    assert len(tests) == 1


def test_splits_are_fixed_nested_and_never_empty():
    """Test set independent of the fraction and of the id order; smaller fractions are subsets
    of larger ones; without declared counts f * pool is rounded half up; a fraction rounding
    to zero cases is an error."""
    ids = [f"c{i:03d}" for i in range(200)]
    test_a, test_b = splits.split(ids, 10, 0.05)[1], splits.split(ids[::-1], 10, 1.0)[1]
    assert test_a == test_b
    previous: set[str] = set()
    for fraction in (0.05, 0.1, 0.2, 0.5, 1.0):
        train, test = splits.split(ids, 10, fraction)
        assert len(train) == math.floor(fraction * 190 + 0.5) and not set(train) & set(test)
        assert previous <= set(train)
        previous = set(train)
    assert len(splits.split(ids[:25], 5, 0.5, counts=DATASETS["atlas"].train_counts)[0]) == 10
    with pytest.raises(ValueError, match="rounds to zero cases"):
        splits.split(ids, 10, 0.001)
    with pytest.raises(ValueError, match="test_cases"):
        splits.split(ids[:5], 5, 0.5)
    with pytest.raises(ValueError, match="unique"):
        splits.split(["a", "a", "b"], 1, 1.0)


# ----------------------------------------------------------------------------- sampling

def _cases(root):
    return [loader.load_case(INFO, root, c) for c in loader.list_cases(INFO, root)]


def test_sampler_centres_the_requested_share_on_foreground(root):
    """About fg_fraction of patches have a foreground centre voxel (DeepMedic's 50/50, the
    papers' 80 % baseline), background centres lie inside the ROI; state() resumes exactly."""
    cases = _cases(root)
    for fg_fraction in (0.5, 0.8):
        sampler = sampling.PatchSampler(cases, (9, 9, 9), fg_fraction=fg_fraction, seed=0)
        images, labels = sampler.sample(600)
        centre_fg = (labels[:, 4, 4, 4] > 0).mean()
        assert abs(centre_fg - fg_fraction) < 0.07
        assert (labels[~sampler.last["fg_centred"], 4, 4, 4] == 0).all()
        assert (images[~sampler.last["fg_centred"], :, 4, 4, 4] != 0).any(axis=1).all()
    state = json.loads(json.dumps(sampler.state()))
    first = sampler.sample(3)
    sampler.set_state(state)
    second = sampler.sample(3)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_label_patch_is_centred_in_the_image_patch(root):
    """DeepMedic: input 37^3, output 21^3. The label patch is the centre of what the same
    draw gives at full size; sizes that cannot be centred are rejected."""
    cases = _cases(root)
    full = sampling.PatchSampler(cases, (37, 37, 37), 0.5, seed=4)
    small = sampling.PatchSampler(cases, (37, 37, 37), 0.5, seed=4, label_patch=(21, 21, 21))
    images_full, labels_full = full.sample(6)
    images, labels = small.sample(6)
    assert images.shape == (6, 4, 37, 37, 37) and labels.shape == (6, 21, 21, 21)
    np.testing.assert_array_equal(images, images_full)
    np.testing.assert_array_equal(labels, labels_full[:, 8:29, 8:29, 8:29])
    with pytest.raises(ValueError, match="even difference"):
        sampling.PatchSampler(cases, (37, 37, 37), 0.5, seed=0, label_patch=(20, 21, 21))
    with pytest.raises(ValueError, match="even difference"):
        sampling.PatchSampler(cases, (16, 16, 16), 0.5, seed=0, label_patch=(18, 16, 16))


def _striped_case(n_channels=3, size=20) -> Case:
    """Channels c = (c + 1) x label + (c + 1) x 0.01 x depth index: a flip of only some
    channels, or of the image without the label, breaks the relation."""
    label = np.zeros((size,) * 3, np.uint8)
    label[5:9, 3:12, 6:8] = 1
    ramp = np.arange(size, dtype=np.float32)[:, None, None] * np.ones((size,) * 3, np.float32)
    image = np.stack([(c + 1) * (label + 0.01 * ramp) for c in range(n_channels)])
    return Case("striped", image.astype(np.float32), label, np.ones_like(label, bool),
                (1.0, 1.0, 1.0))


def test_flips_apply_to_every_channel_and_the_label_alike():
    """Regression test for the reference DeepMedic bug (flips of channel 0 only, A11)."""
    case = _striped_case()
    aug = augmentation.DeepMedicAugmentation(flip_prob=(0.5, 0.5, 0.5), shift_std=0,
                                             scale_std=0)
    sampler = sampling.PatchSampler([case], (11, 11, 11), 0.5, seed=2, augmentation=aug)
    images, labels = sampler.sample(64)
    assert sampler.last["augmented"].all()
    nonzero = images[:, 0] != 0
    for c in range(3):  # every channel flipped like channel 0
        np.testing.assert_allclose(images[:, c][nonzero] / images[:, 0][nonzero], c + 1,
                                   rtol=1e-6)
    ramp = images[:, 0] - labels  # only the depth ramp is left if the label flipped alike
    inside = images[:, 0] != 0
    pairs = inside[:, 1:] & inside[:, :-1]
    steps = np.diff(ramp, axis=1)
    np.testing.assert_allclose(np.abs(steps[pairs]), 0.01, atol=1e-5)
    orientation = {float(np.sign(steps[i][pairs[i]].mean())) for i in range(64) if pairs[i].any()}
    assert orientation == {-1.0, 1.0}  # both orientations occurred along the depth axis


def test_asymmetric_augmentation_gates_background_patches_only(root):
    """001 eq. 21: rare samples always augmented; background samples with probability
    bg_aug_prob (binomial 99.9 % interval over ~1000 of them); the same patches are drawn
    whatever bg_aug_prob is, so settings compare on identical data."""
    cases = _cases(root)
    draws = {}
    for p in (0.0, 0.25, 1.0):
        sampler = sampling.PatchSampler(cases, (9, 9, 9), 0.5, seed=11, augmentation="deepmedic",
                                        bg_aug_prob=p, rare=INFO.rare_vector(),
                                        rare_by="centre")
        _, labels = sampler.sample(2000)
        rare, augmented = sampler.last["rare"], sampler.last["augmented"]
        assert augmented[rare].all()
        share = augmented[~rare].mean()
        n = int((~rare).sum())
        assert abs(share - p) <= 3.3 * math.sqrt(p * (1 - p) / n) + 1e-12, (p, share, n)
        draws[p] = (sampler.last["case"], rare)
    np.testing.assert_array_equal(draws[0.0][0], draws[1.0][0])
    np.testing.assert_array_equal(draws[0.0][1], draws[1.0][1])


def test_rotation_by_pi_equals_two_flips_and_zoom_one_is_identity(root):
    """The spatial augmentation samples about the patch centre: rotating by 180 degrees about
    axis 0 is flipping axes 1 and 2; no zoom and no rotation is the plain crop."""
    case = _cases(root)[0]
    centre = np.array(case.label.shape) // 2
    site = augmentation.Site(case.image, case.label, centre, np.array([9, 9, 9]),
                             np.array([5, 5, 5]))
    image, label = site.crop()
    same_image, same_label = site.resample(np.eye(3))
    np.testing.assert_allclose(same_image, image, atol=1e-5)
    np.testing.assert_array_equal(same_label, label)
    rot_image, rot_label = site.resample(augmentation.rotation(np.array([np.pi, 0, 0])))
    np.testing.assert_allclose(rot_image, image[:, :, ::-1, ::-1], atol=1e-4)
    np.testing.assert_array_equal(rot_label, label[:, ::-1, ::-1])
    aug = augmentation.NnUNetAugmentation(p_scale=1, p_rotation=1)
    warped = sampling.PatchSampler([case], (9, 9, 9), 1.0, seed=0, augmentation=aug)
    images, labels = warped.sample(4)
    assert images.shape == (4, 4, 9, 9, 9) and set(np.unique(labels)) <= {0, 1}


def test_worker_threads_give_the_same_batches(root):
    """Cutting and augmenting patches in threads changes nothing: all random choices are made
    in order before the work is shared out (so resumed trials stay bit-exact)."""
    cases = _cases(root)
    batches = []
    for workers in (1, 3):
        sampler = sampling.PatchSampler(cases, (12, 12, 12), 0.5, seed=5, label_patch=(6, 6, 6),
                                        augmentation="nnunet", bg_aug_prob=0.5,
                                        workers=workers)
        batches.append([sampler.sample(6) for _ in range(3)])
        sampler.close()
    for (a_images, a_labels), (b_images, b_labels) in zip(*batches, strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)


@pytest.mark.parametrize("rare_by", ["any", "centre"])
@pytest.mark.parametrize("rare", [None, [0, 0, 1, 1], [0, 1, 0, 1], [1, 0, 0, 0], [0, 1, 1, 0]])
def test_rare_samples_are_judged_as_on_the_cut_label_patch(rare, rare_by):
    """Eq. 21's rare judgement, made on a view of the case (no patch is cut), equals its
    definition on the cut label patch (zero-padded outside the case): thresholds ("every
    foreground class"), scattered rare classes, a rare background, patches that reach outside
    a case (of blobs; nearly all class 2, where only the padding is background)."""
    rng = np.random.default_rng(4)
    blobs = np.zeros((14, 12, 10), np.uint8)
    for k in (1, 2, 3):  # a few blobs of each class, some near the borders
        for _ in range(2):
            c = rng.integers(0, blobs.shape)
            blobs[tuple(slice(max(0, x - 1), x + 2) for x in c)] = k
    full = np.full((14, 12, 10), 2, np.uint8)
    full[0, 0, 0] = 0  # the background voxel a background centre needs
    cases = [Case(case_id=str(i), image=rng.standard_normal((1, *label.shape), np.float32),
                  label=label, roi=np.ones(label.shape, bool), spacing=(1.0, 1.0, 1.0))
             for i, label in enumerate((blobs, full))]
    sampler = sampling.PatchSampler(cases, (9, 9, 9), 0.5, seed=2, label_patch=(5, 3, 7),
                                    rare=rare, rare_by=rare_by)
    table = np.asarray(rare if rare is not None else [0, 1, 1, 1], dtype=float) > 0.5
    _, labels = sampler.sample(400)
    by_class = table[labels]
    expected = (by_class[:, 2, 1, 3] if rare_by == "centre"
                else by_class.reshape(len(labels), -1).any(axis=1))
    np.testing.assert_array_equal(sampler.last["rare"], expected)
    assert 0 < expected.mean() < 1  # both kinds occurred


def test_planned_batches_cut_later_are_the_sampled_batches(root):
    """plan advances the generators as sample does; cutting the plans later, in another
    order, gives the very batches sample gives (what the prefetch threads rely on)."""
    cases = _cases(root)
    options = {"label_patch": (6, 6, 6), "augmentation": "nnunet", "bg_aug_prob": 0.5,
               "oversampling": "nnunet"}
    direct = sampling.PatchSampler(cases, (12, 12, 12), 0.33, seed=8, **options)
    planned = sampling.PatchSampler(cases, (12, 12, 12), 0.33, seed=8, **options)
    expected = [direct.sample(3) for _ in range(2)] + [direct.sample_deferred(3)[:2]]
    plans = [planned.plan(3) for _ in range(3)]
    assert planned.state() == direct.state()
    got = [planned.cut_deferred(plans[2])[:2], planned.cut(plans[1]), planned.cut(plans[0])]
    for (a_images, a_labels), (b_images, b_labels) in zip(expected, got[::-1], strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)


def test_cutting_into_recycled_memory_equals_cropping():
    """A box cut into memory full of stale values equals the zero-padded crop, inside the
    volume, across its borders and wholly outside it."""
    volume = np.random.default_rng(1).standard_normal((2, 7, 6, 5)).astype(np.float32)
    for start in ([1, 1, 1], [-3, 2, -1], [4, -2, 3], [-2, -2, -2], [9, 0, 0], [0, -5, 0]):
        out = np.full((2, 6, 5, 4), np.nan, np.float32)
        sampling.cut_into(volume, np.array(start), out)
        np.testing.assert_array_equal(
            out, augmentation.crop(volume, np.array(start), np.array([6, 5, 4])))


@pytest.mark.parametrize("stride", [1, 3, 5])
def test_a_strided_grid_cut_into_recycled_memory_is_centred_and_zero_padded(stride):
    """A grid cut into memory full of stale values (also a flipped view of it) holds the grid
    voxels inside the volume, zeros at grid voxels outside it and around the grid, inside the
    volume, across its borders and wholly outside it."""
    volume = np.random.default_rng(2).standard_normal((2, 12, 9, 10)).astype(np.float32)
    sides, size = np.array([5, 4, 3]), np.array([9, 6, 7])
    for start in ([1, 0, 2], [-4, 3, -6], [8, -2, 5], [-20, 0, 0], [0, 12, 0], [11, 8, 9]):
        expected = np.zeros((2, *size), np.float32)
        for index in np.ndindex(*sides):
            voxel = np.array(start) + stride * np.array(index)
            if ((voxel >= 0) & (voxel < volume.shape[1:])).all():
                expected[(slice(None), *((size - sides) // 2 + index))] = volume[
                    (slice(None), *voxel)]
        for axes in ((), (0, 2)):
            out = np.full((2, *size), np.nan, np.float32)
            sampling.cut_into(volume, start, np.flip(out, tuple(a - 3 for a in axes)), stride,
                              sides)
            np.testing.assert_array_equal(out, np.flip(expected, tuple(a + 1 for a in axes)))


@pytest.mark.parametrize("regime", ["none", "flips"])
def test_packed_pathway_grids_fill_recycled_memory(regime):
    """Packed pathway grids cut into memory full of stale values equal those cut into zeros:
    every voxel of the padding around each grid and of grid voxels outside the case is 0 (or,
    augmented, the shifted and scaled 0), for a case smaller than the grids too."""
    rng = np.random.default_rng(3)
    cases = []
    for shape in ((20, 18, 16), (7, 25, 5)):
        label = np.zeros(shape, np.uint8)
        label[3:5, 7:10, 1:4] = 1
        cases.append(Case(case_id="c", image=rng.standard_normal((2, *shape), np.float32),
                          label=label, roi=np.ones(shape, bool), spacing=(1.0, 1.0, 1.0)))
    pathways = [(1, (11, 11, 11)), (3, (7, 7, 7)), (5, (5, 5, 5))]
    augment = (augmentation.DeepMedicAugmentation(flip_prob=(0.5, 0.5, 0.5))
               if regime == "flips" else "none")
    batches = []
    for fill in (np.zeros, lambda shape, dtype: np.full(shape, np.nan if dtype.kind == "f" else 7,
                                                        dtype)):
        sampler = sampling.PatchSampler(cases, (11, 11, 11), 0.5, seed=6, label_patch=(5, 5, 5),
                                        pathways=pathways, augmentation=augment,
                                        bg_aug_prob=0.5)
        batches.append(sampler.cut(sampler.plan(16), fill))
    if regime == "flips":
        assert sampler.last["augmented"].any() and not sampler.last["augmented"].all()
    np.testing.assert_array_equal(batches[0][0], batches[1][0])
    np.testing.assert_array_equal(batches[0][1], batches[1][1])
