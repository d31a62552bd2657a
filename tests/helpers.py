"""Shared test helpers: tiny image volumes written the way the datasets' own tools write them,
a one-trial study of a real layout, a trial function that trains nothing, and killing a
process session (a lost driver machine; ``study.processes.kill_session``).

Imported by test modules as ``from helpers import ...`` (pytest puts ``tests/`` on the path,
wherever it is run from).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import SimpleITK as sitk

from study.models import output_patch
from study.processes import kill_session as kill_session  # for the fault tests
from study.results import ResultStore


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


def start_driver(args: list[str], log) -> subprocess.Popen:
    """``study ARGS`` as a driver process in its own session (:func:`kill_session` kills it
    with every Ray process it started), its output to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "study.cli", *args], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_training(log_path: Path, offset: int, driver: subprocess.Popen,
                      timeout: float) -> bool:
    """Wait until the driver's output after ``offset`` shows a trial training (a progress
    line at iteration k of N, 0 < k < N); False if the driver exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.poll() is None:
        if any(0 < int(k) < int(n) for k, n in
               re.findall(r"iteration (\d+)/(\d+)", log_path.read_text()[offset:])):
            return True
        time.sleep(0.2)
    return False


FAULT_STUDY = Path(__file__).resolve().parent / "data" / "fault-study.yaml"


DEEPMEDIC_SEGMENT = (17, 17, 17)  # tiny DeepMedic: 17^3 normal segments, 9^3 outputs


def spec_variant(spec, model="unet", iterations=None, patch=None, technique=None, **training):
    """``spec`` with another model, budget, input patch or single technique run."""
    changes = {"iterations": iterations} if iterations else {}
    segment = patch or (DEEPMEDIC_SEGMENT if model == "deepmedic" else spec.training.input_patch)
    changes.update(input_patch=tuple(segment),
                   output_patch=output_patch(model, spec.model_preset, segment))
    spec = dataclasses.replace(spec, model=model, training=dataclasses.replace(
        spec.training, **changes, **training))
    if technique is not None:
        spec = dataclasses.replace(spec, techniques=(technique,))
    return spec


def tiny_training(tiny_spec, tiny_data, run_options, technique, hp, model="unet", **options):
    """A :class:`~study.training.Training` of the tiny study's first fraction, seed 0, on the
    CPU, with ``options`` replacing fields of ``run_options``."""
    import torch

    from study.expand import trial_config
    from study.training import Training

    config = trial_config(spec_variant(tiny_spec, model), tiny_spec.fractions[0], technique,
                          hp, 0)
    info, train, _ = tiny_data
    return Training(config, train, info, torch.device("cpu"),
                    dataclasses.replace(run_options, **options))


# -- a filesystem that counts every call and can die mid-way -----------------------------------

MUTATIONS = ("create_dir", "delete_dir", "delete_file", "move", "open_output_stream")


class Killed(Exception):
    """The process died here (injected)."""


class _CountedReads:
    """A file object counting the reads and bytes read through it."""

    def __init__(self, file: pa.NativeFile, counts: Counter):
        self.file, self.counts, self.closed = file, counts, False

    def read(self, nbytes: int = -1) -> bytes:
        data = self.file.read(nbytes if nbytes >= 0 else None)
        self.counts["reads"] += 1
        self.counts["bytes"] += len(data)
        return data

    def seek(self, position: int, whence: int = 0) -> int:
        return self.file.seek(position, whence)

    def tell(self) -> int:
        return self.file.tell()

    def size(self) -> int:
        return self.file.size()

    def close(self) -> None:
        self.closed = True
        self.file.close()


class Observed(pafs.FileSystemHandler):
    """A local filesystem that counts every call (``counts``: listings, stats, opens, reads
    and bytes read) and, with ``kill_at=k``, dies at its k-th mutation (``MUTATIONS``): an
    output stream opened then leaves a torn file behind, and every later call raises
    ``Killed``, so no clean-up runs."""

    def __init__(self, kill_at: int | None = None):
        self.inner, self.kill_at = pafs.LocalFileSystem(), kill_at
        self.counts: Counter = Counter()
        self.mutations, self.dead = 0, False

    def _call(self, name: str, *args, **options):
        if self.dead:
            raise Killed(name)
        if name in MUTATIONS:
            if self.mutations == self.kill_at:
                self.dead = True
                if name == "open_output_stream":
                    with self.inner.open_output_stream(args[0]) as torn:
                        torn.write(b"PAR1 torn")
                raise Killed(name)
            self.mutations += 1
        self.counts[name] += 1
        return getattr(self.inner, name)(*args, **options)

    def get_type_name(self):
        return "observed"

    def normalize_path(self, path):
        return path

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def get_file_info(self, paths):
        self.counts["stat"] += len(paths) - 1  # one call counted below
        return self._call("get_file_info", paths)

    def get_file_info_selector(self, selector):
        self.counts["list"] += 1
        return self._call("get_file_info", selector)

    def create_dir(self, path, recursive):
        return self._call("create_dir", path, recursive=recursive)

    def delete_dir(self, path):
        return self._call("delete_dir", path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        return self._call("delete_dir_contents", path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        return self._call("delete_file", path)

    def move(self, src, dest):
        return self._call("move", src, dest)

    def copy_file(self, src, dest):
        return self._call("copy_file", src, dest)

    def open_input_stream(self, path):
        return pa.PythonFile(_CountedReads(self._call("open_input_stream", path), self.counts),
                             mode="r")

    def open_input_file(self, path):
        return pa.PythonFile(_CountedReads(self._call("open_input_file", path), self.counts),
                             mode="r")

    def open_output_stream(self, path, metadata):
        return self._call("open_output_stream", path)

    def open_append_stream(self, path, metadata):
        raise NotImplementedError


def observed_store(root: Path, kill_at: int | None = None) -> tuple[ResultStore, Observed]:
    handler = Observed(kill_at)
    return ResultStore(str(root.resolve()), fs=pafs.PyFileSystem(handler)), handler


def row_only_trial(param: dict, options, session) -> dict:
    """A trial that trains nothing (``study.orchestrate.Runner.trial``): one minimal valid
    ``ok`` row through ``ResultStore.write_trial``, so that the orchestration (Tune
    experiments, resume, batching) is exercised and timed without data or a model."""
    import socket
    from datetime import datetime, timezone

    import study
    from study.expand import canonical_json
    from study.results import identity_columns, summarise

    now = datetime.now(timezone.utc)
    row = {**identity_columns(param), "config": canonical_json(param["config"]),
           "status": "ok", "error": None, "started_at": now, "finished_at": now,
           "train_seconds": 0.0, "eval_seconds": 0.0, "iterations_done": 0,
           "code_version": study.code_version(), "host": socket.gethostname(),
           "device": "cpu"}
    ResultStore(options.results_uri).write_trial(row, [])
    return summarise(row, [])
