"""Whole-volume inference: DeepMedic's dense tiling, the U-Net's Gaussian sliding window and
nnU-Net's test-time mirroring."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from study.inference import dense_tiling_logits, predict_logits, sliding_window_logits
from study.models.deepmedic import DeepMedic
from study.models.presets import DEEPMEDIC_PRESETS as PRESETS

ALL_FLIPS = [axes for k in range(4) for axes in itertools.combinations((0, 1, 2), k)]


def _image(shape, channels=2, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(channels, *shape)).astype(np.float32)


def _flip(array: np.ndarray | torch.Tensor, axes) -> np.ndarray | torch.Tensor:
    """Flip spatial ``axes`` of ``[C, D, H, W]``."""
    if isinstance(array, torch.Tensor):
        return array.flip([a + 1 for a in axes]) if axes else array
    return np.ascontiguousarray(np.flip(array, [a + 1 for a in axes]))


def _hand_mirrored(predict, image, flips) -> torch.Tensor:
    """The mean over ``flips`` of the prediction of the flipped image, flipped back."""
    return sum(_flip(predict(_flip(image, axes)), axes) for axes in flips) / len(flips)


@pytest.fixture(scope="module")
def tiny_deepmedic() -> DeepMedic:
    torch.manual_seed(0)
    return DeepMedic(2, 2, PRESETS["tiny"]).eval()


def test_dense_tiling_does_not_depend_on_tile_sizes_that_keep_the_subsampling_grid():
    """With 1^3 FC kernels every DeepMedic output voxel is computed from its own context, so
    tiles of any multiple of the subsampling factors (lcm 15) give the same volume (float
    tolerance). (The presets' mirror-padded 3^3 first FC kernel makes the outermost outputs of
    each tile see replicated features instead, as in DeepMedic.)"""
    torch.manual_seed(0)
    net = DeepMedic(2, 2, dataclasses.replace(PRESETS["tiny"], fc_kernel=1)).eval()
    image = _image((16, 14, 12))
    small = dense_tiling_logits(net, image, (15, 15, 15))
    large = dense_tiling_logits(net, image, (30, 30, 30))
    assert small.shape == (2, 16, 14, 12)
    torch.testing.assert_close(small, large, atol=1e-4, rtol=1e-4)


def test_predict_logits_tiles_deepmedic_with_its_inference_segment(tiny_deepmedic):
    """DeepMedic infers with the output of its preset's inference segment (tiny: 25^3 -> 17^3;
    the papers: 45^3 -> 29^3), whatever the training patch; tiles start at the first voxel."""
    image = _image((18, 17, 17), seed=1)
    assert tiny_deepmedic.inference_output == (17, 17, 17)
    expected = dense_tiling_logits(tiny_deepmedic, image, (17, 17, 17))
    torch.testing.assert_close(predict_logits(tiny_deepmedic, image, (9, 9, 9)), expected)
    torch.testing.assert_close(predict_logits(tiny_deepmedic, image, None), expected)


def test_sliding_window_of_a_pointwise_model_equals_the_model():
    """Gaussian blending is a normalised weighted mean: for a model without spatial context
    every window agrees, and the blend equals one pass over the whole volume."""
    net = torch.nn.Conv3d(2, 3, 1)
    image = _image((20, 13, 24), seed=2)
    with torch.no_grad():
        expected = net(torch.from_numpy(image)[None])[0]
    torch.testing.assert_close(sliding_window_logits(net, image, (8, 8, 8)), expected,
                               atol=1e-5, rtol=1e-5)


def _symmetrised_conv() -> torch.nn.Conv3d:
    """A padded 3^3 convolution whose kernels are symmetric under every flip: the model
    commutes with flips (flip-equivariant)."""
    torch.manual_seed(3)
    conv = torch.nn.Conv3d(2, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(sum(conv.weight.flip([a + 2 for a in axes]) for axes in ALL_FLIPS) / 8)
    return conv


def test_mirroring_a_flip_equivariant_model_changes_nothing():
    """nnU-Net's test-time mirroring averages predictions of flipped inputs flipped back; for a
    model that commutes with flips each of the 8 equals the plain prediction."""
    net, image = _symmetrised_conv(), _image((12, 8, 16), seed=4)
    plain = predict_logits(net, image, (8, 8, 8))
    torch.testing.assert_close(predict_logits(net, image, (8, 8, 8), mirror_axes=(0, 1, 2)),
                               plain, atol=1e-5, rtol=1e-5)


def test_mirroring_averages_the_eight_flipped_predictions():
    """For a model that does not commute with flips, mirroring over (0, 1, 2) is the mean of the
    8 whole-volume predictions of the flipped image, flipped back (the window grid of a 12 x 8
    x 16 volume under 8^3 windows with overlap 0.5 is symmetric, so windows map to windows);
    over (0,) the mean of 2."""
    torch.manual_seed(5)
    net, image = torch.nn.Conv3d(2, 3, 3, padding=1), _image((12, 8, 16), seed=5)

    def predict(x):
        return predict_logits(net, x, (8, 8, 8))

    mirrored = predict_logits(net, image, (8, 8, 8), mirror_axes=(0, 1, 2))
    torch.testing.assert_close(mirrored, _hand_mirrored(predict, image, ALL_FLIPS),
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mirrored, predict(image), atol=1e-3)
    torch.testing.assert_close(predict_logits(net, image, (8, 8, 8), mirror_axes=(0,)),
                               _hand_mirrored(predict, image, [(), (0,)]), atol=1e-5, rtol=1e-5)


def test_mirroring_works_for_deepmedic_tiles(tiny_deepmedic):
    """DeepMedic's context is symmetric about its output, so a mirrored tile predicts the
    mirrored voxels: on a one-tile volume mirroring is the hand-averaged flips."""
    image = _image((17, 17, 17), seed=6)

    def predict(x):
        return predict_logits(tiny_deepmedic, x, None)

    torch.testing.assert_close(predict_logits(tiny_deepmedic, image, None, mirror_axes=(2,)),
                               _hand_mirrored(predict, image, [(), (2,)]), atol=1e-4, rtol=1e-4)


def test_predict_logits_rejects_bad_mirror_axes():
    with pytest.raises(ValueError, match=r"distinct spatial axes among 0, 1, 2, got \(0, 3\)"):
        predict_logits(torch.nn.Conv3d(1, 2, 1), _image((8, 8, 8), 1), (8, 8, 8),
                       mirror_axes=(0, 3))
