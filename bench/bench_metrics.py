"""Benchmark: the 8 numbers of one case, ours vs MONAI vs medpy, side by side in one run.

The 8 numbers are DSC, sensitivity, precision and HD95 of one structure, raw and after
keeping the largest 6-connected component of the prediction (docs/ARCHITECTURE.md, "Metrics"). Each
pipeline computes them its own way:

* ours   — ``study.evaluate.binary_metrics`` twice and ``keep_largest_component`` (which also
  give IoU, both HD95 conventions and the voxel counts);
* MONAI  — ``compute_dice``, ``get_confusion_matrix`` + ``compute_confusion_matrix_metric``
  (sensitivity, precision) and ``compute_hausdorff_distance(percentile=95)`` (max of directed);
* medpy  — ``dc``, ``sensitivity``, ``precision`` and ``hd95(connectivity=1)`` (pooled).

Both references post-process with ``scipy.ndimage.label`` over the whole volume (MONAI's own
``KeepLargestConnectedComponent`` needs scikit-image). The script checks that the values agree
(ours ``hd95`` with medpy's, ours ``hd95_max`` with MONAI's, the ratios with both) and prints
the times and speed-ups. Cases are synthetic: an irregular tumour in a BRATS-size volume and in
a KiTS-size anisotropic one, the prediction off by a few voxels plus a few distant
false-positive blobs. Times are medians: ours over ``--repeats`` runs, MONAI over 3, medpy of
one run (it takes seconds to tens of seconds per case). Ours runs on the CPU (as a trial's
evaluation does); ``--device cuda`` gives MONAI its tensors on the GPU.

    python bench/bench_metrics.py [--repeats 5] [--device cuda]
    python bench/bench_metrics.py --quick --json out.json   # the BRATS-size case, MONAI once
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from medpy.metric import binary as medpy_binary
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    get_confusion_matrix,
)
from scipy import ndimage

from study.evaluate import binary_metrics, keep_largest_component

RATIOS = ("dsc", "sensitivity", "precision")
Spacing = tuple[float, ...]


def synthetic_case(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre_mm: tuple[float, float, float],
    radii_mm: tuple[float, float, float],
    false_positives_mm: list[tuple[float, float, float]],
    fp_radius_mm: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(pred, ref): an irregular ellipsoidal tumour and a prediction off by a few voxels.

    The reference is ``r(x) + 0.3 n1(x) < 1``, ``r`` the normalised ellipsoid radius and ``n1``
    smooth unit noise; the prediction is ``r(x) + 0.3 n1(x) + 0.06 n2(x) < 1.02``, with
    independent noise ``n2``, plus balls of radius ``fp_radius_mm`` at ``false_positives_mm``.
    """
    rng = np.random.default_rng(seed)
    mm = np.asarray(spacing)
    half = np.ceil(1.6 * np.asarray(radii_mm) / mm).astype(int)
    centre = np.round(np.asarray(centre_mm) / mm).astype(int)
    box = tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half, strict=True))
    grid = np.indices(tuple(2 * half + 1), dtype=np.float32)
    radius = np.sqrt(
        sum(((g - h) * s / r) ** 2 for g, h, s, r in zip(grid, half, mm, radii_mm, strict=True))
    )

    def noise() -> np.ndarray:
        field = ndimage.gaussian_filter(rng.standard_normal(radius.shape), sigma=4.0 / mm)
        return field / field.std()

    ref, pred = np.zeros(shape, bool), np.zeros(shape, bool)
    shared = noise()
    ref[box] = radius + 0.3 * shared < 1
    pred[box] = radius + 0.3 * shared + 0.06 * noise() < 1.02
    for fp_mm in false_positives_mm:
        pred |= ball(shape, spacing, fp_mm, fp_radius_mm)
    return pred, ref


def ball(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    centre_mm: tuple[float, ...],
    radius_mm: float,
) -> np.ndarray:
    """Ball of ``radius_mm`` around ``centre_mm`` (both in mm from the first voxel centre)."""
    mm = np.asarray(spacing)
    centre = np.asarray(centre_mm) / mm
    half = np.ceil(radius_mm / mm).astype(int)
    lo = np.round(centre).astype(int) - half
    grid = np.indices(tuple(2 * half + 1), dtype=float)
    local = sum(((g + o - c) * s) ** 2 for g, o, c, s in zip(grid, lo, centre, mm, strict=True))
    out = np.zeros(shape, bool)
    out[tuple(slice(o, o + n) for o, n in zip(lo, local.shape, strict=True))] = (
        local <= radius_mm**2
    )
    return out


def scipy_lcc(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component by whole-volume labelling (the references' post-processing)."""
    labels, n = ndimage.label(mask)
    return labels == 1 + np.argmax(np.bincount(labels.ravel())[1:]) if n else mask.copy()


def ours(pred: np.ndarray, ref: np.ndarray, spacing: Spacing) -> dict[str, dict[str, float]]:
    return {
        "raw": binary_metrics(pred, ref, spacing),
        "post": binary_metrics(keep_largest_component(pred), ref, spacing),
    }


def monai(pred: np.ndarray, ref: np.ndarray, spacing: Spacing,
          device: str = "cpu") -> dict[str, dict[str, float]]:
    def four(p: np.ndarray) -> dict[str, float]:
        y_pred = torch.from_numpy(p[None, None]).to(device)
        y = torch.from_numpy(ref[None, None]).to(device)
        confusion = get_confusion_matrix(y_pred.float(), y.float())
        return {
            "dsc": float(compute_dice(y_pred.float(), y.float())),
            "sensitivity": float(compute_confusion_matrix_metric("sensitivity", confusion)),
            "precision": float(compute_confusion_matrix_metric("precision", confusion)),
            "hd95": float(
                compute_hausdorff_distance(
                    y_pred, y, include_background=True, percentile=95, spacing=list(spacing)
                )
            ),
        }

    return {"raw": four(pred), "post": four(scipy_lcc(pred))}


def medpy(pred: np.ndarray, ref: np.ndarray, spacing: Spacing) -> dict[str, dict[str, float]]:
    def four(p: np.ndarray) -> dict[str, float]:
        return {
            "dsc": medpy_binary.dc(p, ref),
            "sensitivity": medpy_binary.sensitivity(p, ref),
            "precision": medpy_binary.precision(p, ref),
            "hd95": medpy_binary.hd95(p, ref, voxelspacing=spacing, connectivity=1),
        }

    return {"raw": four(pred), "post": four(scipy_lcc(pred))}


def timed(fn: Callable, repeats: int, *args) -> tuple[float, dict]:
    """Median wall time over ``repeats`` calls (after one untimed warm-up when repeats > 1)."""
    if repeats > 1:
        fn(*args)
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def check(ours_out: dict, monai_out: dict, medpy_out: dict) -> list[str]:
    """Disagreements beyond round-off; empty when all agree.

    medpy works in float64 (relative tolerance 1e-9). MONAI works in float32: its percentile
    interpolates at a rank computed in float32 (1e-4 for HD), and its confusion matrix has
    FP = (voxels - positives) - TN, off by a few voxels once a volume exceeds 2**24 voxels (the
    KiTS-size case; 1e-3 for ratios).
    """
    problems = []
    for stage in ("raw", "post"):
        mine = ours_out[stage]
        pairs = [
            (f"{stage} hd95 vs medpy", mine["hd95"], medpy_out[stage]["hd95"], 1e-9),
            (f"{stage} hd95_max vs MONAI", mine["hd95_max"], monai_out[stage]["hd95"], 1e-4),
        ]
        for name in RATIOS:
            pairs.append((f"{stage} {name} vs medpy", mine[name], medpy_out[stage][name], 1e-9))
            pairs.append((f"{stage} {name} vs MONAI", mine[name], monai_out[stage][name], 1e-3))
        problems += [
            f"{n}: {a} != {b}" for n, a, b, tol in pairs if not math.isclose(a, b, rel_tol=tol)
        ]
    return problems


CASES = {
    "BRATS-size": dict(
        shape=(155, 240, 240),
        spacing=(1.0, 1.0, 1.0),
        centre_mm=(80.0, 110.0, 135.0),
        radii_mm=(20.0, 24.0, 19.0),
        false_positives_mm=[(30.0, 60.0, 60.0), (120.0, 190.0, 70.0), (70.0, 200.0, 200.0)],
        fp_radius_mm=5.0,
        seed=1,
    ),
    "KiTS-size": dict(
        shape=(128, 512, 512),
        spacing=(3.0, 0.78, 0.78),
        centre_mm=(190.0, 230.0, 130.0),
        radii_mm=(25.0, 22.0, 20.0),
        false_positives_mm=[(200.0, 240.0, 290.0), (150.0, 300.0, 270.0)],
        fp_radius_mm=6.0,
        seed=2,
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs of ours (default 5; 1 with --quick)")
    parser.add_argument("--device", default="cpu", help="MONAI's device: cpu, cuda or cuda:N")
    parser.add_argument("--quick", action="store_true",
                        help="the BRATS-size case only, ours and MONAI timed once")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    monai_repeats = 1 if args.quick else 3
    cases = dict(list(CASES.items())[:1]) if args.quick else CASES
    warnings.filterwarnings("ignore", module="monai")
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}; MONAI on {where}")
    print("times: all 8 numbers (DSC/SEN/PRC/HD95, raw + largest component) of one case\n")
    header = (
        f"{'case':<11} {'shape':<15} {'spacing mm':<16} {'ref vox':>8} {'pred vox':>8}"
        f" {'ours s':>8} {'MONAI s':>8} {'medpy s':>8} {'x MONAI':>8} {'x medpy':>8}  agree"
    )
    print(header)
    print("-" * len(header))
    details, rows = [], []
    for name, spec in cases.items():
        pred, ref = synthetic_case(**spec)
        spacing = spec["spacing"]
        t_ours, out_ours = timed(ours, repeats, pred, ref, spacing)
        t_monai, out_monai = timed(monai, monai_repeats, pred, ref, spacing, args.device)
        t_medpy, out_medpy = timed(medpy, 1, pred, ref, spacing)
        problems = check(out_ours, out_monai, out_medpy)
        rows.append({"case": name, "shape": list(pred.shape), "ours_s": t_ours,
                     "monai_s": t_monai, "medpy_s": t_medpy, "monai_device": where,
                     "agree": not problems, "problems": problems})
        print(
            f"{name:<11} {'x'.join(map(str, pred.shape)):<15} "
            f"{'x'.join(f'{s:g}' for s in spacing):<16} {int(ref.sum()):>8} {int(pred.sum()):>8}"
            f" {t_ours:>8.3f} {t_monai:>8.2f} {t_medpy:>8.2f} {t_monai / t_ours:>8.0f}"
            f" {t_medpy / t_ours:>8.0f}  {'yes' if not problems else 'NO'}"
        )
        details.append((name, out_ours, problems))
    print()
    for name, out, problems in details:
        for stage in ("raw", "post"):
            m = out[stage]
            print(
                f"{name:<11} {stage:<4}  DSC {m['dsc']:.4f}  SEN {m['sensitivity']:.4f}"
                f"  PRC {m['precision']:.4f}  hd95 {m['hd95']:7.2f} mm"
                f"  hd95_max {m['hd95_max']:7.2f} mm  pred voxels {m['pred_voxels']}"
            )
        for problem in problems:
            print(f"  DISAGREES {problem}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if any(problems for _, _, problems in details):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
