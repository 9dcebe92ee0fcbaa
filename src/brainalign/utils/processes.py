"""Whether a process of this machine is still running, for files that name their owner's pid."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["process_alive"]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told).

    A zombie (killed, not yet reaped by its parent) has stopped: it counts as gone. Someone
    else's process, a system without ``/proc`` and Windows (where ``os.kill(pid, 0)`` would
    send CTRL_C_EVENT) count as alive.
    """
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:  # Linux: the state letter follows the parenthesised command name
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
