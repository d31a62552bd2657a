"""Models, their geometry, output matching and the papers' optimisers."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

import study.objectives as obj
from study.models import (
    MODELS,
    OutputLoss,
    build_model,
    centre_crop,
    output_patch,
    segment_sizes,
    unet_widths,
)
from study.models.deepmedic import DeepMedic, DeepMedicDropout, Stack, add_residual
from study.models.outputs import deep_supervision_weights
from study.models.presets import DEEPMEDIC_PRESETS as PRESETS
from study.models.presets import DeepMedicConfig
from study.models.recipes import RECIPES, DeepMedicRMSprop, PlateauOnTrainingLoss, StepHalving

PAPER_PRESETS = ("basic", "default")


def _meta_model(preset: str, channels: int = 4) -> DeepMedic:
    """A DeepMedic without storage: shapes only, instant even for the papers' sizes."""
    with torch.device("meta"):
        return DeepMedic(channels, 2, PRESETS[preset])


def _pathway_shapes(net: DeepMedic, output: int) -> dict[str, tuple]:
    """(input side, output side) each pathway and the FC part see for an ``output``^3 patch."""
    seen = {}
    parts = {"normal": net.normal, "x3": net.subsampled[0], "x5": net.subsampled[1],
             "fc": net.fc}
    hooks = [module.register_forward_hook(
        lambda m, i, o, name=name: seen.__setitem__(name, (i[0].shape[2], o.shape[2])))
        for name, module in parts.items()]
    x = torch.empty(2, net.packed_channels, *net.input_size((output,) * 3), device="meta")
    out = net(x)
    for hook in hooks:
        hook.remove()
    assert tuple(out.shape) == (2, 2, output, output, output)
    return seen


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_deepmedic_segments_follow_the_papers(preset):
    """001 §V-A / DeepMedic v0.7: normal-pathway segments 37^3 (train) -> 21^3, 17^3
    (validation) -> 1^3, 45^3 (inference) -> 29^3; for 21^3 outputs the x3 pathway reads 23^3
    and the x5 pathway 21^3 subsampled voxels, packed into one 37^3 tensor of 3 x 4 channels;
    together they reach 42 voxels beyond the output (105^3)."""
    sizes = segment_sizes("deepmedic", preset)
    assert sizes == {"train_input": (37,) * 3, "validation_input": (17,) * 3,
                     "inference_input": (45,) * 3}
    assert [output_patch("deepmedic", preset, s) for s in sizes.values()] == [
        (21,) * 3, (1,) * 3, (29,) * 3]
    net = _meta_model(preset)
    assert net.input_size((21, 21, 21)) == (37,) * 3 and net.output_size((37,) * 3) == (21,) * 3
    assert (net.packed_channels, net.margin) == (12, 42)
    assert _pathway_shapes(net, 21) == {"normal": (37, 21), "x3": (23, 7), "x5": (21, 5),
                                        "fc": (21, 21)}
    assert _pathway_shapes(net, 1) == {"normal": (17, 1), "x3": (17, 1), "x5": (17, 1),
                                       "fc": (1, 1)}
    # centred blocks: one subsampled voxel more than DeepMedic's 26^3 / 22^3 for 29^3 tiles
    assert _pathway_shapes(net, 29) == {"normal": (45, 29), "x3": (27, 11), "x5": (23, 7),
                                        "fc": (29, 29)}
    assert net.inference_output == (29, 29, 29)


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_deepmedic_widths_follow_the_papers(preset):
    """Per pathway 8 x 3^3 kernels [30, 30, 40, 40, 40, 40, 50, 50]; FC 3^3 (150 -> 250), 1^3
    (250 -> 250), 1^3 classifier; convolutions without bias."""
    net = _meta_model(preset)
    for pathway in (net.normal, *net.subsampled):
        convs = [m for m in pathway.modules() if isinstance(m, torch.nn.Conv3d)]
        assert [c.out_channels for c in convs] == [30, 30, 40, 40, 40, 40, 50, 50]
        assert {c.kernel_size for c in convs} == {(3, 3, 3)}
    fc = [m for m in net.fc.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in fc] == [
        (150, 250, 3), (250, 250, 1), (250, 2, 1)]
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv3d))


def _count(net: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


def test_basic_and_default_differ_only_where_the_papers_say():
    """basic (BraTS): ReLU, no residual connections, no dropout, no L1/L2; default (ATLAS):
    PReLU, residuals at layers 4, 6, 8 of each pathway and FC layer 2, dropout on the inputs of
    FC layer 2 and the classifier (rates 0, 0.5, 0.5), L1 1e-6, L2 1e-4. The first layer of a
    pathway has no activation: 3 x 7 + 3 activations."""
    basic, default = _meta_model("basic"), _meta_model("default")
    assert (_count(basic, torch.nn.ReLU), _count(basic, torch.nn.PReLU)) == (24, 0)
    assert (_count(default, torch.nn.ReLU), _count(default, torch.nn.PReLU)) == (0, 24)
    assert _count(basic, DeepMedicDropout) == 0
    assert [m.p for m in default.modules() if isinstance(m, DeepMedicDropout)] == [0.5, 0.5]
    assert all(s.residual == frozenset() for s in basic.modules() if isinstance(s, Stack))
    assert [s.residual for s in (default.normal, *default.subsampled, default.fc)] == [
        frozenset({3, 5, 7})] * 3 + [frozenset({1})]
    assert (PRESETS["basic"].l1, PRESETS["basic"].l2) == (0.0, 0.0)
    assert (PRESETS["default"].l1, PRESETS["default"].l2) == (1e-6, 1e-4)
    prelu = next(m for m in default.modules() if isinstance(m, torch.nn.PReLU))
    assert prelu.init == 0.01


def test_residual_adds_the_centre_of_the_earlier_input_zero_padded_in_channels():
    """DeepMedic's residual: output of layer k + centre crop of the input of layer k - 1,
    channels beyond the earlier ones untouched (zero padding)."""
    torch.manual_seed(0)
    earlier, deeper = torch.randn(1, 2, 7, 7, 7), torch.randn(1, 3, 3, 3, 3)
    out = add_residual(earlier, deeper)
    torch.testing.assert_close(out[:, :2], deeper[:, :2] + earlier[:, :, 2:5, 2:5, 2:5])
    torch.testing.assert_close(out[:, 2:], deeper[:, 2:])
    zero = [torch.nn.Conv3d(2, 3, 3, bias=False), torch.nn.Conv3d(3, 4, 3, bias=False)]
    for conv in zero:
        torch.nn.init.zeros_(conv.weight)
    stacked = Stack(zero, residual=[1])(earlier)  # layer 2 gets the stack's input added
    expected = torch.zeros(1, 4, 3, 3, 3)
    expected[:, :2] = earlier[:, :, 2:5, 2:5, 2:5]
    torch.testing.assert_close(stacked, expected)


def test_deepmedic_dropout_masks_without_rescaling_and_scales_in_evaluation():
    """DeepMedic's dropout: training keeps each element unchanged with probability 1 - p or
    zeroes it; evaluation multiplies by 1 - p."""
    torch.manual_seed(0)
    drop, x = DeepMedicDropout(0.5), torch.rand(20000) + 1
    y = drop.train()(x)
    assert set(torch.unique(y / x).tolist()) == {0.0, 1.0}
    assert abs((y == 0).float().mean().item() - 0.5) < 0.02
    torch.testing.assert_close(drop.eval()(x), 0.5 * x)


@pytest.mark.parametrize("preset, random_in_training", [("tiny", True), ("basic", False)])
def test_dropout_is_random_in_training_only(preset, random_in_training):
    """The tiny preset has default's FC dropout: two training passes differ, evaluation passes
    agree; basic has none (training passes agree too, BatchNorm using batch statistics)."""
    config = PRESETS[preset]
    if preset == "basic":  # the basic structure at tiny width (the paper's is slow on a CPU)
        config = dataclasses.replace(PRESETS["tiny"], activation="relu", residual=(),
                                     fc_residual=(), fc_dropout=(), l1=0.0, l2=0.0)
    torch.manual_seed(0)
    net = DeepMedic(1, 2, config)
    x = torch.randn(2, net.packed_channels, *net.input_size((3, 3, 3)))
    with torch.no_grad():
        net.train()
        assert (not torch.equal(net(x), net(x))) == random_in_training
        net.eval()
        assert torch.equal(net(x), net(x))


def _support(net: DeepMedic, output: int) -> np.ndarray:
    """Image voxels (bool, ``output + 2 margin`` per side) that the centre output voxel's
    logits depend on, through the packed pathway inputs."""
    net.eval()
    size = output + 2 * net.margin
    x = torch.randn(1, size, size, size, dtype=torch.float64, requires_grad=True)
    out = net.double()(net.pack(x, (size // 2,) * 3, (output,) * 3)[None])
    c = [s // 2 for s in out.shape[2:]]
    out[0, :, c[0], c[1], c[2]].sum().backward()
    assert x.grad is not None
    return (x.grad[0].abs() > 0).numpy()


def test_deepmedic_receptive_field_is_centred_on_its_output_voxel():
    """Centre voxel of a 3^3 output: a dense normal-resolution box of (2L + 3)^3 (L layers and
    the 3^3 FC kernel) and, beyond it, only the x3 and x5 grids through that voxel, reaching
    5 L voxels each way (pathways aligned on the output)."""
    torch.manual_seed(0)
    net = DeepMedic(1, 2, PRESETS["tiny"])
    layers, size = net.layers, 3 + 2 * net.margin
    support = _support(net, 3)
    centre = size // 2
    offsets = np.argwhere(support) - centre
    assert (offsets.min(0) == -5 * layers).all() and (offsets.max(0) == 5 * layers).all()
    far = np.abs(offsets).max(1) > layers + 1
    on_grid = ((offsets[far] % 3 == 0).all(1)) | ((offsets[far] % 5 == 0).all(1))
    assert far.any() and on_grid.all()
    box = support[tuple(slice(centre - layers - 1, centre + layers + 2) for _ in range(3))]
    assert box.all()


def test_output_patch_names_both_sizes_and_what_fits():
    assert output_patch("deepmedic", "tiny", (17, 17, 17)) == (9, 9, 9)
    with pytest.raises(ValueError, match=r"deepmedic/basic: input segment \[16, 37, 37\] gives "
                                         r"output \[0, 21, 21\].*> 16 voxels.*37 -> 21"):
        output_patch("deepmedic", "basic", (16, 37, 37))
    assert output_patch("unet", "paper", (128, 128, 96)) == (128, 128, 96)
    with pytest.raises(ValueError, match=r"input patch \[128, 128, 72\] would give output "
                                         r"\[128, 128, 72\].*divisible by 32.*\[128, 128, 64\] "
                                         r"or \[128, 128, 96\]"):
        output_patch("unet", "paper", (128, 128, 72))
    with pytest.raises(ValueError, match="unknown preset 'paper' for deepmedic"):
        output_patch("deepmedic", "paper", (37, 37, 37))
    assert segment_sizes("unet", "paper") == dict.fromkeys(
        ("train_input", "validation_input", "inference_input"))
    assert set(MODELS["deepmedic"]) == {"basic", "default", "tiny"}


def test_deepmedic_config_rejects_impossible_settings():
    with pytest.raises(ValueError, match="odd integers"):
        DeepMedicConfig((8,), (2,), (8,), "relu", segments=(5, 3, 5))
    with pytest.raises(ValueError, match=r"fc_dropout needs 2 rates"):
        DeepMedicConfig((8,), (3,), (8,), "relu", fc_dropout=(0.5,), segments=(5, 3, 5))
    with pytest.raises(ValueError, match=r"residual layers must be in 2..1"):
        DeepMedicConfig((8,), (3,), (8,), "relu", residual=(1,), segments=(5, 3, 5))
    with pytest.raises(ValueError, match="gives no output"):
        build_model("deepmedic", "tiny", 1, 2)(torch.randn(1, 3, 8, 8, 8))


def test_tiny_deepmedic_is_fast_on_a_cpu():
    """The tiny preset (tests, CPU demo): 17^3 segments -> 9^3 outputs (3 pathways packed),
    about 0.1 M parameters; a training step on two segments takes well under a second."""
    torch.manual_seed(0)
    net = build_model("deepmedic", "tiny", 4, 2)
    assert net.input_size((9, 9, 9)) == (17, 17, 17)
    assert sum(p.numel() for p in net.parameters()) < 120_000
    x = torch.randn(2, 12, 17, 17, 17)
    start = time.perf_counter()
    net(x).sum().backward()
    assert time.perf_counter() - start < 5.0


def test_unet_width_and_depth_follow_nnunet_rule():
    """30 features doubled per stage and capped at 320 is the paper preset; stages/base
    change it; patches must be divisible by 2^(stages-1)."""
    assert unet_widths(30, 6) == (30, 60, 120, 240, 320, 320)
    net = build_model("unet", "tiny", 1, 3, base=4, stages=4)
    assert net.divisor == 8 and net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
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


def _rmsprop_reference(p, grads, l1=0.0, l2=0.0, lr=1e-3, rho=0.9, eps=1e-4, mu=0.6):
    """DeepMedic's update by hand, the gradient of ``cost + l1 sum|w| + l2 sum w^2``."""
    a, v = torch.zeros_like(p), torch.zeros_like(p)
    for g in grads:
        g = g + l1 * torch.sign(p) + 2 * l2 * p
        a = rho * a + (1 - rho) * g**2
        s = lr * g / torch.sqrt(a + eps)
        v = mu * v - s
        p = p + mu * v - s
    return p


def test_deepmedic_rmsprop_follows_deepmedics_update():
    """Two steps against DeepMedic's formula: a = rho a + (1 - rho) g^2, s = lr g / sqrt(a + eps),
    v = mu v - s, p += mu v - s (eps inside the root, momentum not normalised); with L1/L2 the
    gradient is that of cost + L1 sum|w| + L2 sum w^2 (sign(0) = 0)."""
    start = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    grads = [torch.tensor([0.3, -0.01, 2.0, 0.1]).double(),
             torch.tensor([0.1, 0.02, -1.0, 0.0]).double()]
    for l1, l2 in ((0.0, 0.0), (1e-2, 1e-1)):
        p = torch.nn.Parameter(start.clone())
        opt = DeepMedicRMSprop([p], lr=1e-3, l1=l1, l2=l2)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        torch.testing.assert_close(p.detach(), _rmsprop_reference(start, grads, l1, l2))


def test_deepmedic_regularisation_equals_the_cost_terms_on_conv_kernels_only():
    """The recipe's optimiser for ``default`` steps exactly as an unregularised one on the cost
    1e-6 sum|w| + 1e-4 sum w^2 over the convolution kernels: BatchNorm, PReLU and biases get
    no penalty; ``basic`` has none."""
    torch.manual_seed(0)
    net = DeepMedic(1, 2, PRESETS["tiny"]).double()
    twin = DeepMedic(1, 2, PRESETS["tiny"]).double()
    twin.load_state_dict(net.state_dict())
    with torch.no_grad():  # non-trivial BN/PReLU/bias values, which must not be penalised
        for p in net.parameters():
            if p.ndim == 1:
                p.add_(0.3)
        twin.load_state_dict(net.state_dict())
    regularised = RECIPES["deepmedic"].optimizer(net, lr=None)
    assert [(g["l1"], g["l2"]) for g in regularised.param_groups] == [(1e-6, 1e-4), (0.0, 0.0)]
    assert {id(p) for p in regularised.param_groups[0]["params"]} == {
        id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Conv3d)}
    plain = DeepMedicRMSprop(twin.parameters(), lr=1e-3)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    regularised.step()
    penalty = sum(1e-6 * m.weight.abs().sum() + 1e-4 * (m.weight**2).sum()
                  for m in twin.modules() if isinstance(m, torch.nn.Conv3d))
    penalty.backward()
    for p in twin.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    plain.step()
    for (name, a), b in zip(net.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    basic = RECIPES["deepmedic"].optimizer(_meta_model("basic"), lr=None)
    assert [(g["l1"], g["l2"]) for g in basic.param_groups] == [(0.0, 0.0)] * 2


def test_deepmedic_schedule_halves_five_times_at_the_papers_epochs():
    """LR halved at epochs 17, 22, 27, 30, 33 of 35, scaled to the budget: 1/32 at the end."""
    net = DeepMedic(1, 2, PRESETS["tiny"])
    opt = RECIPES["deepmedic"].optimizer(net, lr=None)
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
    1e-3 for more than 30 epochs; an epoch's loss is read only at ``settle`` (where the trial
    loop reads its losses anyway); state survives a state_dict round trip."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = RECIPES["unet"].optimizer(torch.nn.ParameterList([p]), lr=None)
    assert opt.defaults["amsgrad"] and opt.param_groups[0]["lr"] == 3e-4
    schedule = PlateauOnTrainingLoss(opt, epoch=2)
    for _ in range(2 * 31):
        schedule.step(torch.tensor(1.0))
        schedule.settle()
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-4)
    state = schedule.state_dict()
    schedule.step(torch.tensor(1.0))
    schedule.step(torch.tensor(1.0))
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-4) and len(schedule.pending) == 1
    schedule.settle()
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-5)
    again = PlateauOnTrainingLoss(torch.optim.Adam([p], lr=3e-4), epoch=2)
    again.load_state_dict(state)
    assert again.state_dict()["scheduler"]["num_bad_epochs"] == 30
