"""A study's folder in a storage and ``study.json``, the plan stored there: the trials and how
to run them, read by launch, resume, status, report and compact. Imports neither Ray nor
torch (``study status`` and ``study report`` start in a second).

Storage layout of a study (``<storage>`` is a local folder or a pyarrow URI such as
``s3://bucket/studies`` that every node sees)::

    <storage>/<study>/study.json          the trials and run options (for resume/status/report)
    <storage>/<study>/results/            Parquet results (``study.results``) and heartbeats
    <storage>/<study>/tune/run-<time>/    Ray Tune experiments (``study.orchestrate``)
    <storage>/<study>/optuna.journal      Optuna's record of an optimize-mode study

``study.json`` is written whole (temporary file and rename; one PUT on object stores) and names
the results and data folders relative to the storage, so a study folder can be moved or copied
with its storage and resumed in place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow.fs as pafs

from study import progress
from study.results import ResultStore, filesystem
from study.run_options import RunOptions
from study.status import PRUNED

PLAN_FILE = "study.json"


def study_uri(storage: str, study: str) -> str:
    """The folder of study ``study`` in ``storage``. The name must be a study name (the
    spec's rule: lower-case letters, digits, ``_ . -``, starting with a letter or digit), so
    no name reaches another study's folder or leaves the storage."""
    from study.spec import NAME_PATTERN

    if not isinstance(study, str) or not NAME_PATTERN.match(study) or ".." in study:
        raise ValueError(f"study name {study!r}: expected a lower-case name of letters, "
                         "digits, '_', '-', '.' (no path)")
    return f"{str(storage).rstrip('/')}/{study}"


def storage_of(uri: str) -> str:
    """The storage holding the study folder ``uri``."""
    return uri.rstrip("/").rsplit("/", 1)[0]



def _relative(path: str, storage: str) -> str:
    """``path`` relative to ``storage`` when inside it, else as given."""
    prefix = storage.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def _absolute(path: str, storage: str) -> str:
    return path if "://" in path or path.startswith("/") else f"{storage.rstrip('/')}/{path}"


PATH_OPTIONS = ("data_dir", "results_uri")  # RunOptions paths stored relative to the storage


@dataclass(frozen=True)
class Plan:
    """What ``study.json`` holds: the study's trials and how to run them.

    ``mode``: ``grid`` (``trials`` is the whole study) or ``optimize`` (``search`` holds the
    search's groups and settings, ``study.optimize``; ``trials`` grows as trials start).
    ``options`` are the trials' :class:`~study.run_options.RunOptions` with the data and results
    folders relative to the storage (see :meth:`run_options`).
    """

    study: str
    trials: list[dict[str, Any]]
    options: dict[str, Any]
    cpus_per_trial: float
    gpus_per_trial: float
    mode: str = "grid"
    search: dict[str, Any] | None = None

    @classmethod
    def create(cls, study: str, trials: list[dict[str, Any]], options: RunOptions,
               storage: str, **settings: Any) -> Plan:
        stored = asdict(options)
        for key in PATH_OPTIONS:
            stored[key] = _relative(stored[key], storage)
        return cls(study, trials, stored, **settings)

    def search_settings(self) -> dict[str, Any]:
        """``search`` of an optimize-mode plan; ``ValueError`` for a grid-mode one."""
        if self.search is None:
            raise ValueError(f"study {self.study!r} is a {self.mode}-mode plan: it has no "
                             "search settings (optimize mode only)")
        return self.search

    def run_options(self, uri: str) -> RunOptions:
        """The trials' run options with folders resolved against the study's storage."""
        storage = storage_of(uri)
        return RunOptions(**{**self.options, **{key: _absolute(self.options[key], storage)
                                                for key in PATH_OPTIONS}})

    def save(self, uri: str) -> None:
        store = ResultStore(uri)
        progress.write_json(store, f"{store.root}/{PLAN_FILE}", asdict(self))

    @classmethod
    def load(cls, uri: str) -> Plan:
        fs, root = filesystem(uri)
        path = f"{root}/{PLAN_FILE}"
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{path}: no launched study here (run `study launch` first, "
                                    "or check the name and --storage)")
        try:
            with fs.open_input_stream(path) as stream:
                data = json.loads(stream.read().decode("utf-8"))
            plan = cls(**data)
            plan.run_options(uri)
            if not isinstance(plan.trials, list) or plan.mode not in ("grid", "optimize"):
                raise ValueError("unexpected trials or mode")
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: damaged study.json, cut short or edited ({error}); "
                             "restore it from a copy, or launch the study again") from error
        return plan


def pending_trials(plan: Plan, uri: str) -> list[dict]:
    """The plan's trials that still have to run: no stored result, and not pruned by a
    search (optimize mode; a pruned trial stored no result and never runs again)."""
    finished = ResultStore(f"{uri}/results").finished_ids()
    return [t for t in plan.trials
            if t["trial_id"] not in finished and t.get("status") != PRUNED]
