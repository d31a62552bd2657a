"""Seeded synthetic 3D imbalanced segmentation data, written to disk in real layouts.

Three presets mimic the papers' datasets (001 §III, Table I; 000 Fig. 2):

``synthetic-brats`` (BraTS layout, 4 channels t1/t1ce/t2/flair, 1 mm)
    Skull-stripped brain with white/grey matter, cortical folds and ventricles; 1-3 tumours per
    case, each an irregular necrotic core (label 1) with a partly enhancing rim (label 4) inside
    irregular oedema (label 2). Tumour core = labels 1 + 4. The enhancing rim is bright only
    in t1ce, oedema bright in t2/flair, necrosis resembles CSF in t2: good contrast in some
    channels, distractors in others.
``synthetic-atlas`` (ATLAS 2.0 layout, 1 channel t1w, 1 mm)
    Same brain model, one channel; 1-2 stroke-like lesions whose T1 intensity lies between
    CSF and grey matter, so lesion and normal-tissue intensities overlap (000 Fig. 2b).
``synthetic-kits`` (KiTS19 layout, CT in HU, 3.2 x 1.6 x 1.6 mm)
    Abdomen cross-section with fat, muscle, spine, liver, bowel gas and two kidneys (cortex,
    medulla, sinus; label 1) and a tumour growing from one kidney (label 2, the rare class)
    whose attenuation overlaps medulla, liver and muscle.

Cases differ in lesion number, size (log-normal, heavy-tailed like Table I's std), shape
(unions of random ellipsoids with a noisy boundary), position, texture and — the knob that
makes few training cases over-fit — per-case lesion contrast drawn from ``contrast``. Every
number that shapes the data is a parameter, declared with its default and valid range in
:mod:`study.data.presets`. Lesion sizes are defined relative to the field of view, so the
imbalance ratio hardly depends on ``shape``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from study.data import layouts
from study.data._atomic import file_lock, publish, remove_stale_staging, staging_dir
from study.data.presets import CHANNELS, LAYOUTS, VERSION, check_params
from study.identity import DatasetConfig, trial_id

# ----------------------------------------------------------------------------- helpers

def _smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed with ``sigma`` voxels (computed coarsely for
    large sigma: the field is band-limited, so a coarse grid loses nothing visible)."""
    shape = tuple(int(s) for s in shape)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (3,))
    factor = np.maximum(1, np.floor(sigma / 2)).astype(int)
    coarse = tuple(max(2, -(-s // f)) for s, f in zip(shape, factor, strict=True))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32),
                                    sigma / factor, mode="wrap")
    if coarse != shape:
        zoom = [s / c for s, c in zip(shape, coarse, strict=True)]
        field = ndimage.zoom(field, zoom, order=1, mode="nearest", grid_mode=True)
        field = field[tuple(slice(0, s) for s in shape)]
    return field / (field.std() + 1e-12)


def _box(centre, reach, shape) -> tuple[slice, ...]:
    """The index box of half-size ``reach`` (voxels per axis) around ``centre``, clipped."""
    lo = np.maximum(np.floor(np.asarray(centre) - reach).astype(int), 0)
    hi = np.minimum(np.ceil(np.asarray(centre) + reach).astype(int) + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _blob(rng, shape, centre, radius_mm, spacing, parts=(2, 5), roughness=0.25):
    """An irregular solid: a union of ``parts`` random ellipsoids around ``centre`` (voxel
    coordinates) with a noise-perturbed boundary. Returns (box slices, bool mask in the box)."""
    spacing = np.asarray(spacing, float)
    radius = radius_mm / spacing  # per-axis voxels
    box = _box(centre, 2.6 * radius + 2, shape)
    grid = np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float32) for s in box],
                       indexing="ij")
    inside = np.full(grid[0].shape, np.inf, np.float32)
    for _ in range(int(rng.integers(parts[0], parts[1] + 1))):
        offset = rng.normal(0, 0.45, 3) * radius
        radii = radius * rng.uniform(0.45, 1.0, 3)
        dist = sum(((g - (c + o)) / r) ** 2 for g, c, o, r in
                   zip(grid, centre, offset, radii, strict=True))
        inside = np.minimum(inside, dist)
    if roughness:
        inside *= 1 + roughness * _smooth_noise(rng, inside.shape, np.maximum(radius / 3, 0.7))
    mask = inside <= 1.0
    if not mask.any():  # a blob too small for the grid is at least its centre voxel
        local = tuple(int(np.clip(round(c) - s.start, 0, s.stop - s.start - 1))
                      for c, s in zip(centre, box, strict=True))
        mask[local] = True
    return box, mask


def _lesion_radius(rng, params, base_mm: float, sigma: float) -> float:
    """Log-normal lesion radius (heavy-tailed volumes, as Table I's large stds), clipped at
    -1.5 and +2.5 sigma so that no lesion is a lone voxel or fills the organ."""
    factor = np.exp(np.clip(rng.normal(0, sigma), -1.5 * sigma, 2.5 * sigma))
    return float(params["lesion_scale"] * base_mm * factor)


def _fov_mm(params) -> np.ndarray:
    return np.asarray(params["shape"], float) * np.asarray(params["spacing"], float)


# ----------------------------------------------------------------------------- brain model

# Relative intensities (white matter = 1 on T1) of wm, gm, csf, necrosis, enhancing, oedema.
_BRAIN_TABLE = {
    "t1": (1.00, 0.78, 0.35, 0.45, 0.80, 0.75),
    "t1ce": (1.00, 0.80, 0.35, 0.45, 1.55, 0.78),
    "t2": (0.60, 0.80, 1.70, 1.45, 1.05, 1.30),
    "flair": (0.75, 0.90, 0.25, 0.95, 1.10, 1.45),
    "t1w": (1.00, 0.72, 0.30, 0.38, 0.38, 0.38),  # ATLAS: one lesion intensity (index 3)
}
_WM, _GM, _CSF, _NEC, _ENH, _OED = range(6)


def _brain(rng, params):
    """Brain mask, tissue map (0 wm, 1 gm, 2 csf) and normalised depth (0 centre, 1 surface)."""
    shape = tuple(params["shape"])
    fov = _fov_mm(params)
    spacing = np.asarray(params["spacing"], float)
    grid = np.meshgrid(*[(np.arange(s, dtype=np.float32) + 0.5) * d
                         for s, d in zip(shape, spacing, strict=True)], indexing="ij")
    centre = fov / 2 + rng.uniform(-0.04, 0.04, 3) * fov
    radii = fov * rng.uniform(0.36, 0.44, 3)
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    scale_vox = min(shape) / 48
    depth = r2 / (1 + 0.06 * _smooth_noise(rng, shape, 8 * scale_vox))
    brain = depth <= 1.0
    folds = _smooth_noise(rng, shape, 1.3 * scale_vox)
    tissue = np.zeros(shape, np.uint8)
    tissue[brain & ((depth > 0.8) | ((depth > 0.55) & (folds > 0.7)))] = 1
    tissue[brain & (depth > 0.9) & (folds < -0.9)] = 2  # sulcal CSF
    for side in (-1, 1):  # lateral ventricles
        vc = centre + np.array([0.05, 0.0, side * 0.12]) * fov * rng.uniform(0.8, 1.2, 3)
        vr = fov * np.array([0.16, 0.05, 0.045]) * rng.uniform(0.7, 1.3, 3)
        ventricle = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, vc, vr, strict=True)) <= 1
        tissue[ventricle & brain] = 2
    return brain, tissue, depth


def _anchor(rng, allowed: np.ndarray) -> np.ndarray:
    coords = np.argwhere(allowed)
    return coords[rng.integers(len(coords))].astype(float)


def _mr_image(rng, params, brain, tissue, parts, channels):
    """Channels [C, *shape] float32 from a tissue map and lesion part masks (name -> mask,
    with per-part intensity index into ``_BRAIN_TABLE``)."""
    shape = tuple(params["shape"])
    scale_vox = min(shape) / 48
    texture = _smooth_noise(rng, shape, 1.5 * scale_vox)
    bias = 1 + params["bias"] * _smooth_noise(rng, shape, 16 * scale_vox)
    lesion_texture = _smooth_noise(rng, shape, 0.8 * scale_vox)
    out = np.empty((len(channels), *shape), np.float32)
    for c, name in enumerate(channels):
        table = np.asarray(_BRAIN_TABLE[name], np.float32)
        image = table[:3][tissue]
        for index, mask, contrast in parts:
            # Lesion intensity = white matter + contrast x (table value - white matter),
            # heterogeneous inside (texture): visibility differs between lesions and cases,
            # and (per-channel contrast) between channels.
            contrast = np.broadcast_to(np.asarray(contrast, np.float32), (len(channels),))[c]
            value = table[_WM] + contrast * (table[index] - table[_WM])
            image[mask] = value * (1 + 2 * params["texture"] * lesion_texture[mask])
        image = ndimage.gaussian_filter(image, 0.5)  # partial-volume blur
        image = image * (1 + params["texture"] * texture) * bias
        image += rng.normal(0, params["noise"], shape).astype(np.float32)
        out[c] = np.where(brain, np.maximum(image, 0.01), 0.0)
    return out


def _generate_brats(params, index):
    rng = np.random.default_rng([params["seed"], index, 1])
    shape = tuple(params["shape"])
    spacing = np.asarray(params["spacing"], float)
    fov = _fov_mm(params)
    brain, tissue, depth = _brain(rng, params)
    labels = np.zeros(shape, np.uint8)
    case_contrast = rng.uniform(*params["contrast"])
    oedema_contrast = rng.uniform(0.5, 1.0)
    # One tumour look per case (ring-enhancing with necrosis, solid enhancing, or
    # non-enhancing like many low-grade cores): two training cases show at most two looks.
    phenotype = params["phenotypes"][int(rng.integers(len(params["phenotypes"])))]
    allowed = brain & (depth < 0.6) & (tissue != 2)
    parts = []
    for _ in range(int(rng.integers(params["lesions"][0], params["lesions"][1] + 1))):
        centre = _anchor(rng, allowed)
        radius = _lesion_radius(rng, params, 0.07 * fov.min(), 0.4)
        box, core = _blob(rng, shape, centre, radius, spacing)
        core &= brain[box]
        rim = core & ~ndimage.binary_erosion(core)
        enhancing = rim & (rng.random(core.shape) < rng.uniform(0.5, 0.9))
        if phenotype == "solid":
            enhancing = core
        elif phenotype == "non_enhancing":
            enhancing = np.zeros_like(core)
        grow = max(1, int(round(rng.uniform(1.0, 3.0) * radius / spacing.min() * 0.6)))
        big = tuple(slice(max(s.start - grow, 0), min(s.stop + grow, n))
                    for s, n in zip(box, shape, strict=True))
        local = np.zeros(tuple(s.stop - s.start for s in big), bool)
        inner = tuple(slice(s.start - b.start, s.stop - b.start)
                      for s, b in zip(box, big, strict=True))
        local[inner] = core
        oedema = ndimage.binary_dilation(local, iterations=grow)
        oedema &= _smooth_noise(rng, local.shape, 1.2) > -0.6
        oedema &= brain[big] & ~local
        region = labels[big]
        region[oedema & (region == 0)] = 2
        core_region = labels[box]
        core_region[core] = 1
        core_region[enhancing] = 4
    # Per-case, per-channel visibility (channel_jitter): lesions of one case enhance strongly,
    # another's hardly (like non-enhancing low-grade cores); few cases cover few such looks.
    jitter = np.exp(rng.normal(0, params["channel_jitter"], 4))
    parts.append((_OED, labels == 2, oedema_contrast))
    parts.append((_NEC, labels == 1, case_contrast * jitter))
    parts.append((_ENH, labels == 4, case_contrast * jitter))
    image = _mr_image(rng, params, brain, tissue, parts, CHANNELS["synthetic-brats"])
    return image, labels


def _generate_atlas(params, index):
    rng = np.random.default_rng([params["seed"], index, 2])
    shape = tuple(params["shape"])
    spacing = np.asarray(params["spacing"], float)
    fov = _fov_mm(params)
    brain, tissue, depth = _brain(rng, params)
    labels = np.zeros(shape, np.uint8)
    allowed = brain & (depth < 0.85) & (tissue != 2)
    for _ in range(int(rng.integers(params["lesions"][0], params["lesions"][1] + 1))):
        centre = _anchor(rng, allowed)
        radius = _lesion_radius(rng, params, 0.045 * fov.min(), 0.5)
        box, lesion = _blob(rng, shape, centre, radius, spacing, roughness=0.35)
        region = labels[box]
        region[lesion & brain[box]] = 1
    contrast = rng.uniform(*params["contrast"])
    parts = [(_NEC, labels == 1, contrast)]
    image = _mr_image(rng, params, brain, tissue, parts, CHANNELS["synthetic-atlas"])
    return image, labels


# ----------------------------------------------------------------------------- abdomen (CT)

def _generate_kits(params, index):
    """CT-like abdomen in HU; labels 0 background, 1 kidney, 2 tumour."""
    rng = np.random.default_rng([params["seed"], index, 3])
    shape = tuple(params["shape"])
    spacing = np.asarray(params["spacing"], float)
    # normalised coordinates in [-1, 1] per axis (z = D, y = H anterior->posterior, x = W)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape],
                          indexing="ij")
    scale_vox = min(shape[1:]) / 80
    wob = 1 + 0.04 * _smooth_noise(rng, shape, 10 * scale_vox)
    ay, ax = rng.uniform(0.72, 0.82), rng.uniform(0.88, 0.95)
    body_r = (y / ay) ** 2 + (x / ax) ** 2
    body = body_r <= wob
    hu = np.full(shape, -1000.0, np.float32)
    visceral = _smooth_noise(rng, shape, 2.5 * scale_vox)
    hu[body] = np.where(visceral[body] > 0.3, -90.0, 45.0)
    hu[body & (body_r > 0.78 * wob)] = -100.0  # subcutaneous fat
    hu[body & (body_r > 0.97 * wob)] = 40.0  # skin
    # spine (posterior centre): cortical ring, trabecular bone, canal
    sy = 0.5 + rng.uniform(-0.04, 0.04)
    spine_r = ((y - sy) / 0.16) ** 2 + (x / 0.13) ** 2
    hu[spine_r <= 1] = 600.0
    hu[spine_r <= 0.6] = 220.0
    hu[((y - sy - 0.2) / 0.05) ** 2 + (x / 0.05) ** 2 <= 1] = 20.0
    for side in (-1, 1):  # psoas muscles
        hu[((y - 0.35) / 0.12) ** 2 + ((x - side * 0.22) / 0.09) ** 2 <= 1] = 50.0
    # liver on the patient's right (image left), upper part of the volume
    liver = (((x + 0.45) / 0.42) ** 2 + ((y + 0.05) / 0.45) ** 2
             + ((z + 0.9) / rng.uniform(0.9, 1.3)) ** 2) <= 1
    hu[liver & body] = 100.0
    # bowel: fluid and gas pockets anteriorly
    bowel = (_smooth_noise(rng, shape, 1.5 * scale_vox) > 1.3) & (y < 0.0) & body & ~liver
    hu[bowel] = np.where(rng.random(int(bowel.sum())) < 0.5, -850.0, 15.0)
    labels = np.zeros(shape, np.uint8)
    kidney_parts = []
    for side in (-1, 1):
        kc = np.array([rng.uniform(-0.15, 0.15), 0.42 + rng.uniform(-0.05, 0.05),
                       side * rng.uniform(0.38, 0.46)])
        kr = np.array([0.5, 0.15, 0.12]) * rng.uniform(0.85, 1.15, 3)
        kd = ((z - kc[0]) / kr[0]) ** 2 + ((y - kc[1]) / kr[1]) ** 2 + ((x - kc[2]) / kr[2]) ** 2
        kidney = kd <= 1 + 0.05 * visceral
        sinus = kidney & (kd < 0.35) & ((x - kc[2]) * side < 0)  # medial renal sinus
        medulla = kidney & (kd < 0.6) & ~sinus
        hu[kidney] = 190.0
        hu[medulla] = 125.0
        hu[sinus] = np.where(visceral[sinus] > 0, -60.0, 10.0)
        labels[kidney] = 1
        kidney_parts.append(kidney)
    # tumour(s): grow from a kidney surface point, extending inside and outside it
    mm_scale = float(np.mean(np.asarray(shape[1:]) * spacing[1:]))
    contrast = rng.uniform(*params["contrast"])
    for _ in range(int(rng.integers(params["lesions"][0], params["lesions"][1] + 1))):
        kidney = kidney_parts[int(rng.integers(2))]
        surface = kidney & ~ndimage.binary_erosion(kidney)
        centre = _anchor(rng, surface if surface.any() else kidney)
        radius = _lesion_radius(rng, params, 0.045 * mm_scale, 0.55)
        box, tumour = _blob(rng, shape, centre, radius, spacing, roughness=0.2)
        tumour &= body[box]
        base = rng.uniform(40.0, 90.0)  # tumour HU before contrast scaling
        value = 190.0 + contrast * (base - 190.0)  # contrast 1: base; 0: like kidney cortex
        local = hu[box]
        local[tumour] = value + params["texture"] * 2 * _smooth_noise(rng, tumour.shape, 0.8)[
            tumour]
        if tumour.sum() > 60:  # necrotic centre of larger tumours
            necrosis = ndimage.binary_erosion(tumour, iterations=2) & (
                _smooth_noise(rng, tumour.shape, 1.0) > 0.5)
            local[necrosis] = 20.0
        labels[box][tumour] = 2
    hu = ndimage.gaussian_filter(hu, (0.4, 0.7, 0.7))  # scanner point-spread
    hu += params["texture"] * _smooth_noise(rng, shape, 1.2 * scale_vox) * body
    hu += rng.normal(0, params["noise"], shape).astype(np.float32)
    return hu[None].astype(np.float32), labels


_GENERATORS: dict[str, Callable] = {"synthetic-brats": _generate_brats,
                                    "synthetic-atlas": _generate_atlas,
                                    "synthetic-kits": _generate_kits}


def generate_case(params: Mapping[str, Any], index: int, preset: str = "synthetic-brats"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One case: (channels float32 [C, D, H, W], raw labels uint8 [D, H, W]).

    Deterministic in (``params``, ``index``): case ``index`` is the same whatever ``cases`` is.
    """
    check_params(preset, params)
    return _GENERATORS[preset](params, index)


def case_ids(params: Mapping[str, Any], preset: str = "synthetic-brats") -> list[str]:
    """The case ids as the preset's layout names them."""
    if LAYOUTS[preset] == "kits19":
        return [f"case_{index:05d}" for index in range(params["cases"])]
    if LAYOUTS[preset] == "atlas":
        return [f"sub-synth{index:04d}" for index in range(params["cases"])]
    return [f"Synth_{index:04d}" for index in range(params["cases"])]


# ----------------------------------------------------------------------------- writing

def _write(array: np.ndarray, path: Path, spacing) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def write_case(preset: str, params: Mapping[str, Any], index: int, root: Path) -> None:
    """Generate case ``index`` and write it under ``root`` in the preset's layout."""
    channels, labels = generate_case(params, index, preset)
    case = case_ids(params, preset)[index]
    paths, label_path = layouts.LAYOUTS[LAYOUTS[preset]].write_paths(root, case, CHANNELS[preset])
    if preset == "synthetic-kits":
        stored = np.clip(np.rint(channels), -1024, 3071).astype(np.int16)
    else:
        stored = np.clip(np.rint(channels * 1000), 0, 32767).astype(np.int16)
    for path, channel in zip(paths, stored, strict=True):
        _write(channel, path, params["spacing"])
    _write(labels, label_path, params["spacing"])


def ensure_generated(params: Mapping[str, Any], root: str | Path,
                     preset: str = "synthetic-brats", progress: Callable | None = None) -> Path:
    """Write the dataset to ``root`` unless it is complete there; safe under concurrency.

    One process generates while the others wait on a lock file next to ``root``; generation
    goes to a temporary sibling folder renamed into place, so a reader never sees a partial
    dataset, and staging folders left by a killed generator are removed by the next one.
    Returns ``root``.
    """
    check_params(preset, params)
    root = Path(root)
    marker = root / "COMPLETE"
    if marker.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        if marker.exists():
            return root
        remove_stale_staging(root)  # left by a killed generator
        staging = staging_dir(root)
        try:
            clock = time.perf_counter()
            for index in range(params["cases"]):
                write_case(preset, params, index, staging)
                if progress is not None:
                    progress(index + 1, params["cases"], time.perf_counter() - clock)
            (staging / "COMPLETE").write_text(f"{preset} version {VERSION}\n")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        publish(staging, root)
    return root


def ensure_dataset(dataset: DatasetConfig, data_dir: str | Path) -> Path:
    """The folder of a trial's synthetic ``dataset`` under ``data_dir``, generated there first
    if missing (:func:`ensure_generated`): ``<preset>-<first 8 hex digits of the trial_id of
    {"synthetic": its generator parameters}>``, so trials with the same parameters share one
    folder and different parameters never meet."""
    if dataset.synthetic is None:
        raise ValueError(f"dataset {dataset.name}: not synthetic (no generator parameters)")
    params = dataset.to_dict()["synthetic"]
    folder = Path(data_dir) / f"{dataset.name}-{trial_id({'synthetic': params})[:8]}"
    return ensure_generated(params, folder, preset=dataset.name)
