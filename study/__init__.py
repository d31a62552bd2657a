"""imbalance-study: hyperparameter sensitivity studies of class-imbalance regularizers.

Data flows one way: study file (``study.spec``) -> trials (``study.expand``) -> one training
run each (``study.trial``) scheduled by Ray Tune (``study.orchestrate``) -> Parquet results
(``study.results``) -> tables and figures (the separate ``analysis`` package).
"""

from __future__ import annotations

import functools

__version__ = "0.1.0"


@functools.cache
def code_version() -> str:
    """The code a result was computed with: the git commit (``+ "-dirty"`` when tracked files
    differ from it) when this package runs from a git checkout, else the package version.
    Stored in every ``trials`` row and printed by ``study --version``."""
    import subprocess
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    if not (checkout / ".git").exists():
        return __version__
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{commit}-dirty" if dirty else commit
