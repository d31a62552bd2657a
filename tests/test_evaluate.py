"""Tests of ``study.evaluate`` against independent references (docs/ARCHITECTURE.md, "Metrics").

medpy 0.5 (the seed papers' evaluation backend) defines the pooled ``hd95``, the overlap
ratios, ``arvd`` (|ravd|) and ``abd`` (assd: the mean over both boundaries' pooled distances,
PROMISE12's ABD of 004 §4.3); MONAI's ``compute_hausdorff_distance(percentile=95)`` defines
``hd95_max``; ``scipy.ndimage.label`` on the whole volume defines the largest connected
component.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage

from study.evaluate import binary_metrics, evaluate_segmentation, keep_largest_component

KEYS = {"dsc", "sensitivity", "precision", "iou", "arvd", "hd95", "hd95_max", "abd",
        "pred_voxels", "ref_voxels", "tp_voxels"}
CASE_KEYS = {"case_voxels", "case_correct_voxels"}  # evaluate_segmentation's case-level counts


def medpy_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    return float(medpy_binary.hd95(pred, ref, voxelspacing=spacing, connectivity=1))


def monai_hd95_max(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """MONAI's symmetric 95th-percentile HD: the max of the two directed percentiles."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about empty masks
        hd = compute_hausdorff_distance(
            torch.from_numpy(pred[None, None]).float(),
            torch.from_numpy(ref[None, None]).float(),
            include_background=True,
            distance_metric="euclidean",
            percentile=95,
            directed=False,
            spacing=[float(s) for s in spacing],
        )
    return float(hd[0, 0])


def blobs(rng: np.random.Generator, shape: tuple[int, ...], fill: float) -> np.ndarray:
    """Irregular random mask of several blobs, touching the volume border, ~``fill`` of it."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=1.5)
    return field > np.quantile(field, 1 - fill)


def perturbed(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    """A prediction: ``ref`` grown or shrunk by one voxel, with some voxels flipped."""
    grown = ndimage.binary_dilation(ref) if rng.random() < 0.5 else ndimage.binary_erosion(ref)
    return grown ^ (rng.random(ref.shape) < 0.01)


def ball(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def random_cases():
    """(id, pred, ref, spacing): random 3D and 2D masks, isotropic and anisotropic."""
    rng = np.random.default_rng(20240501)
    cases = []
    for i, (shape, spacing) in enumerate(
        [
            ((18, 22, 20), (1.0, 1.0, 1.0)),
            ((14, 24, 21), (3.0, 0.78, 0.78)),
            ((20, 16, 25), (0.5, 2.2, 1.3)),
            ((40, 37), (1.0, 1.0)),
            ((33, 45), (2.5, 0.7)),
        ]
    ):
        ref = blobs(rng, shape, fill=0.15)
        cases.append(pytest.param(perturbed(rng, ref), ref, spacing, id=f"random{i}-{len(shape)}d"))
    return cases


def edge_cases():
    """(id, pred, ref, spacing): hand-made masks where conventions are easy to get wrong."""
    shape = (24, 30, 28)
    sphere = ball(shape, (12, 15, 14), 7)
    distant_fp = ndimage.binary_dilation(sphere)  # ~550 boundary voxels, the sphere's ~450
    distant_fp[1:4, 1:4, 1:4] = True  # 26 boundary voxels
    distant_fp[21:23, 27:29, 1:3] = True  # 8: 6% of pred's boundary, 3.3% of both
    single_a = np.zeros(shape, bool)
    single_a[3, 4, 5] = True
    single_b = np.zeros(shape, bool)
    single_b[10, 20, 6] = True
    border = np.zeros(shape, bool)
    border[:5, :, :9] = True  # touches four faces of the volume
    full = np.ones((6, 7, 5), bool)
    part = np.zeros((6, 7, 5), bool)
    part[1:5, 2:6, 1:4] = True
    square = np.zeros((30, 31), bool)
    square[4:20, 6:25] = True
    return [
        pytest.param(ndimage.binary_dilation(sphere), sphere, (2.5, 0.8, 0.8), id="anisotropic"),
        pytest.param(distant_fp, sphere, (1.0, 1.0, 1.0), id="distant-false-positives"),
        pytest.param(single_a, single_b, (1.2, 0.9, 3.0), id="single-voxels"),
        pytest.param(single_a, sphere, (1.0, 1.0, 1.0), id="single-voxel-vs-sphere"),
        pytest.param(border, ndimage.binary_erosion(border), (1.0, 2.0, 1.5), id="volume-border"),
        pytest.param(full, part, (1.0, 1.0, 1.0), id="whole-volume"),
        pytest.param(square, ball((30, 31), (15, 15), 9), (0.7, 1.1), id="2d"),
        pytest.param(sphere, sphere, (1.0, 1.0, 1.0), id="identical"),
    ]


ALL_CASES = random_cases() + edge_cases()


@pytest.mark.parametrize(("pred", "ref", "spacing"), ALL_CASES)
def test_hd95_equals_medpy_pooled_percentile(pred, ref, spacing):
    """hd95 is medpy's hd95 (pooled distances of both directions, connectivity 1, in mm)."""
    ours = binary_metrics(pred, ref, spacing)
    assert ours["hd95"] == pytest.approx(medpy_hd95(pred, ref, spacing), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("pred", "ref", "spacing"), ALL_CASES)
def test_hd95_max_equals_monai_max_of_directed_percentiles(pred, ref, spacing):
    """hd95_max is MONAI's compute_hausdorff_distance(percentile=95) (float32 in MONAI)."""
    ours = binary_metrics(pred, ref, spacing)
    assert ours["hd95_max"] == pytest.approx(monai_hd95_max(pred, ref, spacing), rel=1e-5)


@pytest.mark.parametrize(("pred", "ref", "spacing"), ALL_CASES)
def test_abd_equals_medpy_assd(pred, ref, spacing):
    """abd is medpy 0.5's assd: the mean of the pooled distances of both directions."""
    ours = binary_metrics(pred, ref, spacing)
    expected = medpy_binary.assd(pred, ref, voxelspacing=spacing, connectivity=1)
    assert ours["abd"] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def boundary_voxels(mask: np.ndarray) -> int:
    """Voxels of ``mask`` minus its face-connected erosion (outside the volume: background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return int((mask & ~ndimage.binary_erosion(mask, structure, border_value=0)).sum())


def test_abd_weighs_each_boundary_by_its_voxels():
    """PROMISE12's ABD averages over the union of both boundary point sets: the directed
    means (medpy's asd) weighted by boundary size, not their plain mean (which older medpy's
    assd computed); they differ most for boundaries of very different sizes."""
    (case,) = [c for c in edge_cases() if c.id == "single-voxel-vs-sphere"]
    pred, ref, spacing = case.values
    forward = medpy_binary.asd(pred, ref, voxelspacing=spacing, connectivity=1)
    backward = medpy_binary.asd(ref, pred, voxelspacing=spacing, connectivity=1)
    n_pred, n_ref = boundary_voxels(pred), boundary_voxels(ref)
    pooled = (n_pred * forward + n_ref * backward) / (n_pred + n_ref)
    abd = binary_metrics(pred, ref, spacing)["abd"]
    assert abd == pytest.approx(pooled, rel=1e-12)
    assert abd > backward - 0.1 and (forward + backward) / 2 < abd - 3.0  # 17.7 vs 13.8 mm


@pytest.mark.parametrize(("pred", "ref", "spacing"), ALL_CASES)
def test_arvd_equals_medpy_absolute_ravd_and_tp_is_the_overlap(pred, ref, spacing):
    """arvd = |medpy ravd| = |V_pred - V_ref| / V_ref; tp_voxels = |pred & ref|."""
    ours = binary_metrics(pred, ref, spacing)
    assert ours["arvd"] == pytest.approx(abs(medpy_binary.ravd(pred, ref)), rel=1e-12, abs=1e-15)
    assert ours["tp_voxels"] == np.count_nonzero(pred & ref)
    assert isinstance(ours["tp_voxels"], int)


def test_distant_false_positives_separate_the_two_conventions():
    """Small distant false positives barely move the pooled hd95 but dominate hd95_max."""
    (case,) = [c for c in edge_cases() if c.id == "distant-false-positives"]
    pred, ref, spacing = case.values
    ours = binary_metrics(pred, ref, spacing)
    assert ours["hd95"] == 1.0  # the one-voxel dilation
    assert ours["hd95_max"] > 10.0
    cleaned = binary_metrics(keep_largest_component(pred), ref, spacing)
    assert cleaned["hd95"] == cleaned["hd95_max"] == 1.0


@pytest.mark.parametrize(("pred", "ref", "spacing"), ALL_CASES)
def test_overlap_ratios_and_counts_equal_medpy(pred, ref, spacing):
    """dsc, sensitivity, precision, iou equal medpy's dc, sensitivity, precision, jc."""
    ours = binary_metrics(pred, ref, spacing)
    assert set(ours) == KEYS
    assert ours["dsc"] == pytest.approx(medpy_binary.dc(pred, ref), rel=1e-12)
    assert ours["sensitivity"] == pytest.approx(medpy_binary.sensitivity(pred, ref), rel=1e-12)
    assert ours["precision"] == pytest.approx(medpy_binary.precision(pred, ref), rel=1e-12)
    assert ours["iou"] == pytest.approx(medpy_binary.jc(pred, ref), rel=1e-12)
    assert (ours["pred_voxels"], ours["ref_voxels"]) == (pred.sum(), ref.sum())
    assert isinstance(ours["pred_voxels"], int) and isinstance(ours["ref_voxels"], int)


def test_moderately_sized_anisotropic_case_matches_both_references():
    """A larger irregular case with distant false positives agrees with medpy and MONAI."""
    rng = np.random.default_rng(7)
    shape, spacing = (48, 96, 96), (3.0, 0.8, 0.8)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    ref = ball(shape, (24, 45, 50), 14) & (field > -0.05)
    pred = ndimage.binary_dilation(ref) & (field > -0.03)
    pred[40:42, 5:8, 80:83] = True
    pred[3:5, 85:90, 4:7] = True
    ours = binary_metrics(pred, ref, spacing)
    assert ours["hd95"] == pytest.approx(medpy_hd95(pred, ref, spacing), rel=1e-12)
    assert ours["hd95_max"] == pytest.approx(monai_hd95_max(pred, ref, spacing), rel=1e-5)
    assert ours["dsc"] == pytest.approx(medpy_binary.dc(pred, ref), rel=1e-12)


def test_empty_prediction():
    """Empty prediction: HD values inf, precision NaN (0/0), DSC/SEN/IoU 0.

    (MONAI returns NaN here, not inf: torch.quantile interpolates between infinite distances.)
    """
    ref = ball((12, 13, 14), (6, 6, 7), 4)
    pred = np.zeros_like(ref)
    ours = binary_metrics(pred, ref, (1.0, 2.0, 1.0))
    assert ours["hd95"] == ours["hd95_max"] == ours["abd"] == math.inf
    assert math.isnan(ours["precision"])
    assert ours["dsc"] == ours["sensitivity"] == ours["iou"] == 0.0
    assert ours["arvd"] == 1.0 == abs(medpy_binary.ravd(pred, ref))  # all volume missed
    assert (ours["pred_voxels"], ours["ref_voxels"], ours["tp_voxels"]) == (0, ref.sum(), 0)


def test_empty_reference():
    """Empty reference: distances inf (NaN in MONAI), sensitivity NaN (0/0), arvd NaN (no
    reference volume: medpy's ravd refuses it), DSC/PRC/IoU 0."""
    pred = ball((12, 13, 14), (6, 6, 7), 4)
    ref = np.zeros_like(pred)
    ours = binary_metrics(pred, ref, (1.0, 1.0, 1.0))
    assert ours["hd95"] == ours["hd95_max"] == ours["abd"] == math.inf
    assert math.isnan(ours["sensitivity"]) and math.isnan(ours["arvd"])
    with pytest.raises(RuntimeError):
        medpy_binary.ravd(pred, ref)
    assert ours["dsc"] == ours["precision"] == ours["iou"] == 0.0


def test_both_empty():
    """Both empty: every ratio and distance NaN (MONAI's HD is NaN too), counts 0."""
    empty = np.zeros((9, 10, 11), bool)
    ours = binary_metrics(empty, empty, (1.0, 1.0, 1.0))
    for key in ("dsc", "sensitivity", "precision", "iou", "arvd", "hd95", "hd95_max", "abd"):
        assert math.isnan(ours[key]), key
    assert math.isnan(monai_hd95_max(empty, empty, (1.0, 1.0, 1.0)))
    assert ours["pred_voxels"] == ours["ref_voxels"] == ours["tp_voxels"] == 0


def test_zero_padding_changes_nothing():
    """Voxels outside the volume count as background: padding with zeros changes no metric."""
    rng = np.random.default_rng(3)
    ref = blobs(rng, (15, 17, 16), fill=0.2)
    pred = perturbed(rng, ref)
    spacing = (1.5, 0.9, 1.1)
    padded = [np.pad(m, ((2, 3), (0, 4), (5, 1))) for m in (pred, ref)]
    assert binary_metrics(*padded, spacing) == binary_metrics(pred, ref, spacing)


def reference_lcc(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """Whole-volume scipy labelling; the lowest label wins ties."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1 if connectivity == 6 else mask.ndim)
    labels, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return np.zeros_like(mask)
    return labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])


@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("seed", range(4))
def test_keep_largest_component_equals_scipy_label(connectivity, seed):
    """The kept voxels are the largest scipy.ndimage.label component (face or full structure)."""
    rng = np.random.default_rng(seed)
    shape = (20, 18, 22) if seed < 3 else (40, 35)
    mask = rng.random(shape) < 0.3  # many components, which 6 and 26 connectivity split apart
    mask[:, : shape[1] // 3] = False  # so that the bounding box is a strict crop
    kept = keep_largest_component(mask, connectivity)
    assert kept.dtype == np.bool_ and kept.shape == mask.shape
    np.testing.assert_array_equal(kept, reference_lcc(mask, connectivity))


def test_keep_largest_component_connectivity_matters():
    """Voxels touching at edges or corners form one component under 26, not under 6."""
    mask = np.zeros((5, 6, 7), bool)
    mask[2, 3, 3] = mask[3, 4, 3] = mask[4, 5, 4] = True  # 3 voxels: 1 component (26) or 3 (6)
    mask[0, 0, 0] = mask[0, 0, 1] = True  # a face-connected pair
    full, face = np.zeros_like(mask), np.zeros_like(mask)
    full[2, 3, 3] = full[3, 4, 3] = full[4, 5, 4] = True
    face[0, 0, 0] = face[0, 0, 1] = True
    np.testing.assert_array_equal(keep_largest_component(mask, 26), full)
    np.testing.assert_array_equal(keep_largest_component(mask, 6), face)


def test_keep_largest_component_tie_goes_to_the_first_in_raster_order():
    """Of equal-sized largest components, the one whose first voxel comes first in C order wins."""
    mask = np.zeros((8, 8, 8), bool)
    mask[5, 1, 1:4] = True  # 3 voxels, first voxel (5, 1, 1)
    mask[2, 6, 4:7] = True  # 3 voxels, first voxel (2, 6, 4): earlier in C order
    mask[1, 1, 6] = True  # a smaller component before both
    expected = np.zeros_like(mask)
    expected[2, 6, 4:7] = True
    for connectivity in (6, 26):
        np.testing.assert_array_equal(keep_largest_component(mask, connectivity), expected)


def test_keep_largest_component_of_empty_mask_is_empty_and_input_untouched():
    """An empty mask gives an empty mask; the input array is never modified."""
    empty = np.zeros((4, 5, 6), bool)
    assert not keep_largest_component(empty).any()
    mask = np.zeros((4, 5, 6), bool)
    mask[0, 0, 0] = mask[3, 4, 5] = True
    before = mask.copy()
    keep_largest_component(mask)
    np.testing.assert_array_equal(mask, before)


def test_keep_largest_component_rejects_other_connectivities():
    """Only 6 (face) and 26 (full) connectivity exist."""
    with pytest.raises(ValueError, match="6 .* or 26 .*got 18"):
        keep_largest_component(np.ones((3, 3, 3), bool), connectivity=18)


def label_maps():
    """A 3-class case: class 1 (tumour) with a distant false positive, class 2 in two parts."""
    shape = (20, 26, 24)
    ref = np.zeros(shape, np.int16)
    ref[ball(shape, (10, 8, 8), 4)] = 1
    ref[4:8, 18:23, 3:8] = 2
    ref[12:16, 18:23, 15:20] = 2
    pred = ref.copy()
    pred[ball(shape, (10, 8, 8), 3.5) ^ ball(shape, (10, 8, 8), 4)] = 0
    pred[17:19, 2:4, 20:22] = 1  # distant false positive
    pred[12:16, 18:23, 15:20] = 0
    pred[13:16, 19:23, 16:21] = 2
    return pred, ref, (1.5, 1.0, 1.0)


def test_evaluate_segmentation_rows_and_lcc_only_on_declared_classes():
    """2 (C - 1) rows, class order, raw then post-processed; LCC only for lcc_classes."""
    pred, ref, spacing = label_maps()
    rows = evaluate_segmentation(
        pred, ref, spacing, ["background", "tumour", "kidney"], lcc_classes=["tumour"]
    )
    assert [(r["class_name"], r["postprocessed"]) for r in rows] == [
        ("tumour", False),
        ("tumour", True),
        ("kidney", False),
        ("kidney", True),
    ]
    assert all(set(r) == KEYS | CASE_KEYS | {"class_name", "postprocessed"} for r in rows)
    tumour_raw, tumour_post, kidney_raw, kidney_post = (metrics_of(r) for r in rows)
    assert tumour_raw == binary_metrics(pred == 1, ref == 1, spacing)
    assert tumour_post == binary_metrics(keep_largest_component(pred == 1), ref == 1, spacing)
    assert tumour_post["pred_voxels"] == tumour_raw["pred_voxels"] - 8
    assert tumour_post["hd95_max"] < tumour_raw["hd95_max"]
    # the two kidneys are two objects: not post-processed, so the second one is kept
    assert kidney_raw == kidney_post == binary_metrics(pred == 2, ref == 2, spacing)
    assert keep_largest_component(pred == 2).sum() < kidney_raw["pred_voxels"]


def metrics_of(row: dict) -> dict:
    """The binary_metrics part of an evaluate_segmentation row."""
    return {key: row[key] for key in KEYS}


def test_case_counts_give_pixel_accuracy_with_and_without_post_processing():
    """Every row of a case carries its voxel count and the voxels labelled right (any class,
    background included): of the raw map on raw rows, of the map with the removed components
    set to background on post-processed rows."""
    pred, ref, spacing = label_maps()
    padded = [np.pad(m, ((3, 0), (0, 2), (4, 1))) for m in (pred, ref)]  # more background
    rows = evaluate_segmentation(*padded, spacing, ["background", "tumour", "kidney"],
                                 lcc_classes=["tumour"])
    post_map = padded[0].copy()
    post_map[np.pad((pred == 1) & ~keep_largest_component(pred == 1),
                    ((3, 0), (0, 2), (4, 1)))] = 0
    for row in rows:
        labels = post_map if row["postprocessed"] else padded[0]
        assert row["case_voxels"] == padded[1].size
        assert row["case_correct_voxels"] == np.count_nonzero(labels == padded[1])
    raw, post = rows[0]["case_correct_voxels"], rows[1]["case_correct_voxels"]
    assert post == raw + 8  # the 8 distant false-positive voxels are background in ref


def test_pooled_counts_equal_the_metrics_of_the_whole_dataset():
    """003's dataset-level IoU (TP and unions summed over the cases) and pixel accuracy
    (correct voxels over all voxels) equal medpy's IoU and the accuracy of all cases' voxels
    together."""
    pred, ref, spacing = label_maps()
    rng = np.random.default_rng(11)
    other_ref = blobs(rng, pred.shape, fill=0.1).astype(np.int16)
    other_pred = perturbed(rng, other_ref > 0).astype(np.int16)
    cases = [(pred, ref), (np.minimum(other_pred, 1), np.minimum(other_ref, 1))]
    rows = [r for p, q in cases for r in evaluate_segmentation(
        p, q, spacing, ["background", "tumour", "kidney"]) if not r["postprocessed"]]
    tumour = [r for r in rows if r["class_name"] == "tumour"]
    tp = sum(r["tp_voxels"] for r in tumour)
    union = sum(r["pred_voxels"] + r["ref_voxels"] - r["tp_voxels"] for r in tumour)
    whole_pred, whole_ref = (np.concatenate(maps) for maps in zip(*cases, strict=True))
    assert tp / union == pytest.approx(medpy_binary.jc(whole_pred == 1, whole_ref == 1))
    one_per_case = rows[::2]  # each case's counts repeat on its class rows
    assert sum(r["case_correct_voxels"] for r in one_per_case) / sum(
        r["case_voxels"] for r in one_per_case) == pytest.approx(
        np.mean(whole_pred == whole_ref))


def test_evaluate_segmentation_with_absent_class_and_no_foreground():
    """A class absent from both maps gives NaN rows; an all-background case works too."""
    pred, ref, spacing = label_maps()
    names = ["background", "tumour", "kidney", "cyst"]
    cyst = evaluate_segmentation(pred, ref, spacing, names, lcc_classes=["cyst"])[4:]
    assert [r["postprocessed"] for r in cyst] == [False, True]
    assert all(math.isnan(r["dsc"]) and math.isnan(r["hd95"]) for r in cyst)
    background = np.zeros((5, 6, 7), np.uint8)
    rows = evaluate_segmentation(background, background, (1.0, 1.0, 1.0), names)
    assert len(rows) == 6 and all(r["pred_voxels"] == r["ref_voxels"] == 0 for r in rows)
    assert all(r["case_voxels"] == r["case_correct_voxels"] == background.size for r in rows)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ref": np.zeros((20, 26, 23), np.int16)}, r"one shape; got pred \(20, 26, 24\) and ref"),
        ({"spacing": (1.0, 1.0)}, r"3 values for 3D arrays\); got \(1.0, 1.0\)"),
        ({"spacing": (1.0, 0.0, 1.0)}, r"positive finite .* got \(1.0, 0.0, 1.0\)"),
        (
            {"class_names": ["background", "tumour"]},
            r"pred holds labels 0 \.\. 2; expected .* 0 \.\. 1",
        ),
        ({"pred": np.full((20, 26, 24), -1, np.int8)}, r"pred holds labels -1 \.\. -1"),
        ({"pred": np.zeros((20, 26, 24), float)}, r"pred must be an integer .* dtype float64"),
        ({"lcc_classes": ["background"]}, r"lcc_classes \['background'\] are not foreground"),
        ({"lcc_classes": "tumour"}, r"sequence of class names, not the string 'tumour'"),
        ({"class_names": ["background"]}, r"at least one foreground class"),
        ({"class_names": ["bg", "a", "a"]}, r"without repeats"),
    ],
)
def test_evaluate_segmentation_errors_name_what_was_received_and_expected(kwargs, message):
    """Shape, spacing, label-range, dtype and class-name mistakes raise a ValueError saying so."""
    pred, ref, spacing = label_maps()
    arguments = {
        "pred": pred,
        "ref": ref,
        "spacing": spacing,
        "class_names": ["background", "tumour", "kidney"],
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        evaluate_segmentation(**arguments)


MASK = np.zeros((3, 4), bool)


@pytest.mark.parametrize(
    ("pred", "ref", "spacing", "message"),
    [
        (MASK, np.zeros((3, 5), bool), (1, 1), r"got pred \(3, 4\) and ref \(3, 5\)"),
        (MASK.astype(np.uint8), MASK, (1, 1), r"pred must be a boolean .* dtype uint8"),
        (MASK, MASK.tolist(), (1, 1), r"ref must be a boolean NumPy array; got a list"),
        (MASK, MASK, (1, 1, 1), r"2 values for 2D arrays\); got \(1, 1, 1\)"),
        (MASK, MASK, (1, np.nan), r"positive finite"),
    ],
)
def test_binary_metrics_errors_name_what_was_received_and_expected(pred, ref, spacing, message):
    """Non-boolean masks, shape mismatch and bad spacing raise a ValueError saying so."""
    with pytest.raises(ValueError, match=message):
        binary_metrics(pred, ref, spacing)


def test_paired_organ_keeps_its_two_largest_components():
    """``components=2`` keeps both kidneys and drops a smaller false positive; through
    evaluate_segmentation a mapping {class: count} does the same, one count per class."""
    from study.evaluate import evaluate_segmentation, keep_largest_component

    mask = np.zeros((20, 20, 20), bool)
    mask[2:8, 2:8, 2:8] = True  # 216 voxels
    mask[12:17, 12:17, 12:17] = True  # 125 voxels
    mask[10, 2, 18] = True  # a 1-voxel false positive
    kept = keep_largest_component(mask, components=2)
    assert kept.sum() == 216 + 125 and not kept[10, 2, 18]
    assert keep_largest_component(mask).sum() == 216
    assert np.array_equal(keep_largest_component(mask, components=5), mask)
    with pytest.raises(ValueError, match="components must be a positive integer"):
        keep_largest_component(mask, components=0)
    pred = mask.astype(np.uint8)
    rows = evaluate_segmentation(pred, pred, (1.0, 1.0, 1.0), ["background", "kidney"],
                                 {"kidney": 2})
    post = next(r for r in rows if r["postprocessed"])
    assert post["pred_voxels"] == 216 + 125
