"""Locks and atomic folder publication for caches that several trials fill at once."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for this block.

    Concurrent trials on one node take turns; where the file system does not support locks
    the block runs unlocked, and callers stay correct through :func:`publish`'s atomic rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield  # closing the file releases the lock


def staging_dir(final: Path) -> Path:
    """A new empty hidden sibling of ``final`` to write into before :func:`publish`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))


def remove_stale_staging(final: Path) -> None:
    """Delete staging folders a killed writer left for ``final`` (call holding its lock)."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def publish(staging: Path, final: Path, replace: bool = False) -> None:
    """Rename the complete ``staging`` folder to ``final`` (atomic on one file system).

    If ``final`` exists: with ``replace`` it is moved aside and deleted first; otherwise the
    existing one wins (another writer finished first) and ``staging`` is deleted.
    """
    if final.exists() and replace:
        aside = final.with_name(f".{final.name}.tmp-old-{uuid.uuid4().hex[:8]}")
        os.rename(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(staging, final)
    except OSError:
        if not final.exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
