"""Data-layer numbers: generation time and imbalance ratio per synthetic preset, preprocessing
time per case (synthetic default size and real-dataset sizes), sampled patches per second,
and whether the sampler keeps up with the models.

    python bench/bench_data.py                 # everything but compare (minutes on 2 cores)
    python bench/bench_data.py --cases 50 --skip-large
    python bench/bench_data.py --only sampling --out numbers.json
    python bench/bench_data.py --only compare [--device cuda] [--throughput-json rows.json]

``--only compare`` prints "sampler batches/s vs model steps/s needed" side by side: for each
paper model (DeepMedic ``basic``: batch 10, 37^3 segments labelling 21^3 packed with its x3 and
x5 pathways' 23^3 and 21^3 grids; U-Net ``paper``: batch 2 x 128^3) and augmentation regime
(none, deepmedic, nnunet; DeepMedic's pathway grids take the voxelwise ones), the batches per
second the patch sampler cuts from the volumes of ``bench/trial_throughput.py`` (one thread,
as a CPU trial samples; one producer per usable core, as the trial's prefetching
``study.batches.BatchStream`` samples on CUDA; and per CPU-second, what one core delivers
however loaded the shared machine is), beside the steps per second the model needs: the
faster of its plain-step ceiling on ``--device`` (measured here, or read from
``--throughput-json``, the rows of ``trial_throughput.py --json``) and the GPU reference of
``study.profiles`` (paper sizes), and whether the sampler delivers ``TARGET`` (2) times that
with every core, so that it keeps the device fed. The nnunet regime is measured three ways:
whole on the CPU (``PatchSampler.sample``: cubic resampling, 0.1-0.3 batches/s for the paper
U-Net), and deferred (``PatchSampler.sample_deferred``): the CPU crop alone — what the sampler
must deliver when ``study.data.device_augmentation.BatchAugmenter`` runs on the GPU — and the
crop plus the augmenter on CPU torch (its cost on a CPU-only machine). Each model samples by its
paper scheme (DeepMedic balanced 50 % foreground, U-Net nnU-Net's 33 % oversampling), at the
model's input size with labels of its output size, as a trial does.

Real-size cases are synthetic cases generated at the real datasets' grid: BraTS 4 x 155 x
240 x 240 at 1 mm (no resampling needed) and KiTS19 1 x 100 x 512 x 512 at 3 x 0.78 x 0.78 mm
(resampled to 3.2 x 1.6 x 1.6 mm). The sampling settings are the papers': DeepMedic 37^3 input
-> 21^3 output, batch 10 (BraTS, 4 channels) and the U-Net 128^3, batch 2 (KiTS, 1 channel).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import trial_throughput  # noqa: E402 (bench/ is the script's folder)

from study.batches import BatchStream, RecycledArrays, usable_cores  # noqa: E402
from study.data import check, loader, presets, sampling, synthetic  # noqa: E402
from study.data.augmentation import REGIMES  # noqa: E402
from study.data.device_augmentation import BatchAugmenter  # noqa: E402
from study.data.registry import DATASETS  # noqa: E402
from study.models import DeepMedic, build_model, output_patch  # noqa: E402
from study.profiles import REFERENCE_SPEED  # noqa: E402

PRESETS = ("synthetic-brats", "synthetic-atlas", "synthetic-kits")
PAPER_SAMPLING = {"deepmedic": "balanced", "unet": "nnunet"}  # each model's paper scheme
TARGET = 2.0  # sampler batches/s per model step/s needed: the data pipeline keeps a GPU fed
DEFERRED = {"crop": "deferred: CPU crop only, augmenter on the device",
            "augment": "deferred: CPU crop + batch augmenter on CPU torch"}
VARIANTS = [(regime, None) for regime in REGIMES] + [("nnunet", d) for d in DEFERRED]


def bench_generation(work: Path, cases: int) -> dict:
    out = {}
    for preset in PRESETS:
        params = {**presets.DEFAULTS[preset], "cases": cases}
        clock = time.perf_counter()
        root = synthetic.ensure_generated(params, work / preset, preset=preset)
        seconds = time.perf_counter() - clock
        report = check.check_dataset(DATASETS[preset], root)
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
            params = {**presets.DEFAULTS[preset], "cases": 3, "shape": shape,
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


def _patches_per_second(cases, patch, label_patch, batch, augmentation, threads=1,
                        seconds=3.0, oversampling=None, deferred=None, pathways=None,
                        arrays=None) -> tuple[float, float]:
    """Patches per second of a sampler over ``seconds``, and per CPU-second of this process
    (what one core delivers, however loaded the machine). ``threads`` 1: the sampler in the
    calling thread, as a CPU trial samples; more: the trial's prefetching
    :class:`~study.batches.BatchStream` with that many producers cutting planned batches.
    ``oversampling`` None: nnU-Net's with the nnunet regime, else balanced. ``deferred``
    (nnunet regime only): ``"crop"``, the sampler's part of the deferred pipeline
    (:meth:`PatchSampler.sample_deferred`); ``"augment"``, that in the calling thread plus
    the :class:`BatchAugmenter` on the CPU with ``threads`` torch threads; None:
    :meth:`PatchSampler.sample`. ``pathways``: the sampler's (DeepMedic's packed pathway
    grids). ``arrays``: the stream's recycled memory (:class:`~study.batches.RecycledArrays`,
    shared by the measurements of a model; default: its own). The warm-up lasts until a
    ``seconds`` round of it makes no new block (at most 5 rounds), so that the measurement
    sees batches cut into memory already mapped, as a trial does after its first batches."""
    oversampling = oversampling or ("nnunet" if augmentation == "nnunet" else "balanced")
    sampler = sampling.PatchSampler(cases, patch, 0.33 if oversampling == "nnunet" else 0.5,
                                    seed=0, label_patch=label_patch, augmentation=augmentation,
                                    bg_aug_prob=0.5, oversampling=oversampling,
                                    pathways=pathways)
    producers = 1 if deferred == "augment" else threads
    arrays = arrays or RecycledArrays(keep=2 * producers + 2)
    stream = BatchStream(sampler, batch, 0 if producers == 1 else producers, pin=False,
                         label_dtype=np.uint8, deferred=deferred is not None,
                         producers=producers, arrays=arrays)
    augmenter = (BatchAugmenter(max(int(c.label.max()) for c in cases) + 1, augmentation)
                 if deferred == "augment" else None)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)

    def draw():
        images, labels, _, draws = stream.next()
        if augmenter is not None:
            augmenter.apply(images, labels, draws)

    for _ in range(5):  # warm-up: page cache, threads, recycled memory
        made, clock = arrays.made, time.perf_counter()
        while time.perf_counter() - clock < seconds:
            draw()
        if arrays.made == made:
            break
    done, clock, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - clock < seconds:
        draw()
        done += batch
    rate, per_cpu = (done / (time.perf_counter() - clock), done / (time.process_time() - cpu))
    stream.close()
    torch.set_num_threads(torch_threads)
    return rate, per_cpu


def bench_sampling(work: Path, large: bool) -> dict:
    out = {}
    settings = []
    brats = "brats-size" if large and (work / "brats-size").exists() else "synthetic-brats"
    kits = "kits19-size" if large and (work / "kits19-size").exists() else "synthetic-kits"
    settings.append(("DeepMedic 37^3->21^3 x10", brats, "synthetic-brats", (37,) * 3, (21,) * 3,
                     10, "none"))  # with its pathways' grids (below)
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
        pathways = (build_model("deepmedic", "basic", len(info.channels), 2)  # DeepMedic rows
                    .pathways(label_patch) if label_patch else None)
        for threads in sorted({1, usable_cores()}):
            rate, per_cpu = _patches_per_second(cases, patch, label_patch, batch, augmentation,
                                                threads, pathways=pathways)
            out[f"{title}, {threads} thread(s)"] = {
                "dataset": folder, "patches_per_second": round(rate, 1),
                "batches_per_second": round(rate / batch, 1),
                "patches_per_cpu_second": round(per_cpu, 1)}
            print(f"sampling {title} from {folder}, {threads} thread(s): {rate:.0f} patches/s "
                  f"({rate / batch:.1f} batches/s; {per_cpu:.0f} patches per CPU-second)",
                  flush=True)
    return out


def _ceilings(rows: list[dict], size: str) -> dict[str, tuple[float, str]]:
    """model -> (the fastest ceiling steps/s, its precision and mode) among throughput rows of
    the plain step of the model at ``size`` and its batch, in one process."""
    out: dict[str, tuple[float, str]] = {}
    for row in rows:
        model, preset = row["model"].split("-", 1)
        size_preset, size_batch = trial_throughput.SIZES[model][size][:2]
        if (row["technique"], preset, row["batch"], row["processes"]) != (
                "plain", size_preset, size_batch, 1):
            continue
        if model not in out or row["ceiling_steps"] > out[model][0]:
            out[model] = (row["ceiling_steps"], f"{row['precision']} {row['mode']}")
    return out


def bench_compare(device: str, size: str, seconds: float, throughput_json: list[str],
                  steps: int | None) -> list[dict]:
    """Sampler batches/s per model and augmentation regime beside the model's steps/s (see
    the module docstring)."""
    measured_rows = [row for path in throughput_json if Path(path).is_file()
                     for row in json.loads(Path(path).read_text())]
    known = _ceilings(measured_rows, size)
    cuda = device.startswith("cuda")
    where = "CUDA" if cuda else "CPU"
    cores = usable_cores()
    print(f"sampler batches/s vs model steps/s needed ({cores} usable cores, load average "
          f"{_load()}; steps/s on {where}; GPU reference: study.profiles; need: the faster of "
          f"the two; target: {TARGET:g} x the need with {cores} threads)", flush=True)
    print(f"| model | regime | batch x input -> output | sampler batches/s, 1 thread | "
          f"sampler batches/s, {cores} threads | per core (batches per CPU-s) | ceiling steps/s "
          f"({where}) | GPU reference steps/s | need steps/s | {cores} threads / need | "
          f"target {TARGET:g}x met |\n|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for model in ("deepmedic", "unet"):
        preset, batch, segment, channels, classes, shape, count = \
            trial_throughput.SIZES[model][size]
        label = output_patch(model, preset, segment)
        net = build_model(model, preset, channels, classes)
        patch = tuple(net.input_size(label))
        pathways = net.pathways(label) if isinstance(net, DeepMedic) else None
        if model not in known:
            args = argparse.Namespace(batch_size=None, device=device, compile=None, warmup=1,
                                      rounds=1, steps=steps or (20 if cuda else 1))
            measured = trial_throughput.measure(model, size, "plain", args)
            known[model] = (measured["ceiling_steps"], f"{measured['precision']} eager")
        ceiling, mode = known[model]
        reference = REFERENCE_SPEED[model]
        # the paper models' GPU reference, scaled to this batch of input voxels (none for the
        # tiny models)
        scaled = (reference.steps_per_second * reference.voxels / (batch * math.prod(segment))
                  if size == "paper" else None)
        needed = max(ceiling, scaled or 0.0)
        cases = trial_throughput._cases(channels, classes, shape, count)
        arrays = RecycledArrays(keep=2 * cores + 2)  # the streams' batches in flight
        for regime, deferred in VARIANTS:
            if (deferred and PAPER_SAMPLING[model] != "nnunet") or (
                    pathways and regime == "nnunet"):
                continue  # the deferred pipeline is the nnU-Net model's; grids: voxelwise only
            rates = {threads: _patches_per_second(cases, patch, label, batch, regime, threads,
                                                  seconds, PAPER_SAMPLING[model],
                                                  deferred, pathways, arrays)
                     for threads in sorted({1, cores})}
            regime = regime + (f" ({DEFERRED[deferred]})" if deferred else "")
            single, best, per_core = (rates[1][0] / batch, rates[cores][0] / batch,
                                      rates[cores][1] / batch)
            row = {"model": f"{model}-{preset}", "regime": regime, "batch": batch,
                   "input": "x".join(map(str, patch)), "output": "x".join(map(str, label)),
                   "sampling": PAPER_SAMPLING[model], "batches_per_second_1": single,
                   "batches_per_second_all": best, "threads": cores,
                   "batches_per_cpu_second": per_core, "load_average": _load(),
                   "ceiling_steps": ceiling, "ceiling_mode": mode, "ceiling_device": where,
                   "reference_steps": scaled, "reference": reference.source,
                   "needed_steps": needed, "sampler_over_need": best / needed,
                   "target_met": best >= TARGET * needed}
            rows.append(row)
            print(f"| {row['model']} | {regime} | {batch} x {row['input']} -> {row['output']} "
                  f"| {single:.3g} | {best:.3g} | {per_core:.3g} | {ceiling:.3g} ({mode}) | "
                  f"{f'{scaled:.3g}' if scaled else '-'} | {needed:.3g} | {best / needed:.2f} | "
                  f"{'yes' if row['target_met'] else 'no'} |", flush=True)
    return rows


def _load() -> str:
    """The 1, 5 and 15 minute load averages (other jobs share the cores)."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200, help="cases per preset to generate")
    parser.add_argument("--skip-large", action="store_true", help="no real-size cases")
    parser.add_argument("--only", choices=("generation", "preprocessing", "sampling", "compare"))
    parser.add_argument("--device", default="cpu",
                        help="compare: where the model ceilings are measured (cpu, cuda)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="compare: seconds per sampler measurement (default 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="compare: timed ceiling steps (default 1 on the CPU, 20 on CUDA)")
    parser.add_argument("--size", choices=("tiny", "paper"), default="paper",
                        help="compare: trial_throughput.py's sizes (default paper)")
    parser.add_argument("--throughput-json", action="append", default=[],
                        help="compare: take the ceilings from these trial_throughput.py rows "
                        "(repeatable; missing files are ignored)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    numbers: dict = {}
    if args.only == "compare":
        numbers["compare"] = bench_compare(args.device, args.size, args.seconds,
                                           args.throughput_json, args.steps)
        if args.out:
            Path(args.out).write_text(json.dumps(numbers, indent=1))
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-data-"))
    print(f"scratch: {work}; {os.cpu_count()} CPUs", flush=True)
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
