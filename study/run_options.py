"""What the Ray driver and a trial share about running it, without torch: the launch's
:class:`RunOptions` (where a trial reads data and writes results, how it uses the machine) and
:func:`record_failure`, the ``failed`` trials row stored for a trial that could not run or
finish.

``study.trial`` runs a trial with these options; ``study.orchestrate`` and ``study.optimize``
build them, store them in ``study.json`` and record the failures they see (a worker process
that died, a trial ASHA pruned) without importing the training stack.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import study
from study.identity import canonical_json
from study.progress import REPORT_SECONDS
from study.results import ResultStore, identity_columns


@dataclass(frozen=True)
class RunOptions:
    """Where a trial reads data and writes results, and how it uses the machine; not part of
    the trial's identity.

    ``validate_every``: iterations between validations (0 = none); each scores
    ``study.training.VALIDATION_PATCHES`` fixed patches of the held-out validation cases (of
    the *test* cases where none are held out) and reports ``val_loss`` and ``val_dsc`` (the
    last ``val_loss`` is the trials row's ``final_val_loss``, 003 Table 1) — for watching
    training only, as the reference DeepMedic configs validate on their test list;
    nothing is selected or stopped on it. ``compile``: a ``torch.compile``
    mode (``"default"``, ``"reduce-overhead"``, ...) used on CUDA, or None for eager.
    ``prefetch``: batches sampled ahead in a thread (None: 2 on CUDA, 0 on the CPU).
    ``check_every``: iterations between NaN/inf checks of the loss (None: 1 on the CPU, 25 on
    CUDA). ``report_seconds``: a training trial reports its iteration and loss (no checkpoint)
    at least this often, for live progress, besides its ~10 reports per run.
    ``mlflow_uri``: an MLflow tracking URI to log each trial to (``study.tracking``), or None.
    """

    data_dir: str
    results_uri: str
    dataset_roots: dict[str, str] = field(default_factory=dict)  # real dataset name -> folder
    device: str = "auto"
    checkpoint_every: int = 0  # iterations between checkpoints; 0 = none
    threads: int | None = None
    validate_every: int = 0
    compile: str | None = None
    prefetch: int | None = None
    check_every: int | None = None
    report_seconds: float = REPORT_SECONDS
    mlflow_uri: str | None = None


def _identity(param: dict[str, Any]) -> dict[str, Any]:
    """The identity columns of ``param``, or as many as a malformed param allows (a failed
    row is stored even for a trial whose config cannot be read)."""
    try:
        return identity_columns(param)
    except (KeyError, TypeError, ValueError):
        config = param.get("config")
        return {"study": param.get("study"), "trial_id": param.get("trial_id"),
                "param_label": param.get("param_label"), "variant": param.get("variant"),
                "technique": config.get("technique") if isinstance(config, dict) else None}


def record_failure(param: dict[str, Any], options: RunOptions, error: BaseException | str,
                   row: dict[str, Any] | None = None) -> None:
    """Store a ``failed`` trials row for ``param`` naming ``error`` (over ``row``, what the
    trial had recorded so far), so that ``study status`` lists the reason; the trial runs
    again on resume."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    now = datetime.now(timezone.utc)
    base = {**_identity(param), "config": canonical_json(param.get("config")),
            "started_at": now, "code_version": study.code_version(),
            "host": socket.gethostname()}
    ResultStore(options.results_uri).write_trial(
        {**base, **(row or {}), "status": "failed", "error": message, "finished_at": now}, [])
