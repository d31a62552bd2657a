"""Data-layer numbers: generation time and imbalance ratio per synthetic preset, preprocessing
time per case (synthetic default size and real-dataset sizes), sampled patches per second.

    python bench/bench_data.py                 # everything (a few minutes on 2 cores)
    python bench/bench_data.py --cases 50 --skip-large
    python bench/bench_data.py --only sampling --out numbers.json

Real-size cases are synthetic cases generated at the real datasets' grid: BraTS 4 x 155 x
240 x 240 at 1 mm (no resampling needed) and KiTS19 1 x 100 x 512 x 512 at 3 x 0.78 x 0.78 mm
(resampled to 3.2 x 1.6 x 1.6 mm). The sampling settings are the papers': DeepMedic 37^3 input
-> 21^3 output, batch 10 (BraTS, 4 channels) and the U-Net 128^3, batch 2 (KiTS, 1 channel).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study.data import loader, sampling, synthetic  # noqa: E402
from study.data.registry import DATASETS  # noqa: E402

PRESETS = ("synthetic-brats", "synthetic-atlas", "synthetic-kits")


def bench_generation(work: Path, cases: int) -> dict:
    out = {}
    for preset in PRESETS:
        params = {**synthetic.DEFAULTS[preset], "cases": cases}
        clock = time.perf_counter()
        root = synthetic.ensure_generated(params, work / preset, preset=preset)
        seconds = time.perf_counter() - clock
        report = loader.check_dataset(DATASETS[preset], root)
        assert not report.problems, report.problems[:3]
        ratios = {name: f"{mean:.1f} ± {std:.1f}" for name, (mean, std, _) in
                  report.imbalance().items()}
        out[preset] = {"cases": cases, "shape": params["shape"], "seconds": round(seconds, 2),
                       "ms_per_case": round(1000 * seconds / cases, 1),
                       "imbalance_ratio": ratios}
        print(f"{preset}: {cases} cases of {params['shape']} in {seconds:.1f} s "
              f"({1000 * seconds / cases:.0f} ms/case); class-imbalance ratio (Table I) "
              + ", ".join(f"{k} {v}" for k, v in ratios.items()), flush=True)
    return out


def _preprocess_times(info, root, cache: Path, ids) -> dict:
    clock = time.perf_counter()
    cases = [loader.load_case(info, root, c, cache_dir=cache) for c in ids]
    first = (time.perf_counter() - clock) / len(ids)
    clock = time.perf_counter()
    for c in ids:
        loader.load_case(info, root, c, cache_dir=cache)
    cached = (time.perf_counter() - clock) / len(ids)
    return {"seconds_per_case": round(first, 3), "cached_ms_per_case": round(1000 * cached, 2),
            "shape_after": list(cases[0].label.shape), "spacing_after": list(cases[0].spacing)}


def bench_preprocessing(work: Path, large: bool) -> dict:
    out = {}
    for preset in PRESETS:
        info = DATASETS[preset]
        root = work / preset
        ids = loader.list_cases(info, root)[:10]
        out[preset] = _preprocess_times(info, root, work / "cache", ids)
    if large:
        sizes = {"brats-size": ("synthetic-brats", [155, 240, 240], [1.0, 1.0, 1.0]),
                 "kits19-size": ("synthetic-kits", [100, 512, 512], [3.0, 0.78, 0.78])}
        for name, (preset, shape, spacing) in sizes.items():
            params = {**synthetic.DEFAULTS[preset], "cases": 3, "shape": shape,
                      "spacing": spacing}
            clock = time.perf_counter()
            root = synthetic.ensure_generated(params, work / name, preset=preset)
            generated = (time.perf_counter() - clock) / 3
            info = DATASETS[preset]
            out[name] = _preprocess_times(info, root, work / "cache",
                                          loader.list_cases(info, root))
            out[name].update(shape_before=shape, spacing_before=spacing,
                             generation_seconds_per_case=round(generated, 2))
    for name, row in out.items():
        print(f"preprocess {name}: {row['seconds_per_case']:.3f} s/case (read, resample, ROI, "
              f"crop, z-score, write cache) -> {row['shape_after']} at {row['spacing_after']}; "
              f"cached load {row['cached_ms_per_case']:.2f} ms/case", flush=True)
    return out


def _patches_per_second(cases, patch, label_patch, batch, augmentation, workers=1,
                        seconds=3.0) -> float:
    oversampling = "nnunet" if augmentation == "nnunet" else "balanced"
    sampler = sampling.PatchSampler(cases, patch, 0.33 if oversampling == "nnunet" else 0.5,
                                    seed=0, label_patch=label_patch, augmentation=augmentation,
                                    bg_aug_prob=0.5, oversampling=oversampling,
                                    workers=workers)
    sampler.sample(batch)  # warm-up (page cache, index arrays)
    done, clock = 0, time.perf_counter()
    while time.perf_counter() - clock < seconds:
        sampler.sample(batch)
        done += batch
    rate = done / (time.perf_counter() - clock)
    sampler.close()
    return rate


def bench_sampling(work: Path, large: bool) -> dict:
    out = {}
    settings = []
    brats = "brats-size" if large and (work / "brats-size").exists() else "synthetic-brats"
    kits = "kits19-size" if large and (work / "kits19-size").exists() else "synthetic-kits"
    settings.append(("DeepMedic 37^3->21^3 x10", brats, "synthetic-brats", (37,) * 3, (21,) * 3,
                     10, "none"))
    settings.append(("DeepMedic 37^3->21^3 x10 +deepmedic augmentation", brats,
                     "synthetic-brats", (37,) * 3, (21,) * 3, 10, "deepmedic"))
    patch = (128,) * 3 if kits == "kits19-size" else (32, 64, 64)
    settings.append((f"U-Net {patch} x2", kits, "synthetic-kits", patch, None, 2, "none"))
    settings.append((f"U-Net {patch} x2 +nnunet augmentation, nnU-Net oversampling", kits,
                     "synthetic-kits", patch, None, 2, "nnunet"))
    for title, folder, preset, patch, label_patch, batch, augmentation in settings:
        info = DATASETS[preset]
        root = work / folder
        cases = [loader.load_case(info, root, c, cache_dir=work / "cache")
                 for c in loader.list_cases(info, root)[:10]]
        for workers in sorted({1, os.cpu_count() or 1}):
            rate = _patches_per_second(cases, patch, label_patch, batch, augmentation, workers)
            out[f"{title}, {workers} thread(s)"] = {
                "dataset": folder, "patches_per_second": round(rate, 1),
                "batches_per_second": round(rate / batch, 1)}
            print(f"sampling {title} from {folder}, {workers} thread(s): {rate:.0f} patches/s "
                  f"({rate / batch:.1f} batches/s)", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200, help="cases per preset to generate")
    parser.add_argument("--skip-large", action="store_true", help="no real-size cases")
    parser.add_argument("--only", choices=("generation", "preprocessing", "sampling"))
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-data-"))
    print(f"scratch: {work}; {os.cpu_count()} CPUs", flush=True)
    numbers: dict = {}
    if args.only in (None, "generation") or not all(
            (work / p / "COMPLETE").exists() for p in PRESETS):
        numbers["generation"] = bench_generation(work, args.cases)
    if args.only in (None, "preprocessing"):
        numbers["preprocessing"] = bench_preprocessing(work, not args.skip_large)
    if args.only in (None, "sampling"):
        numbers["sampling"] = bench_sampling(work, not args.skip_large)
    if args.out:
        Path(args.out).write_text(json.dumps(numbers, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
