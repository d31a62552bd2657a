"""The models' presets and geometry, without torch: what a study file may name and which patch
sizes fit, for validating and planning studies without building (or importing) a network.

* DeepMedic (001 §V-A.1/2; the reference configuration): ``basic`` (BraTS: ReLU, no residual
  connections, no dropout, no L1/L2) and ``default`` (ATLAS: PReLU, residual connections at
  layers 4, 6, 8 and FC layer 2, FC dropout 0.5, L1 1e-6 / L2 1e-4), both with the normal,
  x3 and x5 pathways of 8 layers [30, 30, 40, 40, 40, 40, 50, 50] and FC 250 + 250 (the first
  FC kernel 3^3); ``tiny`` (tests): ``default``'s structure, narrow and shallow.
* U-Net (001 §V-A.4, the nnU-Net fork): features per stage, ``paper`` (30 doubled per stage,
  capped at 320, 6 stages) and ``tiny`` (tests and the CPU demo).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

ACTIVATIONS = ("relu", "prelu")


@dataclass(frozen=True)
class DeepMedicConfig:
    """One DeepMedic preset.

    features: conv features per pathway layer (3^3 kernels); factors: subsampling factors of
    the extra pathways (odd integers >= 3); fc: hidden FC widths; activation: ``"relu"`` or
    ``"prelu"``; residual / fc_residual: 1-based layers of each pathway / of the FC part
    (classifier included) whose output gets a residual connection (>= 2); fc_dropout: dropout
    rate on the input of every FC layer and of the classifier (``len(fc) + 1`` values; empty:
    none); fc_kernel: side of the first FC kernel (odd, mirror-padded); l1, l2: weights of
    ``sum |w|`` and ``sum w^2`` over the convolution kernels added to the cost; segments: the
    normal-pathway segment side in training, validation and inference.
    """

    features: tuple[int, ...]
    factors: tuple[int, ...]
    fc: tuple[int, ...]
    activation: str
    residual: tuple[int, ...] = ()
    fc_residual: tuple[int, ...] = ()
    fc_dropout: tuple[float, ...] = ()
    fc_kernel: int = 3
    l1: float = 0.0
    l2: float = 0.0
    segments: tuple[int, int, int] = (37, 17, 45)

    def __post_init__(self):
        layers, fc_layers = len(self.features), len(self.fc) + 1
        problems = []
        if not self.features or min(self.features) < 1 or min(self.fc, default=1) < 1:
            problems.append(f"features {list(self.features)} and fc {list(self.fc)} must be "
                            "positive widths, at least one convolution per pathway")
        if any(f < 3 or f % 2 == 0 for f in self.factors):
            problems.append(f"factors must be odd integers >= 3, got {list(self.factors)}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if any(not 2 <= k <= layers for k in self.residual):
            problems.append(f"residual layers must be in 2..{layers}, got {list(self.residual)}")
        if any(not 2 <= k <= fc_layers for k in self.fc_residual):
            problems.append(f"fc_residual layers must be in 2..{fc_layers}, got "
                            f"{list(self.fc_residual)}")
        if self.fc_dropout and (len(self.fc_dropout) != fc_layers
                                or any(not 0 <= p < 1 for p in self.fc_dropout)):
            problems.append(f"fc_dropout needs {fc_layers} rates in [0, 1) (FC layers and "
                            f"classifier), got {list(self.fc_dropout)}")
        if self.fc_kernel < 1 or self.fc_kernel % 2 == 0:
            problems.append(f"fc_kernel must be odd, got {self.fc_kernel}")
        if self.l1 < 0 or self.l2 < 0:
            problems.append(f"l1 and l2 must be >= 0, got {self.l1} and {self.l2}")
        if len(self.segments) != 3 or min(self.segments) <= 2 * layers:
            problems.append(f"segments (training, validation, inference) must be 3 sides "
                            f"> {2 * layers}, got {list(self.segments)}")
        if problems:
            raise ValueError("DeepMedicConfig: " + "; ".join(problems))

    @property
    def layers(self) -> int:
        return len(self.features)


class _Architecture(TypedDict):
    """The :class:`DeepMedicConfig` fields the paper's presets share."""

    features: tuple[int, ...]
    factors: tuple[int, ...]
    fc: tuple[int, ...]
    segments: tuple[int, int, int]


_PAPER: _Architecture = {"features": (30, 30, 40, 40, 40, 40, 50, 50), "factors": (3, 5),
                         "fc": (250, 250), "segments": (37, 17, 45)}
DEEPMEDIC_PRESETS: dict[str, DeepMedicConfig] = {
    "basic": DeepMedicConfig(**_PAPER, activation="relu"),
    "default": DeepMedicConfig(**_PAPER, activation="prelu", residual=(4, 6, 8),
                               fc_residual=(2,), fc_dropout=(0.0, 0.5, 0.5), l1=1e-6, l2=1e-4),
    "tiny": DeepMedicConfig((16, 16, 16, 16), (3, 5), (32, 32), "prelu", residual=(4,),
                            fc_residual=(2,), fc_dropout=(0.0, 0.5, 0.5), l1=1e-6, l2=1e-4,
                            segments=(17, 9, 25)),
}


def segment_output(segment: int, layers: int) -> int:
    """Output side of a normal-pathway segment side: ``segment - 2 layers`` (37 -> 21 for 8
    layers); 0 or less means no output."""
    return segment - 2 * layers


def context_margin(layers: int, factors: Sequence[int]) -> int:
    """Image voxels per side beyond the output that the pathways read at most, for any output
    size: ``max(L, max_f (f L + (f - 1) / 2))`` (42 for 8 layers and factors 3, 5: a 21^3
    output reads a 105^3 neighbourhood). Whole-volume inference pads the volume by it."""
    return max([layers, *(f * layers + (f - 1) // 2 for f in factors)])


def subsampled_output(output: int, factor: int) -> int:
    """Outputs ``Os`` of the pathway subsampled by ``factor`` along an axis of ``output``
    outputs: ``ceil(O / f)``, one more if ``Os f - O`` is odd, so that the ``Os f`` repeated
    outputs are cropped to ``O`` symmetrically (by ``(Os f - O) / 2`` at both ends). ``Os`` and
    ``O`` have the same parity (f is odd).

    >>> subsampled_output(21, 3), subsampled_output(21, 5), subsampled_output(29, 3)
    (7, 5, 11)
    """
    os_ = -(-output // factor)
    return os_ + (os_ * factor - output) % 2


def pathway_inputs(output: Sequence[int], layers: int, factors: Sequence[int]
                   ) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """``(stride, sides)`` of each pathway's input for ``output`` outputs per axis: the normal
    pathway ``(1, O + 2L)``, then per factor ``(f, Os + 2L)`` (:func:`subsampled_output`),
    every input a grid centred on the output (:func:`grid_offset`). The subsampled sides never
    exceed the normal one and have its parity, so they pad to it symmetrically.

    >>> pathway_inputs((21, 21, 21), 8, (3, 5))
    ((1, (37, 37, 37)), (3, (23, 23, 23)), (5, (21, 21, 21)))
    """
    return ((1, tuple(int(o) + 2 * layers for o in output)),
            *((f, tuple(subsampled_output(int(o), f) + 2 * layers for o in output))
              for f in factors))


def grid_offset(side: int, stride: int) -> int:
    """Where a grid of ``side`` voxels, ``stride`` apart, starts relative to a patch's centre
    voxel (``centre = start + size // 2``, the patches' convention) so that it is symmetric
    about the patch: ``-(stride (side - 1) + 1 - side % 2) / 2`` (an even grid sits about the
    point half a voxel before the centre voxel, as an even patch does). Stride 1: ``-side // 2``
    (the plain patch). For the subsampled pathways this is DeepMedic's sampling: every
    ``f``-th image voxel, the grid through the centre of the output.

    >>> grid_offset(37, 1), grid_offset(23, 3), grid_offset(21, 5), grid_offset(4, 3)
    (-18, -33, -50, -5)
    """
    return -((stride * (side - 1) + 1 - side % 2) // 2)


UNET_PRESETS: dict[str, tuple[int, ...]] = {
    "tiny": (8, 16, 32),  # tests and the CPU demo
    "paper": (30, 60, 120, 240, 320, 320),  # the fork used in paper 001 (30 features, cap 320)
}


def unet_widths(base: int, stages: int, cap: int = 320) -> tuple[int, ...]:
    """nnU-Net's features per stage: ``base`` doubled per stage, at most ``cap``.

    >>> unet_widths(30, 6)
    (30, 60, 120, 240, 320, 320)
    """
    if base < 1 or stages < 2 or cap < base:
        raise ValueError(f"unet_widths: expected base >= 1, stages >= 2, cap >= base; got "
                         f"base={base}, stages={stages}, cap={cap}")
    return tuple(min(base * 2**i, cap) for i in range(stages))


MODELS: dict[str, dict[str, Any]] = {"unet": UNET_PRESETS, "deepmedic": DEEPMEDIC_PRESETS}
"""Model name -> its presets (``model.name`` and ``model.preset`` of a trial config)."""

SEGMENT_KEYS = ("train_input", "validation_input", "inference_input")



def check_preset(name: str, preset: str) -> None:
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r} (known: {', '.join(MODELS)})")
    if preset not in MODELS[name]:
        raise ValueError(f"model.preset: unknown preset {preset!r} for {name} "
                         f"(known: {', '.join(sorted(MODELS[name]))})")


def output_patch(name: str, preset: str, input_patch: Sequence[int]) -> tuple[int, int, int]:
    """The output patch the training input ``input_patch`` (3 sides) gives.

    U-Net: ``input_patch`` itself; its sides must be divisible by ``2 ** (stages - 1)`` of the
    preset. DeepMedic: ``input_patch`` is the normal-pathway segment and the output is
    ``input_patch - 2 L`` per side for ``L`` layers (001 §V-A: 37^3 -> 21^3); every side must
    exceed ``2 L``. A patch that does not fit is a ``ValueError`` naming the patch, the output
    it would give and what fits.

    >>> output_patch("deepmedic", "basic", (37, 37, 37))
    (21, 21, 21)
    """
    check_preset(name, preset)
    patch = tuple(int(p) for p in input_patch)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"{name}/{preset}: expected 3 positive sides, got {list(input_patch)}")
    if name == "unet":
        divisor = 2 ** (len(UNET_PRESETS[preset]) - 1)
        if any(p % divisor for p in patch):
            lower = [max(divisor, p // divisor * divisor) for p in patch]
            upper = [-(-p // divisor) * divisor for p in patch]
            raise ValueError(f"{name}/{preset}: input patch {list(patch)} would give output "
                             f"{list(patch)}, but the U-Net needs sides divisible by {divisor} "
                             f"(2^(stages - 1)); nearest that fit: {lower} or {upper}")
        return patch
    layers = DEEPMEDIC_PRESETS[preset].layers
    x, y, z = patch
    output = (segment_output(x, layers), segment_output(y, layers), segment_output(z, layers))
    if min(output) < 1:
        raise ValueError(f"{name}/{preset}: input segment {list(patch)} gives output "
                         f"{list(output)}: every side needs > {2 * layers} voxels (the "
                         f"{2 * layers + 1}^3 receptive field of {layers} layers; e.g. "
                         f"{2 * layers + 21} -> 21)")
    return output


def segment_sizes(name: str, preset: str) -> dict[str, tuple[int, int, int] | None]:
    """The preset's input segments, keys :data:`SEGMENT_KEYS`: ``train_input``,
    ``validation_input``, ``inference_input``. DeepMedic: its normal-pathway segments (the
    papers: 37^3, 17^3 and 45^3, i.e. outputs of 21^3, 1^3 and 29^3); the U-Net: ``None`` each
    (it trains on the study's patch and infers with a sliding window of that patch)."""
    check_preset(name, preset)
    if name == "unet":
        return dict.fromkeys(SEGMENT_KEYS)
    return {key: (side,) * 3
            for key, side in zip(SEGMENT_KEYS, DEEPMEDIC_PRESETS[preset].segments, strict=True)}


