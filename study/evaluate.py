"""Segmentation metrics and largest-connected-component post-processing.

Implements the metrics contract (``docs/ARCHITECTURE.md``, "Metrics") and the per-class
evaluation of a predicted label map:

* :func:`binary_metrics` — DSC, sensitivity, precision, IoU, ``hd95`` (pooled, medpy's and the
  seed papers' definition), ``hd95_max`` (max of the two directed 95th percentiles, MONAI's and
  DeepMind surface-distance's convention), PROMISE12's ``arvd`` and ``abd`` (004 §4.3) and the
  voxel counts of one pair of binary masks.
* :func:`keep_largest_component` — the largest connected component of a binary mask (001 §V-B).
* :func:`evaluate_segmentation` — one row per (foreground class, post-processed or not) of a
  pair of integer label maps, largest-component post-processing applied to the declared classes,
  each row also carrying the case's voxel-accuracy counts (003's pixel accuracy).

Border convention (medpy's, scipy's ``binary_erosion(border_value=0)``, and MONAI's): voxels
outside the array count as background, so a mask touching the volume border has a boundary
there. It follows that every result here is unchanged by cropping the arrays to any box that
holds all their foreground voxels, which is what makes these functions fast: all work happens on
bounding boxes, and Hausdorff distances use a KD-tree over boundary voxels instead of a
distance transform of the whole volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["binary_metrics", "evaluate_segmentation", "keep_largest_component"]

_HD_PERCENTILE = 95.0


def binary_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
) -> dict[str, float | int]:
    """Overlap and boundary-distance metrics of one binary prediction against its reference.

    Definitions (``docs/ARCHITECTURE.md``, "Metrics"), with TP, FP, FN the
    voxel counts of ``pred & ref``, ``pred & ~ref`` and ``~pred & ref``:

    * ``dsc`` = 2TP / (2TP + FP + FN); ``sensitivity`` = TP / (TP + FN);
      ``precision`` = TP / (TP + FP); ``iou`` = TP / (TP + FP + FN). Each is NaN when its
      denominator is 0.
    * ``arvd``, the absolute relative volume difference (004 §4.3, PROMISE12's aRVD, there in
      %): |V_pred - V_ref| / V_ref, a fraction (voxel counts: the spacing cancels). Equals
      ``abs(medpy.metric.binary.ravd(pred, ref))``. NaN when the reference is empty (whether
      or not the prediction is).
    * The *boundary* of a mask is the mask minus its erosion by the face-connected (6-connected
      in 3D, 4-connected in 2D) structuring element, voxels outside the array counting as
      background. Distances are Euclidean, in mm, between voxel centres, with ``spacing``.
    * ``hd95``: the 95th percentile (linear interpolation) of the *pooled* distances from every
      boundary voxel of ``pred`` to the nearest boundary voxel of ``ref`` and from every boundary
      voxel of ``ref`` to the nearest boundary voxel of ``pred``. Equals
      ``medpy.metric.binary.hd95(pred, ref, voxelspacing=spacing, connectivity=1)``.
    * ``hd95_max``: the larger of the two *directed* 95th percentiles. Equals MONAI's
      ``compute_hausdorff_distance(..., percentile=95, spacing=spacing)``. It exceeds ``hd95``
      most when the prediction has small, distant false positives.
    * ``abd``, the average boundary distance (004 §4.3, PROMISE12's ABD: "the average over the
      shortest distance between the boundary points of the volumes"): the mean of the same
      pooled distances as ``hd95``, i.e. over the union of both boundary point sets, so the
      boundary with more voxels weighs more (not the mean of the two directed means). Equals
      ``medpy.metric.binary.assd(pred, ref, voxelspacing=spacing, connectivity=1)`` (medpy
      0.5).
    * The three distances are ``inf`` when exactly one mask is empty and NaN when both are.
    * ``pred_voxels``, ``ref_voxels``, ``tp_voxels``: the voxel counts of ``pred``, ``ref`` and
      ``pred & ref`` (TP); summed over cases they give the dataset-level IoU of 003 (eq. 2
      "computed globally over an image dataset"), sum(TP) / sum(pred + ref - TP).

    Args:
        pred: boolean array, 2D or 3D (any rank >= 1 works), the predicted mask.
        ref: boolean array of the same shape, the reference mask.
        spacing: voxel size in mm along each array axis, in the arrays' axis order (for an image
            read with SimpleITK, the reverse of ``GetSpacing()``).

    Returns:
        A dict with keys ``dsc``, ``sensitivity``, ``precision``, ``iou``, ``arvd``, ``hd95``,
        ``hd95_max``, ``abd`` (floats) and ``pred_voxels``, ``ref_voxels``, ``tp_voxels``
        (ints).

    Raises:
        ValueError: if the inputs are not boolean arrays of one shape, or ``spacing`` does not
            hold one positive finite value per axis.
    """
    _check_mask(pred, "pred")
    _check_mask(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(
            f"pred and ref must have one shape; got pred {pred.shape} and ref {ref.shape}"
        )
    mm = _check_spacing(spacing, pred.ndim)

    pred_box, ref_box = _bounding_box(pred), _bounding_box(ref)
    n_pred = int(np.count_nonzero(pred[pred_box])) if pred_box else 0
    n_ref = int(np.count_nonzero(ref[ref_box])) if ref_box else 0
    both = _intersect_boxes(pred_box, ref_box)
    tp = int(np.count_nonzero(pred[both] & ref[both])) if both else 0

    if pred_box is not None and ref_box is not None:  # (a box holds >= 1 voxel: n_pred, n_ref)
        pred_to_ref, ref_to_pred = _directed_surface_distances(
            _boundary_points(pred, pred_box, mm), _boundary_points(ref, ref_box, mm)
        )
        pooled = np.concatenate([pred_to_ref, ref_to_pred])
        hd95 = float(np.percentile(pooled, _HD_PERCENTILE))
        hd95_max = float(
            max(
                np.percentile(pred_to_ref, _HD_PERCENTILE),
                np.percentile(ref_to_pred, _HD_PERCENTILE),
            )
        )
        abd = float(pooled.mean())
    elif n_pred or n_ref:
        hd95 = hd95_max = abd = float("inf")
    else:
        hd95 = hd95_max = abd = float("nan")

    return {
        "dsc": _ratio(2 * tp, n_pred + n_ref),
        "sensitivity": _ratio(tp, n_ref),
        "precision": _ratio(tp, n_pred),
        "iou": _ratio(tp, n_pred + n_ref - tp),
        "arvd": _ratio(abs(n_pred - n_ref), n_ref),
        "hd95": hd95,
        "hd95_max": hd95_max,
        "abd": abd,
        "pred_voxels": n_pred,
        "ref_voxels": n_ref,
        "tp_voxels": tp,
    }


def keep_largest_component(mask: np.ndarray, connectivity: int = 6,
                           components: int = 1) -> np.ndarray:
    """The largest connected component(s) of a binary mask (001 §V-B post-processing: "we
    assume there is only one target component and suppress all but the largest region").

    Args:
        mask: boolean array of any rank >= 1.
        connectivity: 6 for face neighbours only (as the seed code, scipy's default; 4 in 2D)
            or 26 for face, edge and corner neighbours (8 in 2D).
        components: how many of the largest components to keep: 1 for a single-object
            structure, 2 for a paired organ (the two kidneys).

    Returns:
        A new boolean array of ``mask``'s shape holding only the ``components`` components with
        the most voxels. Ties go to the component that comes first in C (raster) order, i.e.
        the lowest label of ``scipy.ndimage.label``. An empty mask gives an empty mask.

    Raises:
        ValueError: if ``mask`` is not a boolean array, ``connectivity`` is not 6 or 26 or
            ``components`` is not a positive integer.
    """
    _check_mask(mask, "mask")
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity must be 6 (face) or 26 (full); got {connectivity!r}")
    if not isinstance(components, int) or isinstance(components, bool) or components < 1:
        raise ValueError(f"components must be a positive integer; got {components!r}")
    out = np.zeros_like(mask)
    box = _bounding_box(mask)
    if box is None:
        return out
    rank = 1 if connectivity == 6 else mask.ndim
    crop = mask[box]
    labels, n_components = ndimage.label(
        crop, structure=ndimage.generate_binary_structure(mask.ndim, rank)
    )
    if n_components <= components:
        out[box] = crop
    else:
        sizes = np.bincount(labels[crop], minlength=n_components + 1)
        sizes[0] = -1  # the background is never kept
        kept = np.argsort(-sizes, kind="stable")[:components]  # stable: ties by label order
        out[box] = np.isin(labels, kept)
    return out


def evaluate_segmentation(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    class_names: Sequence[str],
    lcc_classes: Sequence[str] | Mapping[str, int] = (),
) -> list[dict[str, str | bool | float | int]]:
    """Per-class metrics of a predicted label map, with and without post-processing.

    For every foreground class ``k`` (1 .. C-1, label 0 is background and is skipped) the masks
    ``pred == k`` and ``ref == k`` are scored with :func:`binary_metrics` twice: as predicted
    (``postprocessed=False``) and after post-processing (``postprocessed=True``). Post-processing
    keeps the largest 6-connected component (:func:`keep_largest_component`) of the predicted
    mask of the classes named in ``lcc_classes`` — the single-object structures of a dataset,
    e.g. a tumour core — or, where ``lcc_classes`` maps names to counts, that many largest
    components (2 for the two kidneys); for every other class the post-processed row repeats
    the raw one. The reference is never post-processed.

    Every row also carries two counts of the whole case, for the pixel accuracy of 003
    (Experiments: the fraction of voxels, of every class and the background, labelled right):
    ``case_voxels``, the voxels of the label map, and ``case_correct_voxels``, those where the
    prediction equals the reference — of the raw map on raw rows, of the post-processed map
    (the removed components set to background) on post-processed rows. They repeat on each
    class row of a case: take one row per (case, ``postprocessed``) to pool them.

    Args:
        pred: integer label map, values in ``0 .. C-1``.
        ref: integer label map of the same shape.
        spacing: voxel size in mm per array axis (see :func:`binary_metrics`).
        class_names: C names; ``class_names[k]`` names label ``k``, index 0 the background.
        lcc_classes: foreground class names whose prediction is post-processed (one
            component each), or a mapping of such names to the number of components kept.

    Returns:
        2 (C - 1) dicts in class order, raw before post-processed, each with keys
        ``class_name``, ``postprocessed``, those of :func:`binary_metrics`, ``case_voxels`` and
        ``case_correct_voxels`` (ints).

    Raises:
        ValueError: if the maps are not integer arrays of one shape, ``spacing`` has not one
            positive value per axis, a label lies outside ``0 .. C-1``, ``class_names`` has
            fewer than two or repeated names, or ``lcc_classes`` names no foreground class.
    """
    for name, labels in (("pred", pred), ("ref", ref)):
        if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name} must be an integer NumPy label map; got {_describe(labels)}")
    if pred.shape != ref.shape:
        raise ValueError(
            f"pred and ref must have one shape; got pred {pred.shape} and ref {ref.shape}"
        )
    _check_spacing(spacing, pred.ndim)
    names = list(class_names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(
            "class_names must hold the background and at least one foreground class, without "
            f"repeats; got {names!r}"
        )
    if isinstance(lcc_classes, str):
        raise ValueError(
            f"lcc_classes must be a sequence of class names, not the string {lcc_classes!r}"
        )
    kept = (dict(lcc_classes) if isinstance(lcc_classes, Mapping)
            else dict.fromkeys(lcc_classes, 1))
    unknown = sorted(set(kept) - set(names[1:]))
    if unknown:
        raise ValueError(
            f"lcc_classes {unknown!r} are not foreground classes; expected names from {names[1:]!r}"
        )
    for name, labels in (("pred", pred), ("ref", ref)):
        low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
        if low < 0 or high >= len(names):
            raise ValueError(
                f"{name} holds labels {low} .. {high}; expected values in 0 .. "
                f"{len(names) - 1} (one per class name in {names!r})"
            )

    # Cropping to the foreground of both maps changes no metric (module docstring); the voxels
    # outside the box are background in both maps, so correct.
    case_voxels = pred.size
    box = _bounding_box((pred != 0) | (ref != 0)) or (slice(0, 0),) * pred.ndim
    pred, ref = pred[box], ref[box]
    outside = case_voxels - pred.size
    post_map = pred.copy() if kept else pred
    scored = []
    for label, class_name in enumerate(names[1:], start=1):
        pred_k, ref_k = pred == label, ref == label
        raw = post = binary_metrics(pred_k, ref_k, spacing)
        if class_name in kept:
            post_k = keep_largest_component(pred_k, components=kept[class_name])
            post_map[pred_k & ~post_k] = 0
            post = binary_metrics(post_k, ref_k, spacing)
        scored.append((class_name, raw, post))
    correct = {postprocessed: outside + int(np.count_nonzero(labels == ref))
               for postprocessed, labels in ((False, pred), (True, post_map))}
    return [{"class_name": class_name, "postprocessed": postprocessed, **metrics,
             "case_voxels": case_voxels, "case_correct_voxels": correct[postprocessed]}
            for class_name, raw, post in scored
            for postprocessed, metrics in ((False, raw), (True, post))]


def _check_mask(mask: object, name: str) -> None:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim < 1:
        raise ValueError(f"{name} must be a boolean NumPy array; got {_describe(mask)}")


def _describe(array: object) -> str:
    if isinstance(array, np.ndarray):
        return f"an array of dtype {array.dtype} and shape {array.shape}"
    return f"a {type(array).__name__}"


def _check_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    """``spacing`` as a float array after checking it has ``ndim`` positive finite values."""
    mm = np.asarray(spacing, dtype=np.float64)
    if mm.shape != (ndim,) or not np.all(np.isfinite(mm) & (mm > 0)):
        raise ValueError(
            f"spacing must hold one positive finite voxel size in mm per array axis ({ndim} "
            f"values for {ndim}D arrays); got {spacing!r}"
        )
    return mm


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every True voxel, as slices; None when ``mask`` is empty.

    One full pass over the array (``any`` over axis 0), then passes over ever smaller boxes.
    """
    if mask.ndim == 1:
        hits = np.flatnonzero(mask)
        return (slice(int(hits[0]), int(hits[-1]) + 1),) if hits.size else None
    inner = _bounding_box(np.asarray(mask.any(axis=0)))  # (ndim >= 2: an array)
    if inner is None:
        return None
    hits = np.flatnonzero(mask[(slice(None),) + inner].any(axis=tuple(range(1, mask.ndim))))
    return (slice(int(hits[0]), int(hits[-1]) + 1), *inner)


def _intersect_boxes(
    a: tuple[slice, ...] | None, b: tuple[slice, ...] | None
) -> tuple[slice, ...] | None:
    """The box common to ``a`` and ``b``; None when they do not overlap or one is None."""
    if a is None or b is None:
        return None
    box = tuple(
        slice(max(p.start, q.start), min(p.stop, q.stop)) for p, q in zip(a, b, strict=True)
    )
    return box if all(s.start < s.stop for s in box) else None


def _boundary_points(mask: np.ndarray, box: tuple[slice, ...], mm: np.ndarray) -> np.ndarray:
    """Centres, in mm, of the boundary voxels of the non-empty ``mask`` (``box`` its bounding box).

    Equal to the voxels of ``mask & ~binary_erosion(mask, face structure, border_value=0)``, but
    only foreground voxels are visited, so the cost does not grow with the box of a mask that
    is spread out (a tumour plus distant false positives): a voxel is a boundary voxel if it lies
    on a face of the bounding box (its outer neighbour is background or outside the volume) or
    one of its 2 x ndim face neighbours, all inside the box, is background.
    """
    crop = mask[box]
    flat = crop.ravel()
    index = np.flatnonzero(flat)
    coords = np.unravel_index(index, crop.shape)
    boundary = np.zeros(index.size, dtype=bool)
    for c, size in zip(coords, crop.shape, strict=True):
        boundary |= (c == 0) | (c == size - 1)
    inner = index[~boundary]
    inner_boundary = np.zeros(inner.size, dtype=bool)
    for stride in np.cumprod((1, *crop.shape[:0:-1]))[::-1]:
        inner_boundary |= ~flat[inner - stride] | ~flat[inner + stride]
    boundary[~boundary] = inner_boundary
    origin = np.array([s.start for s in box])
    return (np.stack([c[boundary] for c in coords], axis=1) + origin) * mm


def _directed_surface_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each point of ``a`` to its nearest point of ``b``, and from ``b`` to ``a``.

    Exact nearest-neighbour distances; the sliding-midpoint tree (``balanced_tree=False``)
    builds faster than the median-split one on grid points and queries as fast.
    """
    a_to_b = cKDTree(b, balanced_tree=False).query(a, k=1, workers=-1)[0]
    b_to_a = cKDTree(a, balanced_tree=False).query(b, k=1, workers=-1)[0]
    return a_to_b, b_to_a


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")
