"""Augmentation regimes (001 §V-A.1/2/4), eq. 21's gate on them and nnU-Net's foreground
oversampling (study.data.augmentation, study.data.sampling)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from study.data import augmentation, sampling
from study.data.augmentation import DeepMedicAugmentation, NnUNetAugmentation, Site
from study.data.case import Case

Z = 3.3  # two-sided 99.9 % normal quantile, for binomial intervals


def _within(successes: int, n: int, p: float) -> bool:
    return abs(successes / n - p) <= Z * math.sqrt(p * (1 - p) / n) + 1e-12


def _case(image: np.ndarray, label: np.ndarray, name: str = "case", margin: int = 0) -> Case:
    """A case whose region of interest leaves ``margin`` voxels at every border."""
    roi = np.zeros(label.shape, bool)
    roi[tuple(slice(margin, n - margin) for n in label.shape)] = True
    return Case(name, image.astype(np.float32), label.astype(np.uint8), roi, (1.0, 1.0, 1.0))


def _ramp_case(size: int = 30, n_channels: int = 2) -> Case:
    """Channel c = (c + 1) (z + 2 y + 4 x + 1) + 1000 label, label = a block: increasing
    along every axis, so a flip of an axis turns its slope negative, and the label can be
    read back from any channel. Centres lie 5 voxels or more inside (no padding in 9^3)."""
    z, y, x = np.indices((size,) * 3, dtype=np.float32)
    label = np.zeros((size,) * 3, np.uint8)
    label[10:20, 8:22, 12:18] = 1
    base = z + 2 * y + 4 * x + 1
    image = np.stack([(c + 1) * base + 1000.0 * label for c in range(n_channels)])
    return _case(image, label, margin=5)


def _slopes(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Sign of the mean slope along each spatial axis, [B, C, 3], over neighbours of one
    label (the label term then cancels)."""
    out = []
    for a in range(3):
        same = np.diff(labels, axis=a + 1) == 0
        steps = np.diff(images, axis=a + 2) * same[:, None]
        out.append(np.sign(steps.sum(axis=(2, 3, 4))))
    return np.stack(out, axis=-1)


def _only(**probabilities) -> NnUNetAugmentation:
    """The nnU-Net regime with every transform off except those given."""
    off = {f.name: 0.0 for f in NnUNetAugmentation.__dataclass_fields__.values()
           if f.name.startswith("p_") and f.name != "p_blur_channel"}
    return NnUNetAugmentation(**{**off, **probabilities})


# ------------------------------------------------------------------------------ regimes

def test_regime_names_and_errors():
    assert augmentation.REGIMES == ("none", "deepmedic", "nnunet")
    assert [augmentation.regime(n).name for n in augmentation.REGIMES] == list(
        augmentation.REGIMES)
    custom = DeepMedicAugmentation(flip_prob=(0.5, 0.5, 0.5))
    assert augmentation.regime(custom) is custom
    with pytest.raises(ValueError, match="expected one of none, deepmedic, nnunet"):
        augmentation.regime("elastic")
    with pytest.raises(ValueError, match="flip_prob"):
        DeepMedicAugmentation(flip_prob=(0.5, 1.5, 0))
    with pytest.raises(ValueError, match="p_gamma"):
        NnUNetAugmentation(p_gamma=2.0)
    with pytest.raises(ValueError, match="oversampling"):
        sampling.PatchSampler([_ramp_case()], (9, 9, 9), 0.5, seed=0, oversampling="uniform")


def test_none_is_the_identity():
    """001 BRATS: patches exactly as cut, nothing flagged as augmented, whatever the gate."""
    case = _ramp_case()
    plain = sampling.PatchSampler([case], (9, 9, 9), 0.5, seed=3)
    none = sampling.PatchSampler([case], (9, 9, 9), 0.5, seed=3, augmentation="none",
                                 bg_aug_prob=1.0)
    for _ in range(3):
        a, b = plain.sample(8), none.sample(8)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not none.last["augmented"].any()
    images, labels = b
    for image, label, start in zip(images, labels, none.last["centre"] - 4, strict=True):
        inside = tuple(slice(s, s + 9) for s in start)
        if (start >= 0).all() and (start + 9 <= 30).all():
            np.testing.assert_array_equal(image, case.image[(slice(None), *inside)])
            np.testing.assert_array_equal(label, case.label[inside])


def test_deepmedic_flips_only_the_left_right_axis_of_every_channel_and_the_label():
    """001 §V-A.2: flipping in the sagittal plane with probability 0.5 — array axis 2 (W)
    only, over 200 patches axes 0 and 1 never; every channel and the label flip alike."""
    case = _ramp_case()
    sampler = sampling.PatchSampler([case], (9, 9, 9), 0.5, seed=7, augmentation="deepmedic")
    images, labels = sampler.sample(200)
    assert sampler.last["augmented"].all()  # bg_aug_prob = 1: plain symmetric augmentation
    slopes = _slopes(images, labels)
    assert (slopes[:, :, :2] == 1).all()  # axes 0 and 1 never flipped
    flipped = slopes[:, 0, 2] == -1
    assert (slopes[:, :, 2] == slopes[:, :1, 2]).all()  # every channel like channel 0
    assert _within(int(flipped.sum()), 200, 0.5), flipped.mean()
    for c in range(2):  # the label flipped with the image: it is readable from each channel
        np.testing.assert_array_equal(images[:, c] > 500, labels == 1)


def test_deepmedic_intensity_is_a_shift_and_a_scale_per_channel():
    """I' = (I + shift) * mult, shift ~ N(0, 0.05), mult ~ N(1, 0.01), drawn per channel."""
    regime = DeepMedicAugmentation()
    rng = np.random.default_rng(0)
    draws = [regime.draw(rng, 3) for _ in range(4000)]
    shift = np.array([d.shift for d in draws])
    mult = np.array([d.mult for d in draws])
    np.testing.assert_allclose(shift.std(axis=0), 0.05, rtol=0.06)
    np.testing.assert_allclose(mult.std(axis=0), 0.01, rtol=0.06)
    np.testing.assert_allclose(shift.mean(axis=0), 0, atol=0.004)
    np.testing.assert_allclose(mult.mean(axis=0), 1, atol=0.001)
    assert abs(np.corrcoef(shift[:, 0], shift[:, 1])[0, 1]) < 0.06  # independent channels
    case = _ramp_case(n_channels=3)
    site = Site(case.image, case.label, np.array([15, 15, 15]), np.array([9, 9, 9]),
                np.array([9, 9, 9]))
    image, label = site.crop()
    unflipped = next(d for d in draws if not d.flip_axes)
    out, out_label = regime.apply(unflipped, site, image, label)
    expected = (image + unflipped.shift[:, None, None, None]) * unflipped.mult[:, None, None,
                                                                               None]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(out_label, label)


def test_nnunet_transform_probabilities_and_ranges():
    """nnU-Net v1's probabilities per patch (binomial 99.9 % intervals over 4000 draws) and
    the ranges of its uniform draws; the two-sided draws fall below 1 half of the time."""
    regime = NnUNetAugmentation()
    rng = np.random.default_rng(1)
    draws = [regime.draw(rng, 2) for _ in range(4000)]
    n = len(draws)
    expected = {"elastic": 0.2, "angles": 0.2, "scale": 0.2, "noise_std": 0.1, "blur": 0.2,
                "brightness": 0.15, "contrast": 0.15, "inverted_gamma": 0.1, "gamma": 0.3}
    for key, p in expected.items():
        count = sum(getattr(d, key) is not None for d in draws)
        assert _within(count, n, p), (key, count / n)
    for axis in range(3):
        assert _within(sum(axis in d.mirror_axes for d in draws), n, 0.5)
    elastic = np.array([d.elastic for d in draws if d.elastic is not None])
    assert (elastic[:, 0] >= 0).all() and (elastic[:, 0] <= 900).all()
    assert (elastic[:, 1] >= 9).all() and (elastic[:, 1] <= 13).all()
    angles = np.array([d.angles for d in draws if d.angles is not None])
    assert (np.abs(angles) <= np.deg2rad(15)).all() and (angles != 0).all()  # all 3 axes
    scales = np.array([d.scale for d in draws if d.scale is not None])
    assert (scales >= 0.85).all() and (scales <= 1.25).all()
    assert _within(int((scales < 1).sum()), len(scales), 0.5)
    blur = np.concatenate([d.blur for d in draws if d.blur is not None])
    assert _within(int((blur > 0).sum()), len(blur), 0.5)  # each channel with p 0.5
    assert (blur[blur > 0] >= 0.5).all() and (blur <= 1).all()
    gammas = np.concatenate([d.gamma for d in draws if d.gamma is not None])
    assert (gammas >= 0.7).all() and (gammas <= 1.5).all()
    assert _within(int((gammas < 1).sum()), len(gammas), 0.5)
    noise = np.array([d.noise_std for d in draws if d.noise_std is not None])
    assert (noise >= 0).all() and (noise <= 0.1).all()


def _sphere_case(size: int = 48, radius: float = 9.0) -> Case:
    grid = np.indices((size,) * 3) - size // 2
    label = ((grid ** 2).sum(axis=0) <= radius ** 2).astype(np.uint8)
    label[size // 2 - 2:size // 2 + 3, size // 2 - 2:size // 2 + 3, size // 2 + 3:] = 2
    return _case(label[None].astype(np.float32), label)


def test_nnunet_rotation_and_scaling_resample_image_and_label_together():
    """A rotation keeps a centred sphere's volume; scaling by s (> 1 samples a wider region)
    divides it by s^3; image and label stay aligned and labels stay in the original set."""
    case = _sphere_case()
    site = Site(case.image, case.label, np.array([24, 24, 24]), np.array([33, 33, 33]),
                np.array([33, 33, 33]))
    image, label = site.crop()
    volume = int((label == 1).sum())
    rng = np.random.default_rng(2)
    for regime, key in ((_only(p_rotation=1), "angles"), (_only(p_scale=1), "scale")):
        for _ in range(4):
            draws = regime.draw(rng, 1)
            assert getattr(draws, key) is not None
            out, out_label = regime.apply(draws, site, image, label)
            factor = 1.0 if key == "angles" else draws.scale ** -3
            assert abs((out_label == 1).sum() / (volume * factor) - 1) < 0.04, (key, draws)
            assert set(np.unique(out_label)) <= {0, 1, 2}
            agree = ((out[0] > 0.5) == (out_label > 0)).mean()
            assert agree > 0.99


def test_label_resampling_equals_per_class_interpolation_over_the_whole_case():
    """Each class is interpolated only where its voxels reach; the result is batchgenerators'
    per-class linear interpolation over the whole grid (reference computed here directly)."""
    from scipy import ndimage

    label = np.zeros((30, 34, 38), np.uint8)
    label[5:14, 6:20, 8:20] = 1
    label[18:26, 14:28, 20:32] = 1
    label[8:11, 10:14, 11:15] = 2
    rng = np.random.default_rng(3)
    for trial in range(6):
        patch = np.array([17, 21, 23])
        label_patch = patch - 2 * rng.integers(0, 4, 3)
        centre = rng.integers(0, label.shape)
        site = Site(label[None].astype(np.float32), label, centre, patch, label_patch)
        matrix = augmentation.rotation(rng.uniform(-0.3, 0.3, 3)) * rng.uniform(0.85, 1.25)
        grid = np.indices(tuple(patch)).astype(float) - (patch // 2)[:, None, None, None]
        displacement = None
        if trial % 2:
            displacement = np.stack([ndimage.gaussian_filter(rng.uniform(-1, 1, tuple(patch)),
                                                             4) * 200 for _ in range(3)])
            displacement = displacement.astype(np.float32)
            grid += displacement
        _, got = site.resample(matrix, displacement)
        lo = (patch - label_patch) // 2
        inner = (slice(None),) + tuple(slice(a, a + n) for a, n in zip(lo, label_patch,
                                                                        strict=True))
        coords = (np.tensordot(matrix, grid, axes=1) + centre[:, None, None, None])[inner]
        want = np.zeros(tuple(label_patch), np.uint8)
        for value in (1, 2):
            indicator = (label == value).astype(float)
            want[ndimage.map_coordinates(indicator, coords, order=1, cval=0.0) >= 0.5] = value
        np.testing.assert_array_equal(got, want)


def test_nnunet_elastic_deformation_keeps_labels_and_moves_voxels():
    """Elastic deformation (alpha U[0, 900], sigma U[9, 13]) moves voxels: at alpha 900, sigma
    9 the smoothed noise displaces them by about 3 voxels (std), so the sphere changes shape;
    labels stay in the original set and image and label stay aligned."""
    case = _sphere_case()
    site = Site(case.image, case.label, np.array([24, 24, 24]), np.array([33, 33, 33]),
                np.array([33, 33, 33]))
    image, label = site.crop()
    regime = _only(p_elastic=1)
    draws = regime.draw(np.random.default_rng(5), 1)
    draws = type(draws)(**{**vars(draws), "elastic": (900.0, 9.0)})
    out, out_label = regime.apply(draws, site, image, label)
    assert set(np.unique(out_label)) <= {0, 1, 2}
    assert (out_label != label).mean() > 0.01
    assert ((out[0] > 0.5) == (out_label > 0)).mean() > 0.99


def test_nnunet_mirrors_all_three_axes_with_probability_one_half():
    case = _ramp_case()
    regime = _only(p_mirror=0.5)
    sampler = sampling.PatchSampler([case], (9, 9, 9), 0.5, seed=4, augmentation=regime)
    images, labels = sampler.sample(300)
    slopes = _slopes(images, labels)
    assert (slopes == slopes[:, :1]).all()  # every channel alike
    for axis in range(3):
        assert _within(int((slopes[:, 0, axis] == -1).sum()), 300, 0.5)
    np.testing.assert_array_equal(images[:, 0] > 500, labels == 1)


def test_nnunet_intensity_transforms_follow_batchgenerators():
    """Contrast keeps each channel inside its range, gamma keeps its std (retain_stats),
    brightness multiplies each channel, noise adds a Gaussian of the drawn std."""
    rng = np.random.default_rng(6)
    image = rng.standard_normal((2, 16, 16, 16)).astype(np.float32)
    label = np.zeros((16, 16, 16), np.uint8)
    site = Site(image, label, np.array([8, 8, 8]), np.array([16, 16, 16]),
                np.array([16, 16, 16]))
    for name, regime in (("contrast", _only(p_contrast=1)), ("gamma", _only(p_gamma=1)),
                         ("inverted_gamma", _only(p_inverted_gamma=1)),
                         ("brightness", _only(p_brightness=1)), ("noise", _only(p_noise=1))):
        draws = regime.draw(rng, 2)
        out, _ = regime.apply(draws, site, image, label)
        for c in range(2):
            x, y = image[c], out[c]
            if name == "contrast":
                assert x.min() <= y.min() and y.max() <= x.max()
                assert not np.allclose(x, y)
            elif name.endswith("gamma"):
                np.testing.assert_allclose(y.std(), x.std(), rtol=1e-4)
            elif name == "brightness":
                np.testing.assert_allclose(y, x * draws.brightness[c], rtol=1e-6)
            else:
                assert abs((y - x).std() / draws.noise_std - 1) < 0.05


# ------------------------------------------------------------------------------ eq. 21

def _two_class_cases() -> list[Case]:
    cases = []
    for k in range(3):
        label = np.zeros((24, 24, 24), np.uint8)
        label[8:18, 6:16, 8:18] = 1
        label[12 + k:14 + k, 10:12, 11:13] = 2
        image = np.random.default_rng(k).standard_normal((1, 24, 24, 24))
        cases.append(_case(image, label, f"c{k}"))
    return cases


def test_eq21_gate_on_the_nnunet_regime():
    """Rare samples always augmented, the others with probability bg_aug_prob; p = 0 and
    p = 1 see the same centres and augment a patch both augment identically."""
    cases = _two_class_cases()
    runs = {}
    for p in (0.0, 0.3, 1.0):
        sampler = sampling.PatchSampler(cases, (8, 8, 8), 0.5, seed=9, augmentation=_only(
            p_mirror=0.5, p_brightness=0.5, p_noise=0.5), bg_aug_prob=p, rare=[0, 0, 1])
        images, _ = sampler.sample(600)
        rare, augmented = sampler.last["rare"], sampler.last["augmented"]
        assert rare.any() and (~rare).any()
        assert augmented[rare].all()
        assert _within(int(augmented[~rare].sum()), int((~rare).sum()), p)
        runs[p] = (sampler.last["centre"], rare, images)
    np.testing.assert_array_equal(runs[0.0][0], runs[1.0][0])
    rare = runs[0.0][1]
    np.testing.assert_array_equal(runs[0.0][2][rare], runs[1.0][2][rare])


# ------------------------------------------------------------------------ oversampling

def test_nnunet_oversampling_forces_the_last_samples_of_a_batch():
    """get_do_oversample: sample i forced iff not i < round(B (1 - 0.33)); a forced sample is
    centred on a voxel of a class chosen uniformly among those present (class 2 has 8 voxels,
    class 1 992); the others are random crops inside the case."""
    cases = _two_class_cases()
    sampler = sampling.PatchSampler(cases, (8, 8, 8), 0.33, seed=1, oversampling="nnunet")
    centre_class = []
    for _ in range(600):
        _, labels = sampler.sample(2)
        assert sampler.last["fg_centred"].tolist() == [False, True]
        centre_class.append(labels[1, 4, 4, 4])
        start = sampler.last["centre"][0] - 4
        assert (start >= 0).all() and (start <= 24 - 8).all()
    centre_class = np.array(centre_class)
    assert (centre_class > 0).all()
    assert _within(int((centre_class == 2).sum()), 600, 0.5)
    for batch, forced in ((1, []), (3, [2]), (4, [3]), (6, [4, 5])):
        sampler.sample(batch)
        assert np.flatnonzero(sampler.last["fg_centred"]).tolist() == forced


def test_nnunet_random_crops_are_uniform_and_forced_crops_stay_in_the_case():
    """Random crops start uniformly in 0 .. shape - patch (a case smaller than the patch sits
    in its middle); a forced crop whose voxel lies near the low border starts at 0."""
    label = np.zeros((20, 20, 6), np.uint8)
    label[1, 1, 1] = 1
    case = _case(np.ones((1, 20, 20, 6)), label)
    sampler = sampling.PatchSampler([case], (8, 8, 10), 0.5, seed=2, oversampling="nnunet")
    starts = []
    for _ in range(400):
        sampler.sample(2)
        random, forced = sampler.last["centre"] - np.array([4, 4, 5])
        starts.append(random)
        np.testing.assert_array_equal(forced, [0, 0, -2])
    starts = np.array(starts)
    assert starts[:, :2].min() == 0 and starts[:, :2].max() == 12
    counts = np.bincount(starts[:, 0], minlength=13)
    assert counts.min() > 10  # every start position occurs (400 / 13 expected each)
    assert (starts[:, 2] == -2).all()  # 6 voxels centred in 10


# ----------------------------------------------------------------------------- resume

def test_state_resumes_the_nnunet_pipeline_bit_exactly():
    cases = _two_class_cases()
    aug = NnUNetAugmentation(p_elastic=0.5, p_noise=0.5)
    sampler = sampling.PatchSampler(cases, (12, 12, 12), 0.33, seed=5, augmentation=aug,
                                    bg_aug_prob=0.5, oversampling="nnunet", workers=2)
    sampler.sample(2)
    state = json.loads(json.dumps(sampler.state()))
    first = [sampler.sample(2) for _ in range(4)]
    sampler.set_state(state)
    second = [sampler.sample(2) for _ in range(4)]
    sampler.close()
    for (a_images, a_labels), (b_images, b_labels) in zip(first, second, strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)


def test_every_regime_a_study_may_name_exists():
    """The study files' regime names (study.catalog) are exactly the regimes built here."""
    from study.catalog import AUGMENTATION_REGIMES
    from study.data.augmentation import regime

    assert [regime(name).name for name in AUGMENTATION_REGIMES] == list(AUGMENTATION_REGIMES)
    with pytest.raises(ValueError, match="expected one of none, deepmedic, nnunet"):
        regime("elastic")


def test_per_class_sampling_draws_every_class_alike():
    """``oversampling="per_class"`` (DeepMedic's per-class scheme): background and each
    foreground class present are patch centres equally often, however few voxels a class
    has, and a class is drawn only from cases that hold it."""
    label = np.zeros((20, 20, 20), np.uint8)
    label[2:12, 2:12, 2:12] = 1  # a large class
    label[15, 15, 15] = 2  # a one-voxel class
    other = np.zeros_like(label)
    other[5:8, 5:8, 5:8] = 3  # a class only the second case has
    cases = [Case(f"c{i}", np.zeros((1, 20, 20, 20), np.float32), lab, np.ones_like(lab, bool),
                  (1.0, 1.0, 1.0)) for i, lab in enumerate((label, other))]
    sampler = sampling.PatchSampler(cases, (5, 5, 5), 0.5, seed=0, oversampling="per_class")
    counts = np.zeros(4)
    for _ in range(500):
        sampler.sample(4)
        for index, centre in zip(sampler.last["case"], sampler.last["centre"], strict=True):
            k = int(cases[index].label[tuple(centre)])
            counts[k] += 1
            assert k != 3 or index == 1
    assert np.all(np.abs(counts / counts.sum() - 0.25) < 0.03), counts
