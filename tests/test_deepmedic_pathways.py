"""DeepMedic's packed pathway inputs (001 §V-A.1/2): the sampler cuts each pathway's input at its
own resolution, and the model fed the packing gives exactly the logits of the former
single-context model (every pathway cut out of one ``output + 2 margin`` neighbourhood)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from study.data import sampling
from study.data.augmentation import DeepMedicAugmentation
from study.data.case import Case
from study.inference import dense_tiling_logits
from study.models.deepmedic import DeepMedic
from study.models.presets import DEEPMEDIC_PRESETS as PRESETS
from study.models.presets import DeepMedicConfig, context_margin

# the papers' geometry (8 layers, x3 and x5 pathways, 3^3 first FC kernel) at a CPU width
NARROW_PAPER = DeepMedicConfig((2,) * 8, (3, 5), (4, 4), "prelu", residual=(4, 6, 8),
                               fc_residual=(2,))


def _context_forward(net: DeepMedic, x: torch.Tensor) -> torch.Tensor:
    """Reference: the former model's forward on one context tensor of ``output + 2 margin``
    per axis, each pathway sliced out of it with its geometry (a subsampled grid starts at
    ``margin - f L + (f - 1) / 2 - c0``, ``c0 = (Os f - O) / 2``, its outputs upsampled by
    repeating each one ``f`` times along every axis)."""
    layers, factors = net.layers, net.config.factors
    margin = context_margin(layers, factors)
    output = [s - 2 * margin for s in x.shape[2:]]
    every = (slice(None), slice(None))
    features = [net.normal(x[every + tuple(slice(margin - layers, margin + o + layers)
                                           for o in output)])]
    for f, pathway in zip(factors, net.subsampled, strict=True):
        index, crops = [], []
        for o in output:
            os_ = math.ceil(o / f)
            os_ += (os_ * f - o) % 2
            c0 = (os_ * f - o) // 2
            start = margin - f * layers + (f - 1) // 2 - c0
            index.append(slice(start, start + f * (os_ + 2 * layers) - (f - 1), f))
            crops.append(slice(c0, c0 + o))
        up = pathway(x[every + tuple(index)])
        for axis in (2, 3, 4):
            up = up.repeat_interleave(f, dim=axis)
        features.append(up[every + tuple(crops)])
    return net.classifier_bias(net.fc(torch.cat(features, dim=1)))


def _net(config: DeepMedicConfig, channels: int = 2) -> DeepMedic:
    torch.manual_seed(0)
    net = DeepMedic(channels, 3, config).double().eval()
    for module in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net


def _pack(net: DeepMedic, context: torch.Tensor, output) -> torch.Tensor:
    """The packed input of a batch of contexts (their centre voxel the outputs' centre)."""
    return torch.stack([net.pack(c, [s // 2 for s in c.shape[1:]], output) for c in context])


@pytest.mark.parametrize("config, output", [
    (NARROW_PAPER, (21, 21, 21)),  # training: 37^3 + 23^3 + 21^3 of a 105^3 context
    (NARROW_PAPER, (1, 1, 1)),  # validation: 17^3 each
    (PRESETS["tiny"], (7, 7, 7)),  # x5: Os = 3, its 15 repeated outputs cropped by 4 per end
    (PRESETS["tiny"], (9, 8, 3)),  # anisotropic, an even side
])
def test_packed_input_gives_the_context_models_logits(config, output):
    net = _net(config)
    margin = context_margin(config.layers, config.factors)
    context = torch.randn(1, 2, *(o + 2 * margin for o in output), dtype=torch.float64)
    packed = _pack(net, context, output)
    assert tuple(packed.shape) == (1, 6, *net.input_size(output))
    with torch.no_grad():
        torch.testing.assert_close(net(packed), _context_forward(net, context),
                                   rtol=1e-12, atol=1e-12)


def test_paper_pathways_read_37_23_and_21_cubed_voxels():
    """The x3 / x5 grids are zero-padded symmetrically (7 and 8 voxels per side) to 37^3."""
    net = _net(NARROW_PAPER, channels=1)
    assert net.pathways((21, 21, 21)) == ((1, (37,) * 3), (3, (23,) * 3), (5, (21,) * 3))
    context = torch.randn(1, 105, 105, 105, dtype=torch.float64)
    packed = net.pack(context, (52, 52, 52), (21, 21, 21))
    for channel, stride, pad in ((1, 3, 7), (2, 5, 8)):
        inner = (channel,) + (slice(pad, 37 - pad),) * 3
        expected = context[(0,) + (slice(52 - stride * (36 - 2 * pad) // 2, None, stride),) * 3]
        n = 37 - 2 * pad
        torch.testing.assert_close(packed[inner], expected[:n, :n, :n], rtol=0, atol=0)
        packed[inner] = 0
        assert not packed[channel].any()  # zeros around the grid


def test_a_flip_of_the_packed_input_is_the_packing_of_the_flipped_volume():
    """Every block is centred, so flips (training augmentation, test-time mirroring) commute
    with the packing, for odd and even outputs."""
    net = _net(PRESETS["tiny"])
    volume = torch.randn(2, 54, 55, 56, dtype=torch.float64)
    for output in ((9, 9, 9), (8, 9, 4)):
        centre = [s // 2 for s in volume.shape[1:]]
        for axis in (1, 2, 3):
            flipped = volume.flip(axis)
            # an odd output's centre voxel maps to its mirror image; an even output is
            # symmetric about the point half a voxel before its centre voxel
            moved = [(s - 1 - c if output[a - 1] % 2 else s - c) if a == axis else c
                     for a, (c, s) in enumerate(zip(centre, volume.shape[1:], strict=True), 1)]
            torch.testing.assert_close(net.pack(flipped, moved, output),
                                       net.pack(volume, centre, output).flip(axis))


def _case(shape=(30, 26, 34), channels=2, seed=0) -> Case:
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    label[4:7, 5:8, 6:9] = 1  # rare: patches near it are always augmented, others by chance
    return Case("c", rng.normal(size=(channels, *shape)).astype(np.float32), label,
                np.ones(shape, bool), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("output", [(9, 9, 9), (8, 8, 8)])
@pytest.mark.parametrize("augmentation", ["none", "flips"])
def test_sampler_packs_what_the_context_sampler_cut(output, augmentation):
    """Same seed: the packed sampler's patches are the packing of the former sampler's context
    patches (cut at ``output + 2 margin``, zero outside the case, augmented as a whole), the
    labels and the eq. 21 bookkeeping are the same, and so are the logits."""
    regime = (DeepMedicAugmentation(flip_prob=(0.5, 0.5, 0.5), shift_std=0.3, scale_std=0.2)
              if augmentation == "flips" else "none")
    net = _net(PRESETS["tiny"])
    cases = [_case(), _case((24, 24, 24), seed=1)]
    context = net.margin * 2 + np.array(output)
    common = {"label_patch": output, "augmentation": regime, "bg_aug_prob": 0.2}
    old = sampling.PatchSampler(cases, context, 0.5, seed=3, **common)
    new = sampling.PatchSampler(cases, net.input_size(output), 0.5, seed=3,
                                pathways=net.pathways(output), **common)
    images, labels = old.sample(6)
    packed, packed_labels = new.sample(6)
    assert np.array_equal(packed_labels, labels)
    assert all(np.array_equal(old.last[k], new.last[k]) for k in old.last)
    if augmentation == "flips":
        assert new.last["augmented"].any() and not new.last["augmented"].all()
    expected = _pack(net, torch.from_numpy(images), output)
    assert packed.dtype == np.float32 and tuple(packed.shape) == (6, 6, *net.input_size(output))
    torch.testing.assert_close(torch.from_numpy(packed), expected.float(), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(net(torch.from_numpy(packed[:2]).double()),
                                   _context_forward(net, torch.from_numpy(images[:2]).double()))


def test_sampler_state_is_the_same_with_pathways():
    """The pathways change only what is cut: the generators advance alike (checkpoints)."""
    net = _net(PRESETS["tiny"])
    cases = [_case()]
    plain = sampling.PatchSampler(cases, (17, 17, 17), 0.5, seed=5, label_patch=(9, 9, 9),
                                  augmentation="deepmedic")
    packed = sampling.PatchSampler(cases, (17, 17, 17), 0.5, seed=5, label_patch=(9, 9, 9),
                                   augmentation="deepmedic", pathways=net.pathways((9, 9, 9)))
    plain.sample(4)
    packed.sample(4)
    assert packed.state() == plain.state()


def test_pack_and_sampler_reject_what_they_cannot_cut():
    net = _net(PRESETS["tiny"])
    with pytest.raises(ValueError, match=r"x3 pathway.s grid -5\.\.25 .* leaves the volume"):
        net.pack(torch.zeros(2, 30, 30, 30, dtype=torch.float64), (10, 15, 15), (9, 9, 9))
    with pytest.raises(ValueError, match=r"expected packed pathway inputs \[N, 6, D, H, W\]"):
        net(torch.zeros(1, 2, 17, 17, 17, dtype=torch.float64))
    cases = [_case()]
    with pytest.raises(ValueError, match="nnunet regime resamples"):
        sampling.PatchSampler(cases, (17,) * 3, 0.5, seed=0, augmentation="nnunet",
                              pathways=net.pathways((9, 9, 9)))
    with pytest.raises(ValueError, match=r"pathways: expected .* got \[\(1, \[17, 17, 17\]\), "
                                         r"\(3, \[16, 16, 16\]\)\]"):
        sampling.PatchSampler(cases, (17,) * 3, 0.5, seed=0,
                              pathways=[(1, (17,) * 3), (3, (16,) * 3)])


def test_tiny_preset_packs_three_pathways_of_its_segment():
    net = _net(PRESETS["tiny"])
    assert net.pathways((9, 9, 9)) == ((1, (17,) * 3), (3, (11,) * 3), (5, (11,) * 3))
    assert net.packed_channels == 6 and net.margin == 22


def test_dense_tiling_packs_each_tile_as_the_context_model_read_it():
    """Whole-volume inference: each tile's logits are the former model's on the tile's
    ``tile + 2 margin`` context of the volume zero-padded by the margin."""
    net = _net(PRESETS["tiny"]).float()
    image = np.random.default_rng(2).normal(size=(2, 20, 13, 9)).astype(np.float32)
    tile, margin = (9, 9, 9), net.margin
    logits = dense_tiling_logits(net, image, tile, batch_size=3)
    padded = torch.nn.functional.pad(torch.from_numpy(image), [margin, margin + 9] * 3)
    for corner in ((0, 0, 0), (18, 9, 0), (9, 0, 0)):
        context = padded[(slice(None),) + tuple(slice(c, c + t + 2 * margin)
                                                for c, t in zip(corner, tile, strict=True))]
        with torch.no_grad():
            expected = _context_forward(net, context[None])[0]
        inside = tuple(slice(0, min(t, s - c)) for c, t, s in
                       zip(corner, tile, image.shape[1:], strict=True))
        got = logits[(slice(None),) + tuple(slice(c, c + i.stop) for c, i in
                                            zip(corner, inside, strict=True))]
        torch.testing.assert_close(got, expected[(slice(None),) + inside], rtol=1e-5,
                                   atol=1e-5)
