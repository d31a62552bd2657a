"""Shared test helpers: tiny image volumes written the way the datasets' own tools write them,
a one-trial study of a real layout, and killing a process session (a lost driver machine).

Imported by test modules as ``from helpers import ...`` (pytest puts ``tests/`` on the path,
wherever it is run from).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def write_image(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    """Write ``array`` ([D, H, W], or [C, D, H, W] as a 4-D image) with ``spacing`` in array
    order, the way the datasets' own tools write their files; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 4:
        channels = []
        for channel in array:
            image = sitk.GetImageFromArray(channel)
            image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
            channels.append(image)
        image = sitk.JoinSeries(channels)
    else:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    sitk.WriteImage(image, str(path))
    return path


def head(shape=(12, 14, 16), seed=0, fill=1) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like volume (float32, 0 outside an ellipsoid) and a uint8 label holding one small
    cube of value ``fill``."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = sum(g ** 2 for g in grid) < 0.8
    image = np.where(inside, 100 + 10 * rng.standard_normal(shape), 0).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[5:8, 6:9, 7:10] = fill
    return image, label


def kill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid`` (the driver and the Ray processes it started,
    as when the driver's machine is lost); return how many were signalled."""
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: session id
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def real_study_file(tmp_path: Path, root: Path) -> Path:
    """A one-trial study of the real ``brats`` layout at ``root`` (tiny U-Net, 4 iterations),
    written to ``tmp_path``; return its path."""
    path = tmp_path / f"real-{root.name}.yaml"
    path.write_text(f"""name: real
dataset: {{name: brats, test_cases: 2, root: {root}}}
fractions: [0.5]
model: {{name: unet, preset: tiny}}
training: {{iterations: 4, batch_size: 1, input_patch: [16, 16, 16]}}
techniques: [vanilla]
""")
    return path
