"""Asymmetric augmentation hook (001 eq. 20-21) and a channel-consistent random flip."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._batch import binary_rare, check_batch, uniform
from ._validate import check_real

Transform = Callable[[torch.Tensor, torch.Tensor, "torch.Generator | None"],
                     tuple[torch.Tensor, torch.Tensor]]
"""``transform(x_b [C_in, *spatial], y_b [*spatial], generator) -> (x_b, y_b)`` for one sample."""


class AsymmetricAugmentation:
    """Eq. 21: augment rare-class samples always, background samples with probability ``p``.

    For every sample of the batch: if it is a rare-class sample (``y . r == 1``), it is passed
    through ``transform`` (``A`` of eq. 20); otherwise it is passed through ``transform`` with
    probability ``p_background`` and left unchanged otherwise (``A_small``: the same
    transformations, applied with smaller probability). ``p_background = 1`` is standard
    (symmetric) augmentation. A *rare-class sample* is a patch containing at least one voxel of
    a rare class (``by="any"``, default) or whose centre voxel is of a rare class
    (``by="centre"``, the DeepMedic notion of a foreground-centred segment).

    ``transform`` must apply the same geometric change to every input channel and to the
    label (:class:`RandomFlip` does). The reference DeepMedic code gates the other way round
    (background always augmented) and flips only channel 0: neither is reproduced.

    Args:
        transform: per-sample augmentation ``(x_b, y_b, generator) -> (x_b, y_b)``.
        p_background: probability that a background sample is augmented, in [0, 1]
            (001 grid: 0 0.25 0.5 0.75 1).
        rare: one 0 or 1 per class.
        by: ``"any"`` or ``"centre"`` (see above).

    Example::

        >>> import torch
        >>> aug = AsymmetricAugmentation(RandomFlip(axes=(0, 1)), p_background=0.25, rare=[0, 1])
        >>> x, y = torch.randn(2, 4, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> x_aug, y_aug = aug(None, x, y)
    """

    def __init__(self, transform: Transform, p_background: float,
                 rare: Sequence[float] | torch.Tensor, *, by: str = "any"):
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {transform!r}")
        self.transform = transform
        self.p_background = check_real("p_background", p_background, low=0.0, high=1.0)
        self.rare = binary_rare(rare)
        if by not in ("any", "centre"):
            raise ValueError(f'by must be "any" or "centre", got {by!r}')
        self.by = by

    def rare_samples(self, target: torch.Tensor) -> torch.Tensor:
        """Bool ``[N]``: which samples are rare-class samples (``y . r == 1``).

        Labels outside ``0..C-1`` (ignored voxels) count as non-rare.
        """
        rare = torch.as_tensor(self.rare, device=target.device) > 0.5
        labels = target.long()
        inside = (labels >= 0) & (labels < len(self.rare))
        is_rare = rare[labels.clamp(0, len(self.rare) - 1)] & inside
        if self.by == "any":
            return is_rare.flatten(1).any(dim=1)
        centre = tuple(s // 2 for s in target.shape[1:])
        return is_rare[(slice(None), *centre)]

    def __call__(self, model: nn.Module | None, x: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the augmented batch; ``model`` is unused (uniform regularizer signature)."""
        check_batch(x, target)
        draws = uniform(x.shape[0], generator, x.device)
        augment = self.rare_samples(target) | (draws < self.p_background)
        xs, ys = list(x.unbind(0)), list(target.unbind(0))
        for i in torch.nonzero(augment).flatten().tolist():
            xs[i], ys[i] = self.transform(xs[i], ys[i], generator)
        return torch.stack(xs), torch.stack(ys)

    def __repr__(self) -> str:
        return (f"AsymmetricAugmentation({self.transform!r}, p_background={self.p_background}, "
                f"rare={self.rare}, by={self.by!r})")


class RandomFlip:
    """Flip each listed spatial axis with probability ``p``, identically for every channel and
    the label (a transform for :class:`AsymmetricAugmentation`).

    Args:
        axes: spatial axes of one sample's label ``y_b`` (0 = first spatial axis).
        p: flip probability per axis, in [0, 1].
    """

    def __init__(self, axes: Sequence[int] = (0, 1, 2), p: float = 0.5):
        self.axes = tuple(int(a) for a in axes)
        self.p = check_real("p", p, low=0.0, high=1.0)

    def __call__(self, x_b: torch.Tensor, y_b: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        for axis in self.axes:
            if axis >= y_b.ndim:
                raise ValueError(f"axis {axis} out of range for a label of shape "
                                 f"{tuple(y_b.shape)}")
        flips = uniform(len(self.axes), generator, torch.device("cpu")) < self.p
        dims = [a for a, f in zip(self.axes, flips.tolist(), strict=True) if f]
        if not dims:
            return x_b, y_b
        return x_b.flip([d + 1 for d in dims]), y_b.flip(dims)

    def __repr__(self) -> str:
        return f"RandomFlip(axes={self.axes}, p={self.p})"
