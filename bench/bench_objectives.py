"""Forward+backward time of every loss in ``study.objectives`` vs ``F.cross_entropy``.

Usage::

    python bench/bench_objectives.py                      # CPU, 2x3x128^3 float32 logits
    python bench/bench_objectives.py --device cuda --dtype bfloat16
    python bench/bench_objectives.py --quick --json out.json   # 3 repeats; 48^3 on the CPU

On CPU, glibc returns every freed 50 MB buffer to the OS and the next allocation page-faults
it back in, which adds tens of ms to whichever function allocates next and makes the ratios
depend on ordering. For stable numbers keep freed memory in the heap (as a caching allocator
does on the GPU)::

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 \
        python bench/bench_objectives.py --threads 1

Prints one row per loss: the fastest of ``--repeats`` timed forward+backward runs (after
warm-up) and the ratio to ``torch.nn.functional.cross_entropy`` on the same logits and labels,
timed interleaved with the loss (so a busy machine slows both alike; the minimum is the least
disturbed run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import study.objectives as obj


def _losses(c: int) -> dict[str, torch.nn.Module]:
    r = (0.0,) + (1.0,) * (c - 1)  # background 0, every foreground class rare (001 §IV)
    counts = [10**8] + [10**6 // (k + 1) for k in range(c - 1)]
    return {
        "CrossEntropyLoss": obj.CrossEntropyLoss(),
        "CrossEntropyLoss(weight)": obj.CrossEntropyLoss(weight=[1.0] + [5.0] * (c - 1)),
        "DiceLoss (eq. 3)": obj.DiceLoss(),
        "DiceLoss(squared) (004)": obj.DiceLoss(squared=True),
        "JaccardLoss (004)": obj.JaccardLoss(),
        "FBetaLoss(2)": obj.FBetaLoss(2.0),
        "CE + DSC (U-Net baseline)": obj.CrossEntropyLoss() + obj.DiceLoss(),
        "LargeMarginLoss(1, r) ce": obj.LargeMarginLoss(1.0, r),
        "LargeMarginLoss(1, r) dsc": obj.LargeMarginLoss(1.0, r, "dsc"),
        "FocalLoss(2) ce": obj.FocalLoss(2.0),
        "FocalLoss(2, r) ce": obj.FocalLoss(2.0, r),
        "FocalLoss(2, r) dsc": obj.FocalLoss(2.0, r, "dsc"),
        "MarginFocalLoss(1, 2, r) ce": obj.MarginFocalLoss(1.0, 2.0, r),
        "focal CE + focal DSC (U-Net)": obj.FocalLoss(2.0, r) + obj.FocalLoss(2.0, r, "dsc"),
        "MarginCalibrationLoss(10, 1)": obj.MarginCalibrationLoss(10.0, 1.0, counts),
    }


def _once(fn, logits: torch.Tensor, target: torch.Tensor) -> float:
    sync = torch.cuda.synchronize if logits.is_cuda else (lambda: None)
    x = logits.detach().requires_grad_(True)
    sync()
    t0 = time.perf_counter()
    fn(x, target).backward()
    sync()
    return time.perf_counter() - t0


def _time_pair(fn, logits: torch.Tensor, target: torch.Tensor, repeats: int,
               warmup: int) -> tuple[float, float]:
    """Fastest forward+backward (ms) of ``fn`` and of ``F.cross_entropy``, interleaved."""
    ce, ours = [], []
    for i in range(warmup + repeats):
        t_ce = _once(F.cross_entropy, logits, target)
        t_ours = _once(fn, logits, target)
        if i >= warmup:
            ce.append(t_ce)
            ours.append(t_ours)
    return 1e3 * min(ours), 1e3 * min(ce)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--size", type=int, default=None,
                        help="edge of the cubic volume (default 128; 48 with --quick on the CPU)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=None, help="default 7 (3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 3 repeats, and 48^3 logits on the CPU")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--only", default=None, help="substring filter on loss names")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.size is None:
        args.size = 48 if args.quick and device.type == "cpu" else 128
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (args.batch, args.classes, args.size, args.size, args.size)
    logits = (3 * torch.randn(shape, generator=g)).to(device=device, dtype=dtype)
    target = torch.randint(0, args.classes, (shape[0], *shape[2:]), generator=g).to(device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# logits {list(shape)} {args.dtype} on {name} ({torch.get_num_threads()} threads, "
          f"torch {torch.__version__}); fastest of {args.repeats} forward+backward, interleaved "
          "with F.cross_entropy")
    print(f"{'loss':34s} {'ms':>9s} {'CE ms':>9s} {'x CE':>6s}")
    rows = []
    for label, loss in _losses(args.classes).items():
        if args.only and args.only not in label:
            continue
        ms, base = _time_pair(loss, logits, target, args.repeats, args.warmup)
        print(f"{label:34s} {ms:9.1f} {base:9.1f} {ms / base:6.2f}", flush=True)
        rows.append({"loss": label, "ms": ms, "ce_ms": base, "x_ce": ms / base,
                     "logits": list(shape), "dtype": args.dtype, "device": name})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
