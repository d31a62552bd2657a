"""The nnunet regime applied to a batch on the training device (study.data.device_augmentation)
and the sampler's deferred batches (PatchSampler.sample_deferred), 001 §V-A.4, eq. 21."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from study.data import sampling
from study.data.augmentation import NnUNetAugmentation, Site, coarse_displacement, crop
from study.data.case import Case
from study.data.device_augmentation import BatchAugmenter, gaussian_blur

OFF = {f.name: 0.0 for f in dataclasses.fields(NnUNetAugmentation)
       if f.name.startswith("p_") and f.name != "p_blur_channel"}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _only(**probabilities) -> NnUNetAugmentation:
    return NnUNetAugmentation(**{**OFF, **probabilities})


def _draws(regime: NnUNetAugmentation, n_channels: int = 2, **fields):
    """One draw of ``regime`` with ``fields`` replaced."""
    d = regime.draw(np.random.default_rng(0), n_channels)
    return dataclasses.replace(d, **fields)


def _blocks(shape=(2, 2, 15, 13, 11), seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and labels of blocks of classes 0, 1, 2 and the ignore label -1."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    labels = torch.zeros((shape[0], *shape[2:]), dtype=torch.int64)
    labels[:, 3:9, 2:8, 4:10] = 1
    labels[:, 6:12, 5:11, 1:6] = 2
    labels[:, 1:4, 9:12, 7:10] = -1
    return images, labels


def _cases() -> list[Case]:
    cases = []
    for k in range(3):
        label = np.zeros((28, 26, 24), np.uint8)
        label[8:18, 6:16, 8:18] = 1
        label[12 + k:15 + k, 10:13, 11:14] = 2
        noise = np.random.default_rng(k).standard_normal((1, 28, 26, 24))
        image = (ndimage.gaussian_filter(noise, (0, 2, 2, 2)) * 5 + label).astype(np.float32)
        cases.append(Case(f"c{k}", image, label, np.ones(label.shape, bool), (1.0, 1.0, 1.0)))
    return cases


def _apply(regime, draws, images, labels, patch=None, label_patch=None):
    patch = np.asarray(patch if patch is not None else images.shape[2:])
    label_patch = patch if label_patch is None else np.asarray(label_patch)
    deferred = regime.defer(draws, patch, label_patch)
    return BatchAugmenter(3, regime).apply(images, labels, deferred)


@pytest.mark.parametrize("device", DEVICES)
def test_identity_parameters_reproduce_the_input(device):
    """Not augmented (eq. 21) or no transform drawn: the centre of the region, exactly; a
    resampling with M = I and no displacement: labels exactly, the image to float rounding."""
    images, labels = _blocks()
    images, labels = images.to(device), labels.to(device)
    regime = _only()
    patch, label_patch = np.array([11, 9, 7]), np.array([7, 5, 5])
    inner = (slice(2, 13), slice(2, 11), slice(2, 9))
    inner_label = (slice(4, 11), slice(4, 9), slice(3, 8))
    none = regime.draw(np.random.default_rng(0), 2)
    assert not none.spatial and not none.mirror_axes
    out, out_labels = _apply(regime, [None, none], images, labels, patch, label_patch)
    assert out.shape == (2, 2, 11, 9, 7) and out_labels.shape == (2, 7, 5, 5)
    assert out_labels.dtype == torch.int64 and out.dtype == torch.float32
    assert torch.equal(out, images[(slice(None), slice(None), *inner)])
    assert torch.equal(out_labels, labels[(slice(None), *inner_label)])
    identity = dataclasses.replace(none, angles=np.zeros(3))
    assert identity.spatial
    out, out_labels = _apply(regime, [identity] * 2, images, labels, patch, label_patch)
    torch.testing.assert_close(out, images[(slice(None), slice(None), *inner)], atol=1e-5,
                               rtol=0)
    assert torch.equal(out_labels, labels[(slice(None), *inner_label)])  # ignore label kept


@pytest.mark.parametrize("device", DEVICES)
def test_quarter_turns_and_mirroring_match_numpy(device):
    """A rotation by 90 degrees about axis a is np.rot90 in the other two axes (about the
    centre voxel of an odd patch; axes (j, i): out[q] = in[M q]); mirroring is np.flip."""
    images, labels = _blocks((1, 2, 9, 9, 9))
    regime = _only()
    base = regime.draw(np.random.default_rng(0), 2)
    for axis in range(3):
        angles = np.zeros(3)
        angles[axis] = np.pi / 2
        i, j = [a for a in range(3) if a != axis]
        out, out_labels = _apply(regime, [dataclasses.replace(base, angles=angles)],
                                 images.to(device), labels.to(device))
        want = np.rot90(images.numpy(), 1, axes=(j + 2, i + 2)).copy()
        np.testing.assert_allclose(out.cpu().numpy(), want, atol=1e-4)
        want_labels = np.rot90(labels.numpy(), 1, axes=(j + 1, i + 1))
        np.testing.assert_array_equal(out_labels.cpu().numpy(), want_labels)
    for axes in ((0,), (1, 2), (0, 1, 2)):
        out, out_labels = _apply(regime, [dataclasses.replace(base, mirror_axes=axes)],
                                 images.to(device), labels.to(device))
        np.testing.assert_array_equal(out.cpu().numpy(),
                                      np.flip(images.numpy(), [a + 2 for a in axes]))
        np.testing.assert_array_equal(out_labels.cpu().numpy(),
                                      np.flip(labels.numpy(), [a + 1 for a in axes]))


def test_labels_stay_in_the_label_set_and_the_ignore_label_wins():
    """Rotated, scaled and deformed labels hold only 0, 1, 2 and the ignore label, which is
    resampled like a class (a border between class 2 and ignored voxels stays put) or, with
    ``ignore_index=None``, not at all (background)."""
    images, labels = _blocks((4, 1, 15, 13, 11))
    augmenter = BatchAugmenter(3, _only(p_rotation=1, p_scale=1, p_elastic=1), seed=3)
    for _ in range(3):
        _, out = augmenter(images, labels, torch.ones(4, dtype=torch.bool))
        assert set(out.unique().tolist()) <= {-1, 0, 1, 2}
        assert (out == -1).any() and (out == 2).any()
    labels = torch.zeros(1, 4, 4, 4, dtype=torch.int64)
    labels[0, :, :2] = 2
    labels[0, :, 2:] = -1
    regime = _only()
    shift = dataclasses.replace(regime.draw(np.random.default_rng(0), 1), scale=0.999)
    _, out = _apply(regime, [shift], torch.zeros(1, 1, 4, 4, 4), labels)
    assert torch.equal(out, labels)
    no_ignore = BatchAugmenter(3, regime, ignore_index=None)
    _, out = no_ignore.apply(torch.zeros(1, 1, 4, 4, 4), labels,
                             regime.defer([shift], [4, 4, 4], [4, 4, 4]))
    assert set(out.unique().tolist()) == {0, 2}  # without an ignore label -1 is background


def test_the_region_holds_every_voxel_the_transform_reads():
    """Deferred.region: the largest scaling, any rotation and a strong elastic displacement
    read only inside the cut region (a case of ones: the output has no padded zero)."""
    regime = _only(p_rotation=1, p_scale=1, p_elastic=1)
    rng = np.random.default_rng(4)
    for _ in range(6):
        d = regime.draw(rng, 1)
        d = dataclasses.replace(d, scale=1.25, elastic=(900.0, 9.0),
                                angles=rng.choice([-1, 1], 3) * np.deg2rad(15))
        deferred = regime.defer([d], [12, 10, 8], [12, 10, 8])
        region = deferred.region
        assert (region > [12, 10, 8]).all()
        out, _ = BatchAugmenter(2, regime).apply(
            torch.ones(1, 1, *region), torch.zeros(1, *region, dtype=torch.uint8), deferred)
        assert out.min() > 0.999  # gamma etc. are off: every read voxel was a 1
    plain = regime.defer([None, None], [12, 10, 8], [12, 10, 8])
    np.testing.assert_array_equal(plain.region, [12, 10, 8])  # nothing to reach: no margin


def test_coarse_elastic_field_has_nnunets_amplitude_and_smoothness():
    """alpha, sigma converted: away from the patch border the upsampled coarse field has the
    root mean square of nnU-Net's full-resolution smoothed U[-1, 1] noise,
    alpha sqrt(1/3) (4 pi)^-3/4 sigma^-3/2 (10 %), and its correlation at a lag of sigma
    voxels, exp(-1/4) (0.06)."""
    patch = np.array([80, 80, 80])
    for alpha, sigma in ((900.0, 9.0), (500.0, 13.0)):
        theory = alpha * math.sqrt(1 / 3) * (4 * math.pi) ** -0.75 * sigma ** -1.5
        border = int(2 * sigma)
        inner = (slice(None),) + (slice(border, 80 - border),) * 3
        fields = np.stack([torch.nn.functional.interpolate(
            torch.from_numpy(coarse_displacement(alpha, sigma, seed, patch))[None],
            size=tuple(patch), mode="trilinear", align_corners=True)[0].numpy()[inner]
            for seed in range(8)])
        power = (fields ** 2).mean()
        assert abs(math.sqrt(power) / theory - 1) < 0.1, (math.sqrt(power), theory)
        lag = int(sigma)
        corr = (fields[:, :, :-lag] * fields[:, :, lag:]).mean() / power
        assert abs(corr - math.exp(-lag ** 2 / (4 * sigma ** 2))) < 0.06, corr


def test_the_same_draws_give_the_cpu_regimes_patch():
    """The intensity transforms equal the CPU regime's (same draws; noise aside); rotation and
    scaling agree with its cubic / per-class-linear resampling up to the interpolation."""
    cases = _cases()
    case = cases[0]
    centre = np.array([14, 13, 12])
    patch = np.array([15, 13, 11])
    site = Site(case.image, case.label, centre, patch, patch)
    image, label = site.crop()
    intensity = _only(p_blur=1, p_brightness=1, p_contrast=1, p_gamma=1, p_inverted_gamma=1,
                      p_mirror=0.5)
    rng = np.random.default_rng(5)
    for _ in range(4):
        d = intensity.draw(rng, 1)
        want, want_label = intensity.apply(d, site, image, label)
        got, got_label = _apply(intensity, [d], torch.from_numpy(image[None]),
                                torch.from_numpy(label[None]))
        np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(got_label[0].numpy(), want_label)
    spatial = _only(p_rotation=1, p_scale=1)
    for _ in range(4):
        d = spatial.draw(rng, 1)
        want, want_label = spatial.apply(d, site, image, label)
        deferred = spatial.defer([d], patch, patch)
        region = deferred.region
        start = centre - region // 2
        got, got_label = BatchAugmenter(3, spatial).apply(
            torch.from_numpy(crop(case.image, start, region)[None]),
            torch.from_numpy(crop(case.label[None], start, region)), deferred)
        assert (got_label[0].numpy() == want_label).mean() > 0.97
        assert np.corrcoef(got[0].numpy().ravel(), want.ravel())[0, 1] > 0.97


def test_deferred_batches_keep_the_samplers_centres_gates_and_state():
    """sample_deferred draws what sample draws (centres, eq. 21's gates); samples left alone
    come out as sample cuts them; the state resumes the deferred pipeline bit-exactly; the
    region is cut around the same centres."""
    cases = _cases()
    options = {"augmentation": NnUNetAugmentation(), "bg_aug_prob": 0.3, "rare": [0, 0, 1],
               "oversampling": "nnunet"}
    cpu = sampling.PatchSampler(cases, (12, 10, 8), 0.33, seed=5, **options)
    deferred = sampling.PatchSampler(cases, (12, 10, 8), 0.33, seed=5, workers=2, **options)
    augmenter = BatchAugmenter(3, options["augmentation"])
    for _ in range(8):
        images, labels = cpu.sample(4)
        region_images, region_labels, d = deferred.sample_deferred(4)
        for key in ("case", "centre", "rare", "augmented"):
            np.testing.assert_array_equal(cpu.last[key], deferred.last[key])
        assert region_images.shape == (4, 1, *d.region)
        assert region_labels.shape == (4, *d.region) and region_labels.dtype == np.uint8
        out, out_labels = augmenter.apply(torch.from_numpy(region_images),
                                          torch.from_numpy(region_labels), d)
        alone = ~deferred.last["augmented"]
        np.testing.assert_array_equal(out.numpy()[alone], images[alone])
        np.testing.assert_array_equal(out_labels.numpy()[alone], labels[alone])
        assert [x is None for x in d.draws] == alone.tolist()
    state = json.loads(json.dumps(deferred.state()))
    first = [augmenter.apply(*map(torch.from_numpy, b[:2]), b[2])
             for b in (deferred.sample_deferred(2) for _ in range(3))]
    deferred.set_state(state)
    second = [augmenter.apply(*map(torch.from_numpy, b[:2]), b[2])
              for b in (deferred.sample_deferred(2) for _ in range(3))]
    deferred.close()
    for (a, a_labels), (b, b_labels) in zip(first, second, strict=True):
        assert torch.equal(a, b) and torch.equal(a_labels, b_labels)
    with pytest.raises(ValueError, match="expected the nnunet regime, got 'deepmedic'"):
        sampling.PatchSampler(cases, (8, 8, 8), 0.5, seed=0,
                              augmentation="deepmedic").sample_deferred(2)


def test_the_augmenters_own_draws_are_nnunets_and_reproducible():
    """Direct calls draw from the augmenter's generator: the same seed, the same batch; the
    share of changed samples is nnU-Net's (1 - product of the 'off' probabilities, where
    every transform changes a patch), and samples with apply False are never changed."""
    images, labels = _blocks((64, 1, 9, 9, 9))
    apply = torch.arange(64) % 4 != 0
    a, b = BatchAugmenter(3, seed=7), BatchAugmenter(3, seed=7)
    out_a, labels_a = a(images, labels, apply)
    out_b, labels_b = b(images, labels, apply)
    assert torch.equal(out_a, out_b) and torch.equal(labels_a, labels_b)
    changed = []
    for _ in range(8):
        out, _ = a(images, labels, apply)
        same = (out == images).flatten(1).all(dim=1)
        assert same[~apply].all()
        changed.append(~same[apply])
    changed = torch.cat(changed).float()
    r = NnUNetAugmentation()
    p_off = ((1 - r.p_elastic) * (1 - r.p_rotation) * (1 - r.p_scale) * (1 - r.p_noise)
             * (1 - r.p_blur * (1 - (1 - r.p_blur_channel))) * (1 - r.p_brightness)
             * (1 - r.p_contrast) * (1 - r.p_inverted_gamma) * (1 - r.p_gamma)
             * (1 - r.p_mirror) ** 3)
    n = len(changed)
    assert abs(changed.mean() - (1 - p_off)) < 3.3 * math.sqrt(p_off * (1 - p_off) / n)
    state = json.loads(json.dumps(a.state()))
    with pytest.raises(ValueError, match="expected images"):
        a(images, labels[:, :8], apply)
    again = a(images, labels, apply)
    a.set_state(state)
    assert torch.equal(a(images, labels, apply)[0], again[0])
    with pytest.raises(ValueError, match="expected the nnunet regime"):
        BatchAugmenter(3, "deepmedic")


def test_blur_is_scipys_gaussian_filter():
    volume = torch.from_numpy(np.random.default_rng(8).standard_normal((9, 3, 12)))
    for sigma in (0.5, 0.8, 1.0):
        np.testing.assert_allclose(gaussian_blur(volume.float(), sigma).numpy(),
                                   ndimage.gaussian_filter(volume.numpy(), sigma), atol=1e-5)
