"""Models, their geometry, output matching, whole-volume inference and the papers' optimisers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import study.objectives as obj
from study.inference import dense_tiling_logits, predict_logits, sliding_window_logits
from study.models import OutputLoss, build_model, centre_crop, patch_problem, unet_widths
from study.models.deepmedic import PRESETS, DeepMedic, DeepMedicConfig
from study.models.outputs import deep_supervision_weights
from study.models.recipes import RECIPES, DeepMedicRMSprop, PlateauOnTrainingLoss, StepHalving


def _support(net: torch.nn.Module, size: int, channels: int = 1) -> np.ndarray:
    """Input voxels (bool [size]^3) that the centre output voxel's logits depend on."""
    net.eval()
    x = torch.randn(1, channels, size, size, size, dtype=torch.float64, requires_grad=True)
    out = net.double()(x)
    c = [s // 2 for s in out.shape[2:]]
    out[0, :, c[0], c[1], c[2]].sum().backward()
    return (x.grad[0].abs().sum(0) > 0).numpy()


def test_deepmedic_paper_geometry_is_37_cube_segments_to_21_cube_outputs():
    """Paper preset (Kamnitsas 2017 / 001): 8 valid 3^3 layers, so a 37^3 normal segment gives
    21^3 outputs; the x3 pathway needs 23^3 subsampled voxels, i.e. a 67^3 context."""
    net = DeepMedic(4, 2, PRESETS["paper"])
    assert net.input_size((21, 21, 21)) == (67, 67, 67)
    assert net.output_size((67, 67, 67)) == (21, 21, 21)
    out = net(torch.randn(2, 4, 67, 67, 67))
    assert out.shape == (2, 2, 21, 21, 21)
    normal = net.normal(torch.randn(1, 4, 37, 37, 37))
    subsampled = net.subsampled[0](torch.randn(1, 4, 23, 23, 23))
    assert normal.shape[2:] == (21, 21, 21) and subsampled.shape[2:] == (7, 7, 7)
    assert [m.out_channels for m in net.normal if isinstance(m, torch.nn.Conv3d)] == \
        [30, 30, 40, 40, 40, 40, 50, 50]
    assert [m.out_channels for m in net.fc if isinstance(m, torch.nn.Conv3d)] == [150, 150]


def test_deepmedic_tiny_is_17_cube_to_9_cube():
    """techniques.md Part C: 4 x 3^3 convolutions of 16, one x3 pathway, FC 32, 17^3 -> 9^3."""
    net = build_model("deepmedic", "tiny", 1, 2)
    assert net.normal(torch.randn(1, 1, 17, 17, 17)).shape == (1, 16, 9, 9, 9)
    assert net(torch.randn(1, 1, *net.input_size((9, 9, 9)))).shape == (1, 2, 9, 9, 9)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_deepmedic_receptive_field_is_centred_on_its_output_voxel(preset):
    """The centre output voxel reads a 17^3 (paper) / 9^3 (tiny) normal-resolution box and the
    x3 grid over three times that span, both centred on the voxel (pathways aligned)."""
    net = DeepMedic(1, 2, PRESETS[preset])
    layers = net.layers
    size = net.input_size((3, 3, 3))[0]
    support = _support(net, size)
    centre = size // 2
    coords = np.argwhere(support)
    assert (coords.min(0) == centre - 3 * layers).all() and (coords.max(0) == centre
                                                              + 3 * layers).all()
    far = np.abs(coords - centre).max(1) > layers  # outside the normal box: the x3 grid only
    assert far.any() and ((coords[far] - centre) % 3 == 0).all()
    box = support[tuple(slice(centre - layers, centre + layers + 1) for _ in range(3))]
    assert box.all()


def test_deepmedic_rejects_inputs_that_give_no_output():
    net = DeepMedic(1, 2, PRESETS["paper"])
    with pytest.raises(ValueError, match="nearest valid input sizes are 64 and 67"):
        net(torch.randn(1, 1, 66, 66, 66))
    with pytest.raises(ValueError, match="odd integers"):
        DeepMedic(1, 2, DeepMedicConfig((8,), (2,), (8,)))


def test_unet_width_and_depth_follow_nnunet_rule():
    """30 features doubled per stage and capped at 320 is the paper preset; stages/base
    change it; patches must be divisible by 2^(stages-1)."""
    assert unet_widths(30, 6) == (30, 60, 120, 240, 320, 320)
    net = build_model("unet", "tiny", 1, 3, base=4, stages=4)
    assert net.divisor == 8 and net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    assert patch_problem("unet", "paper", (128, 128, 96)) is None
    assert "divisible by 32" in patch_problem("unet", "paper", (128, 128, 72))
    with pytest.raises(ValueError, match="U-Net options"):
        build_model("deepmedic", "tiny", 1, 2, deep_supervision=True)


def test_deep_supervision_outputs_and_weights_are_nnunets():
    """Training mode: logits at full, 1/2, 1/4 ... resolution; weights 1, 1/2, 1/4 with the
    coarsest 0, normalised; the loss is their weighted sum on strided targets. Eval mode:
    full-resolution logits only."""
    net = build_model("unet", "tiny", 1, 2, stages=4, deep_supervision=True)
    x, target = torch.randn(2, 1, 16, 16, 16), torch.randint(0, 2, (2, 16, 16, 16))
    outs = net(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(16,) * 3, (8,) * 3, (4,) * 3]
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    ce = obj.CrossEntropyLoss()
    expected = 2 / 3 * ce(outs[0], target) + 1 / 3 * ce(outs[1], target[:, ::2, ::2, ::2])
    torch.testing.assert_close(OutputLoss(ce)(outs, target), expected)
    net.eval()
    assert net(x).shape == (2, 2, 16, 16, 16)


def test_output_loss_crops_hard_and_soft_targets_to_the_centre():
    logits = torch.randn(2, 2, 3, 3, 3)
    target = torch.randint(0, 2, (2, 7, 7, 7))
    torch.testing.assert_close(OutputLoss(obj.CrossEntropyLoss())(logits, target),
                               obj.CrossEntropyLoss()(logits, target[:, 2:5, 2:5, 2:5]))
    soft = torch.rand(2, 2, 7, 7, 7)
    assert centre_crop(soft, (3, 3, 3)).shape == (2, 2, 3, 3, 3)
    with pytest.raises(ValueError, match="even difference"):
        centre_crop(target, (4, 4, 4))


def test_dense_tiling_does_not_depend_on_the_tile_size():
    """DeepMedic's output voxels are computed from their own context, so tiles of any multiple
    of the subsampling factor give the same volume (float tolerance)."""
    torch.manual_seed(0)
    net = DeepMedic(2, 2, PRESETS["tiny"]).eval()
    image = np.random.default_rng(0).normal(size=(2, 20, 23, 17)).astype(np.float32)
    small = dense_tiling_logits(net, image, (6, 6, 6))
    large = dense_tiling_logits(net, image, (21, 24, 18))
    assert small.shape == (2, 20, 23, 17)
    torch.testing.assert_close(small, large, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(predict_logits(net, image, (9, 9, 9)), large, atol=1e-4,
                               rtol=1e-4)


def test_sliding_window_of_a_pointwise_model_equals_the_model():
    """Gaussian blending is a normalised weighted mean: for a model without spatial context
    every window agrees, and the blend equals one pass over the whole volume."""
    net = torch.nn.Conv3d(2, 3, 1)
    image = np.random.default_rng(1).normal(size=(2, 20, 13, 24)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(image)[None])[0]
    torch.testing.assert_close(sliding_window_logits(net, image, (8, 8, 8)), expected,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sliding_window_logits(net, image, (8, 8, 8), mirror_axes=(0, 2)),
                               expected, atol=1e-5, rtol=1e-5)


def test_deepmedic_rmsprop_follows_deepmedics_update():
    """Two steps against DeepMedic's formula: a = rho a + (1 - rho) g^2, s = lr g / sqrt(a + eps),
    v = mu v - s, p += mu v - s (eps inside the root, momentum not normalised)."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = DeepMedicRMSprop([p], lr=1e-3, rho=0.9, eps=1e-4, momentum=0.6)
    ref, a, v = p.detach().clone(), torch.zeros(3, dtype=torch.float64), torch.zeros(
        3, dtype=torch.float64)
    for g in (torch.tensor([0.3, -0.01, 2.0]), torch.tensor([0.1, 0.02, -1.0])):
        g = g.double()
        p.grad = g.clone()
        opt.step()
        a = 0.9 * a + 0.1 * g**2
        s = 1e-3 * g / torch.sqrt(a + 1e-4)
        v = 0.6 * v - s
        ref = ref + 0.6 * v - s
    torch.testing.assert_close(p.detach(), ref)


def test_deepmedic_schedule_halves_five_times_at_the_papers_epochs():
    """LR halved at epochs 17, 22, 27, 30, 33 of 35, scaled to the budget: 1/32 at the end."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = RECIPES["deepmedic"].optimizer([p], lr=None)
    schedule = RECIPES["deepmedic"].schedule(opt, 350)
    assert isinstance(schedule, StepHalving) and opt.param_groups[0]["lr"] == 1e-3
    lrs = []
    for _ in range(350):
        opt.step()
        schedule.step(torch.tensor(0.0))
        lrs.append(opt.param_groups[0]["lr"])
    changes = [i + 1 for i in range(1, 350) if lrs[i] != lrs[i - 1]]
    assert changes == [170, 220, 270, 300, 330] and lrs[-1] == pytest.approx(1e-3 / 32)


def test_unet_plateau_schedule_reduces_by_five_after_thirty_flat_epochs():
    """nnU-Net fork: Adam(AMSGrad) 3e-4; x0.2 once the loss moving average has not improved by
    1e-3 for more than 30 epochs; state survives a state_dict round trip."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = RECIPES["unet"].optimizer([p], lr=None)
    assert opt.defaults["amsgrad"] and opt.param_groups[0]["lr"] == 3e-4
    schedule = PlateauOnTrainingLoss(opt, epoch=2)
    for _ in range(2 * 31):
        schedule.step(torch.tensor(1.0))
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-4)
    state = schedule.state_dict()
    schedule.step(torch.tensor(1.0))
    schedule.step(torch.tensor(1.0))
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-5)
    again = PlateauOnTrainingLoss(torch.optim.Adam([p], lr=3e-4), epoch=2)
    again.load_state_dict(state)
    assert again.state_dict()["scheduler"]["num_bad_epochs"] == 30
