"""Training throughput of a real trial loop against the model's compute-only ceiling.

For each model (U-Net, DeepMedic) and technique (plain, asymmetric adversarial — an extra
forward/backward for the direction and one for the adversarial batch —, asymmetric mixup — an
extra forward/backward —, asymmetric augmentation) this builds the trial runner's
``study.training.Training`` exactly as a trial does and measures

* **real**: ``Training.step()`` as the trial loop runs it: patch sampling from whole volumes
  (in a prefetch thread on CUDA), host-to-device copies, label preparation, augmentation,
  regularizer batches, the optimizer and LR schedule, and the periodic NaN/inf check;
* **ceiling**: the same ``regularized_step`` (same model, loss, regularizers, optimizer,
  autocast) on one batch kept on the device — no sampling, no copies, no checks;

and prints steps/s, supervised voxels/s (batch x output patch voxels of the clean batch per
step), real/ceiling and, on CUDA, the peak GPU memory of the row
(``torch.cuda.max_memory_allocated``, reset before each row; with ``--processes`` the largest
process's). Real and ceiling are timed in interleaved rounds and each keeps its best round (as
``timeit`` does: on a shared machine the fastest round is the one least disturbed by other
work). ``sample ms`` is the sampler's time per batch on the main thread. On CUDA the step runs
in bf16 autocast (``study.training.Training``), on the CPU in float32; ``--compile`` applies on
CUDA only. ``--json`` is rewritten after every row, so a run cut short keeps its rows.

    python bench/trial_throughput.py                           # CPU, tiny sizes (CI)
    python bench/trial_throughput.py --device cuda --size paper
    python bench/trial_throughput.py --device cuda --size paper --models deepmedic \\
        --batch-size 40 --compile reduce-overhead --processes 4

Sizes: ``tiny`` = the demo's U-Net (2 x 32^3) and the tiny DeepMedic (10 x 17^3 segments
labelling 9^3) on 48^3 volumes; ``paper`` = the nnU-Net-like U-Net (2 x 128^3, 1 channel,
160^3 volumes, KiTS-like) and the ``basic`` DeepMedic (10 x 37^3 normal segments labelling
21^3, read from a 105^3 context tensor for the x3 and x5 pathways, 4 channels,
155 x 240 x 240 volumes, BraTS-like). Ways to fill a GPU with the small
DeepMedic: ``--batch-size`` (larger batches), ``--compile reduce-overhead`` (CUDA graphs) and
``--processes N`` (N trials per GPU, timed from a common start after their warm-up; their
steps/s are summed).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import study.objectives as obj  # noqa: E402
from study.data.loader import Case  # noqa: E402
from study.identity import TrialConfig  # noqa: E402
from study.models import output_patch  # noqa: E402
from study.run_options import RunOptions  # noqa: E402
from study.training import Training  # noqa: E402

TECHNIQUES = {
    "plain": ("vanilla", {}),
    "asym_adversarial": ("asym_adversarial", {"eps": 1e-5, "l": 10.0}),
    "asym_mixup": ("asym_mixup", {"mixup_m": 0.2, "mixup_alpha": 1.0}),
    "asym_augmentation": ("asym_augmentation", {"bg_aug_prob": 0.5}),
}

# model -> size -> (preset, batch, input segment, channels, classes, volume shape, cases)
SIZES = {
    "unet": {"tiny": ("tiny", 2, (32, 32, 32), 4, 2, (48, 48, 48), 4),
             "paper": ("paper", 2, (128, 128, 128), 1, 3, (160, 160, 160), 4)},
    "deepmedic": {"tiny": ("tiny", 10, (17, 17, 17), 4, 2, (48, 48, 48), 4),
                  "paper": ("basic", 10, (37, 37, 37), 4, 2, (155, 240, 240), 2)},
}


@dataclass(frozen=True)
class _Data:
    """What ``Training`` reads of a dataset."""

    channels: tuple[str, ...]
    classes: dict[str, tuple[int, ...]]

    def rare_vector(self) -> list[float]:
        return [0.0] + [1.0] * (len(self.classes) - 1)


@functools.lru_cache(maxsize=2)
def _cases(channels: int, classes: int, shape, count: int, seed: int = 0) -> list[Case]:
    """Random volumes (noise) with a few spherical lesions per class (~1 % foreground); the
    last two sets are kept (the techniques of one model share them)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, sparse=True)
    cases = []
    for i in range(count):
        image = rng.standard_normal((channels, *shape), dtype=np.float32)
        label = np.zeros(shape, np.uint8)
        for k in range(1, classes):
            for _ in range(3):
                centre = [rng.integers(s // 4, 3 * s // 4) for s in shape]
                radius = max(2, min(shape) // 16)
                inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
                label[inside <= radius**2] = k
        cases.append(Case(case_id=f"case{i}", image=image, label=label,
                          roi=np.ones(shape, bool), spacing=(1.0, 1.0, 1.0)))
    return cases


_START = None  # with --processes: a barrier the workers pass together before timing


def _join(barrier) -> None:
    """Pool initializer: the barrier shared by the packed processes."""
    global _START
    _START = barrier


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function, steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        function()
    _sync(device)
    return steps / (time.perf_counter() - start)


def _fresh_gpu(device: torch.device, compiled: bool) -> None:
    """Free what earlier rows left (and their compiled graphs) and reset the peak memory."""
    gc.collect()
    if compiled:
        torch._dynamo.reset()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)


def measure(model: str, size: str, technique: str, args) -> dict:
    preset, batch, segment, channels, classes, shape, count = SIZES[model][size]
    batch = args.batch_size or batch
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        _fresh_gpu(device, bool(args.compile))
    name, hp = TECHNIQUES[technique]
    patch = output_patch(model, preset, segment)
    config = TrialConfig.from_dict({
        "dataset": {"name": "bench", "test_cases": 0, "validation_cases": 0}, "fraction": 1.0,
        "model": {"name": model, "preset": preset}, "technique": name, "hp": hp, "seed": 0,
        "augmentation": "deepmedic" if "bg_aug_prob" in hp else "none",
        "training": {"iterations": 10**9, "batch_size": batch, "input_patch": list(segment),
                     "output_patch": list(patch), "lr": None, "fg_fraction": 0.5,
                     "sampling": "balanced"},
        "inference": {"mirroring": False}})
    data = _Data(tuple(f"c{c}" for c in range(channels)),
                 {f"class{k}": (k,) for k in range(classes)})
    cases = _cases(channels, classes, shape, count)
    options = RunOptions(data_dir="", results_uri="", device=args.device, compile=args.compile)
    training = Training(config, cases, data, device, options)

    def real() -> None:
        training.step()
        if training.iteration % training.check_every == 0:
            training.check()

    images, labels, _, _ = training.batches.next()
    x = images.to(device)
    y = training.labels_at_input(labels.to(device))

    def ceiling() -> None:
        with training.autocast:
            obj.regularized_step(training.forward_model, training.loss, training.optimizer, x, y,
                                 regularizers=training.regularizers, update=training.update,
                                 generate_before_clean=training.recipe.generate_before_clean)

    for _ in range(args.warmup):
        real()
        ceiling()
    training.check()
    if _START is not None:  # packed processes time the same stretch of wall time
        _START.wait(timeout=600)
    real_rates, ceiling_rates = [], []
    for _ in range(args.rounds):  # interleaved; the best round of each: least disturbed
        real_rates.append(_timed(real, args.steps, device))
        training.check()
        ceiling_rates.append(_timed(ceiling, args.steps, device))
    training.batches.close()
    real_rate, ceiling_rate = max(real_rates), max(ceiling_rates)
    clock = time.perf_counter()
    for _ in range(3):
        training.sampler.sample(batch)
    sample_ms = (time.perf_counter() - clock) / 3 * 1e3
    voxels = batch * math.prod(patch)
    return {"model": f"{model}-{preset}", "technique": technique, "batch": batch,
            "input": "x".join(map(str, segment)),
            "context": "x".join(map(str, training.input_size)),
            "output": "x".join(map(str, patch)),
            "mode": args.compile if cuda and args.compile else "eager",
            "precision": "bf16" if cuda else "fp32", "processes": 1,
            "real_steps": real_rate, "real_voxels": real_rate * voxels,
            "ceiling_steps": ceiling_rate, "ceiling_voxels": ceiling_rate * voxels,
            "ratio": real_rate / ceiling_rate, "sample_ms": sample_ms,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None}


def _worker(arguments) -> dict:
    model, size, technique, args = arguments
    torch.set_num_threads(max(1, args.threads))
    return measure(model, size, technique, args)


def run(args) -> list[dict]:
    rows = []
    for model in args.models:
        for technique in args.techniques:
            if args.processes > 1:
                context = mp.get_context("spawn")
                with context.Pool(args.processes, initializer=_join,
                                  initargs=(context.Barrier(args.processes),)) as pool:
                    results = pool.map(_worker, [(model, args.size, technique, args)]
                                       * args.processes)
                row = dict(results[0], processes=args.processes)
                for key in ("real_steps", "real_voxels", "ceiling_steps", "ceiling_voxels"):
                    row[key] = sum(r[key] for r in results)
                row["ratio"] = row["real_steps"] / row["ceiling_steps"]
                peaks = [r["peak_gib"] for r in results if r["peak_gib"] is not None]
                row["peak_gib"] = max(peaks) if peaks else None
            else:
                row = measure(model, args.size, technique, args)
            rows.append(row)
            print(_line(row), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


HEADER = ("| model | technique | mode | batch | processes | input -> output | real steps/s | "
          "real Mvox/s | ceiling steps/s | ceiling Mvox/s | real/ceiling | sample ms | "
          "peak GiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _line(row: dict) -> str:
    peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
    return (f"| {row['model']} | {row['technique']} | {row['precision']} {row['mode']} | "
            f"{row['batch']} | {row['processes']} | {row['input']} -> {row['output']} | "
            f"{row['real_steps']:.2f} | {row['real_voxels'] / 1e6:.3f} | "
            f"{row['ceiling_steps']:.2f} | {row['ceiling_voxels'] / 1e6:.3f} | "
            f"{row['ratio']:.0%} | {row['sample_ms']:.1f} | {peak} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--size", choices=("tiny", "paper"), default="tiny")
    parser.add_argument("--models", default="unet,deepmedic")
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per round (default 4 on the CPU, 30 on CUDA)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved real/ceiling rounds; the best of each is reported")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default 2 on the CPU, 10 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the batch")
    parser.add_argument("--compile", default=None,
                        help="torch.compile mode on CUDA (default, reduce-overhead, ...)")
    parser.add_argument("--processes", type=int, default=1,
                        help="run N copies at once (trials sharing a GPU); steps/s are summed")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="intra-op CPU threads (per process)")
    parser.add_argument("--json", help="also write the rows to this JSON file (after each row)")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    args.steps = args.steps or (30 if cuda else 4)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.models = args.models.split(",")
    args.techniques = args.techniques.split(",")
    torch.set_num_threads(max(1, args.threads))
    device = torch.cuda.get_device_name(args.device) if cuda else "CPU"
    print(f"device: {device}; torch {torch.__version__}; {args.threads} CPU threads; size "
          f"{args.size}; best of {args.rounds} rounds of {args.steps} steps after {args.warmup} "
          "warm-up"
          f"{'; compile ' + args.compile if args.compile and cuda else ''}")
    print(HEADER, flush=True)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
