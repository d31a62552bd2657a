"""Process sessions: :func:`kill_session` SIGKILLs a driver or a step together with every
process it started (Ray's raylet, GCS and workers stay in the session of the process that
started them), as when the driver's machine is lost or a step runs past its time.

The fault tests and ``bench/gpu_check.py`` start such processes with
``start_new_session=True``. Standard library only: the GPU check's top process imports this
where only a bundle provides the rest of the stack. Linux (reads ``/proc``).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def kill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid`` (a process started with
    ``start_new_session=True`` and all it started); return how many were signalled."""
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold ")"
        if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: the session id
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed
