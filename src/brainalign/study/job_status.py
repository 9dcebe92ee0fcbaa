"""Job states and ``run_dir/job.json``, where a job records them for the study to read.

Every writer (the launcher at submission, the job as it starts and ends) merges its fields
under an exclusive ``flock`` and replaces the file atomically (temporary file + ``os.replace``):
a reader never sees half a file, and the launcher's late write of a job id cannot undo the job's
own RUNNING. Times are ISO 8601 in UTC.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: States a job reports. SLURM's own terminal states (TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...)
#: are passed through as SLURM names them.
PENDING = "PENDING"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
INTERRUPTED = "INTERRUPTED"  # stopped by a signal (requeue, preemption, cancel); may run again
UNKNOWN = "UNKNOWN"  # the scheduler no longer knows the job and it left no final state

#: SLURM states after which the job will not run again (without a new submission).
SLURM_FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        CANCELLED,
        COMPLETED,
        "DEADLINE",
        FAILED,
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
#: States :meth:`Launcher.wait` returns on.
FINAL_STATES = SLURM_FINAL_STATES | {UNKNOWN}

JOB_STATUS_FILE = "job.json"


def read_job_status(run_dir: Path) -> dict[str, Any] | None:
    """The content of ``run_dir/job.json``, or ``None`` when there is none (or it is unreadable).

    Keys: ``name``, ``state``, ``job_id``, ``host``, ``submitted``, ``start``, ``end`` (ISO 8601,
    UTC), ``error``, ``argv`` (the command line last run), ``resumed`` (whether that was
    ``resume_argv``) and ``restarts`` (SLURM's restart count of the job).
    """
    path = Path(run_dir) / JOB_STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def update_job_status(run_dir: Path, *, only_if: Mapping[str, Any] | None = None, **fields) -> bool:
    """Merge ``fields`` into ``run_dir/job.json`` (written atomically, under a lock).

    Parameters
    ----------
    run_dir : Path
        The run's folder.
    only_if : mapping or None
        Update only when the current file has these values (``None`` values match an absent
        key), e.g. ``{"state": "PENDING"}``: the launcher's late write of a job id must not
        overwrite a job that already reported RUNNING.
    **fields
        JSON-serialisable values.

    Returns
    -------
    bool
        Whether the file was written.
    """
    run_dir = Path(run_dir)
    with _locked(run_dir / f".{JOB_STATUS_FILE}.lock"):
        status = read_job_status(run_dir) or {}
        if only_if is not None and any(status.get(k) != v for k, v in only_if.items()):
            return False
        status.update(fields)
        _write_json_atomically(run_dir / JOB_STATUS_FILE, status)
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if absent) for the duration of the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json_atomically(path: Path, content: Mapping[str, Any]) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(content, stream, indent=1)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def now_utc() -> str:
    """The current time, ISO 8601 in UTC, to the millisecond (job durations are measured)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time written by :func:`now_utc`; ``None`` for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
