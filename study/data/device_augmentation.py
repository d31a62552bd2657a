"""The nnunet augmentation regime (001 §V-A.4) applied to a whole batch as torch ops, on the
training device, so that the CPU sampler only cuts (:meth:`PatchSampler.sample_deferred
<study.data.sampling.PatchSampler.sample_deferred>`).

The draws, their probabilities and ranges, the order of the transforms and the per-channel
intensity transforms are those of :class:`~study.data.augmentation.NnUNetAugmentation`
(nnU-Net v1, batchgenerators' semantics); so are the geometry (output voxel ``q`` reads the
cut region at ``region // 2 + M (q - patch // 2 + e(q))``, zeros outside it) and the label
rule. Documented deviations from that CPU regime (and from nnU-Net):

* the image is interpolated trilinearly (``grid_sample``; PyTorch has no 3-D cubic
  interpolation), not by a cubic spline (nnU-Net's ``order_data=3``): slightly smoother
  resampled patches;
* the elastic displacement is nnU-Net's smoothed uniform noise generated on a grid about
  ``sigma / 3`` voxels coarse and upsampled trilinearly
  (:func:`~study.data.augmentation.coarse_displacement`: same amplitude and correlation
  length);
* Gaussian noise comes from a torch generator on the device seeded by the sample's draw (the
  same draws, another noise field than the CPU regime's).

Labels: every foreground class (and the ignore label) is interpolated linearly as an
indicator and kept where it reaches 0.5, higher classes winning, the ignore label over all
(nnU-Net's ``order_seg=1`` as batchgenerators does it, the CPU regime's rule). Not an argmax
over the one-hot channels: that would turn the thin rim between two touching classes into
the class with the larger share instead of background where neither reaches one half, and
would differ from nnU-Net; not nearest neighbour: that shifts boundaries by up to half a
voxel where linear-then-threshold keeps them where the image's edge goes. The ignore label
wins so that no voxel half in an ignored region is trained on.

Every value a sample needs is on the host (in :class:`~study.data.augmentation.Deferred`),
so applying a batch starts no host-device synchronisation. Randomness: the parameters come
from a NumPy generator (the sampler's, or :class:`BatchAugmenter`'s own for direct calls)
whose state is JSON-serialisable, so a resumed run is bit-exact on the CPU; CUDA's
``grid_sample`` forward is deterministic too.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from study.data.augmentation import Deferred, NnUNetAugmentation, regime
from study.objectives import IGNORE_INDEX

_TRUNCATE = 4.0  # SciPy's gaussian_filter kernel radius, in standard deviations
_GAMMA_EPS = 1e-7  # batchgenerators' epsilon of the gamma transform
_STD_EPS = 1e-8  # batchgenerators' epsilon when gamma restores the standard deviation


class BatchAugmenter:
    """The nnunet regime on a batch of tensors (module docstring), on the tensors' device.

    Args:
        classes: number of classes (background included); labels hold ``0 .. classes - 1``
            and possibly ``ignore_index``.
        augmentation: the regime (default nnU-Net's settings).
        seed: seeds the generator of :meth:`__call__`'s draws.
        ignore_index: the label of voxels no loss counts; ``None``: there is none.

    >>> import torch
    >>> augmenter = BatchAugmenter(classes=3, seed=0)
    >>> images, labels = torch.ones(2, 1, 8, 8, 8), torch.zeros(2, 8, 8, 8, dtype=torch.long)
    >>> out, out_labels = augmenter(images, labels, torch.tensor([False, False]))
    >>> bool(torch.equal(out, images)), bool(torch.equal(out_labels, labels))
    (True, True)
    """

    def __init__(self, classes: int, augmentation: NnUNetAugmentation | str = "nnunet",
                 seed: int = 0, *, ignore_index: int | None = IGNORE_INDEX):
        chosen = regime(augmentation)
        if not isinstance(chosen, NnUNetAugmentation):
            raise ValueError(f"augmentation: expected the nnunet regime, got {chosen.name!r}")
        self.augmentation: NnUNetAugmentation = chosen
        if classes < 1:
            raise ValueError(f"classes: expected an integer >= 1, got {classes}")
        self.classes, self.ignore_index = int(classes), ignore_index
        self.rng = np.random.default_rng([seed, 2])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, apply: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment the samples where ``apply`` (bool [B], read on the host: pass a CPU tensor
        to avoid a synchronisation) holds, with fresh draws of this augmenter's generator;
        images [B, C, *S], labels [B, *S] -> images float32 [B, C, *S], labels int64
        [B, *S]. The patch is its own region: what a rotation or scaling brings in from
        outside it is 0."""
        if labels.shape[0] != images.shape[0] or labels.shape[1:] != images.shape[2:] or \
                len(apply) != images.shape[0]:
            raise ValueError(f"expected images [B, C, *S], labels [B, *S] and apply [B], got "
                             f"{tuple(images.shape)}, {tuple(labels.shape)}, {len(apply)}")
        n_channels = images.shape[1]
        draws = [self.augmentation.draw(self.rng, n_channels) for _ in range(len(apply))]
        patch = images.shape[2:]
        deferred = self.augmentation.defer(
            [d if on else None for d, on in zip(draws, apply.tolist(), strict=True)],
            patch, patch)
        return self.apply(images, labels, deferred)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state of the generator of :meth:`__call__`'s draws."""
        return dict(self.rng.bit_generator.state)

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def apply(self, images: torch.Tensor, labels: torch.Tensor, deferred: Deferred
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``deferred`` to images [B, C, *region], labels [B, *region] cut around the
        samples' centres (``start = centre - region // 2``; any region, the larger
        :attr:`Deferred.region` being what keeps the case's voxels in reach) -> images
        float32 [B, C, *patch], labels int64 [B, *label_patch]. Pure."""
        if len(deferred.draws) != images.shape[0]:
            raise ValueError(f"deferred holds {len(deferred.draws)} samples, the batch "
                             f"{images.shape[0]}")
        out = [self._one(images[b].float(), labels[b], d, field, deferred)
               for b, (d, field) in enumerate(zip(deferred.draws, deferred.displacement,
                                                  strict=True))]
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])

    # -- one sample ---------------------------------------------------------------------

    def _one(self, image, label, draws, field, deferred: Deferred):
        patch, label_patch = deferred.patch, deferred.label_patch
        region = np.asarray(image.shape[1:])
        if draws is None or not draws.spatial:
            image = _centre(image, region, patch, channels=True)
            label = _centre(label, region, label_patch, channels=False).long()
            if draws is None:
                return image, label  # (stacked into a new tensor by apply)
        else:
            image, label = self._spatial(image, label, draws, field, deferred)
        image = _intensity(image, draws)
        if not draws.mirror_axes:
            return image, label
        return image.flip([a + 1 for a in draws.mirror_axes]), label.flip(draws.mirror_axes)

    def _spatial(self, image, label, draws, field, deferred: Deferred):
        """Rotation, scaling and elastic displacement in one resampling (module docstring)."""
        patch, label_patch = deferred.patch, deferred.label_patch
        device = image.device
        region = np.asarray(image.shape[1:])
        matrix = self.augmentation.matrix(draws)
        offsets = [torch.arange(n, dtype=torch.float32, device=device) - n // 2 for n in patch]
        q = [offsets[j].view([-1 if a == j else 1 for a in range(3)]) for j in range(3)]
        if field is not None:
            e = F.interpolate(_to(field, device)[None], size=tuple(patch),
                              mode="trilinear", align_corners=True)[0]
            q = [q[j] + e[j] for j in range(3)]
        # region voxel index i -> grid_sample's [-1, 1] (align_corners), in the order x, y, z
        # (W, H, D)
        grid = torch.stack([
            (sum(float(matrix[i, j]) * q[j] for j in range(3)) + float(region[i] // 2))
            * (2.0 / max(int(region[i]) - 1, 1)) - 1 for i in reversed(range(3))],
            dim=-1).expand(*patch, 3)[None]
        resampled = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                                  align_corners=True)[0]
        first = (patch - label_patch) // 2
        box = tuple(slice(a, a + n) for a, n in zip(first, label_patch, strict=True))
        values = list(range(1, self.classes))
        if self.ignore_index is not None and (label.dtype.is_signed or self.ignore_index >= 0):
            values.append(self.ignore_index)  # last: it wins (absent from unsigned labels)
        out = torch.zeros(tuple(label_patch), dtype=torch.int64, device=device)
        if values:
            indicators = torch.stack([label == v for v in values]).float()
            reached = F.grid_sample(indicators[None], grid[(slice(None),) + box],
                                    mode="bilinear", padding_mode="zeros",
                                    align_corners=True)[0]
            for value, share in zip(values, reached, strict=True):
                out = torch.where(share >= 0.5, value, out)
        return resampled, out


def _centre(volume: torch.Tensor, region: np.ndarray, size: np.ndarray, channels: bool
            ) -> torch.Tensor:
    """The ``size`` box of ``volume`` centred like the region (``region // 2 - size // 2``)."""
    start = region // 2 - size // 2
    box = tuple(slice(a, a + n) for a, n in zip(start, size, strict=True))
    return volume[(slice(None), *box) if channels else box]


def _intensity(image: torch.Tensor, d) -> torch.Tensor:
    """Noise, blur, brightness, contrast, inverted gamma and gamma, in nnU-Net's order
    (:meth:`NnUNetAugmentation.apply`; mirroring follows); ``image`` [C, *patch] is not
    modified."""
    image = image.clone()
    if d.noise_std is not None:
        generator = torch.Generator(image.device).manual_seed(d.seed)
        image += torch.randn(image.shape, generator=generator, device=image.device) * float(
            d.noise_std)
    for c, sigma in enumerate(d.blur if d.blur is not None else ()):
        if sigma > 0:
            image[c] = gaussian_blur(image[c], float(sigma))
    if d.brightness is not None:
        image *= _per_channel(d.brightness, image)
    if d.contrast is not None:
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        low, high = image.amin(dim=(1, 2, 3), keepdim=True), image.amax(dim=(1, 2, 3),
                                                                        keepdim=True)
        image = torch.minimum(torch.maximum((image - mean) * _per_channel(d.contrast, image)
                                            + mean, low), high)
    for gammas, inverted in ((d.inverted_gamma, True), (d.gamma, False)):
        if gammas is not None:
            image = _gamma(image, _per_channel(gammas, image), inverted)
    return image


def _per_channel(values: Sequence[float], image: torch.Tensor) -> torch.Tensor:
    return _to(np.asarray(values, np.float32), image.device)[:, None, None, None]


def _to(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` on ``device``; to CUDA through pinned memory, so that the copy does not wait
    for the work queued on the device."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _gamma(x: torch.Tensor, gamma: torch.Tensor, inverted: bool) -> torch.Tensor:
    """batchgenerators' ``augment_gamma`` with ``retain_stats``, per channel of [C, *S] (the
    CPU regime's ``_gamma``)."""
    x = -x if inverted else x
    dims = (1, 2, 3)
    mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True, correction=0)
    low = x.amin(dim=dims, keepdim=True)
    span = x.amax(dim=dims, keepdim=True) - low + _GAMMA_EPS
    x = torch.pow((x - low) / span, gamma) * span + low
    x = x - x.mean(dim=dims, keepdim=True) + mean
    x = x / (x.std(dim=dims, keepdim=True, correction=0) + _STD_EPS) * std
    return -x if inverted else x


def gaussian_blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """SciPy's ``gaussian_filter(volume, sigma)`` (mode ``reflect``: mirrored about the
    border, edge voxel repeated; kernel truncated at 4 sigma) of a 3-D tensor, separably."""
    radius = int(_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = volume
    for axis in range(3):
        n = volume.shape[axis]
        index = torch.arange(-radius, n + radius, device=volume.device) % (2 * n)
        index = torch.where(index < n, index, 2 * n - 1 - index)  # half-sample symmetric
        padded = out.index_select(axis, index)
        out = functools.reduce(operator.add, (float(w) * padded.narrow(axis, k, n)
                                              for k, w in enumerate(kernel)))
    return out
