"""What SLURM says about jobs: ``squeue`` while the controller holds them, ``sacct`` after
(where the cluster keeps accounting), combined with the job's own ``job.json``.

submitit's own watcher asks ``sacct`` only, which a cluster without ``slurmdbd`` (such as the
test cluster of ``scripts/slurm``) does not have; ``squeue --states=all`` answers for every job
younger than the cluster's ``MinJobAge``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import submitit

from brainalign.study.job_status import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    UNKNOWN,
)

#: SLURM's transitional states, folded into the two a study needs to tell apart.
_SLURM_ACTIVE = {
    "COMPLETING": RUNNING,
    "CONFIGURING": RUNNING,
    "RESIZING": RUNNING,
    "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
    "STOPPED": RUNNING,
    "SUSPENDED": RUNNING,
    "REQUEUED": PENDING,
    "REQUEUE_FED": PENDING,
    "REQUEUE_HOLD": PENDING,
    "RESV_DEL_HOLD": PENDING,
}


def normalise_slurm_state(state: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; transitional states folded (see ``_SLURM_ACTIVE``)."""
    word = state.split()[0].upper() if state.strip() else UNKNOWN
    return _SLURM_ACTIVE.get(word, word)


def _run_query(command: list[str]) -> str | None:
    """stdout of a squeue/sacct call, or ``None`` when it fails (the caller falls back)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return ""  # none of the ids is known to the controller any more
        return None
    return result.stdout


def squeue_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """States of the jobs the controller still holds (array tasks as ``A_i``).

    Returns ``None`` when squeue itself fails (controller unreachable); jobs it does not list
    are absent from the dict.
    """
    if not job_ids:
        return {}
    output = _run_query(
        [
            "squeue",
            "--noheader",
            "--array",
            "--states=all",
            "--format=%i|%T",
            "--jobs",
            ",".join(job_ids),
        ]
    )
    if output is None:
        return None
    states = {}
    for line in output.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id in job_ids:
            states[job_id] = normalise_slurm_state(state)
    return states


def sacct_states(job_ids: Sequence[str]) -> dict[str, str]:
    """States from SLURM accounting; empty where sacct is absent or accounting is off."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    command = ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State"]
    output = _run_query([*command, "--jobs", ",".join(job_ids)])
    if not output:
        return {}
    states = {}
    for line in output.splitlines():
        raw_id, _, state = line.strip().partition("|")
        with contextlib.suppress(Exception):  # an id format we cannot read: skip that line
            for parts in submitit.slurm.slurm.read_job_id(raw_id):
                if len(parts) == 3:  # a pending range A_[i-j]
                    ids = [f"{parts[0]}_{k}" for k in range(int(parts[1]), int(parts[2]) + 1)]
                else:
                    ids = ["_".join(parts)]
                for job_id in ids:
                    if job_id in job_ids:
                        states[job_id] = normalise_slurm_state(state)
    return states


def combine_states(
    scheduler: str | None,
    status: Mapping[str, Any] | None,
    job_id: str,
    *,
    answered: bool = True,
) -> str:
    """A job's state from what SLURM says and what its ``job.json`` says.

    Parameters
    ----------
    scheduler : str or None
        The state from squeue/sacct; ``None`` where neither lists the job.
    status : mapping or None
        The run's ``job.json``.
    job_id : str
        The job asked about (a job.json written by another job id does not count).
    answered : bool
        False when squeue itself failed (controller unreachable): then nothing is concluded
        from the job's absence.

    Returns
    -------
    str
        SLURM's state while SLURM knows the job (PENDING after a requeue, even if job.json
        still says RUNNING or INTERRUPTED from the attempt before). Otherwise a final state of
        job.json stands; otherwise the job vanished (``UNKNOWN``), or, when SLURM did not
        answer, job.json's last non-final state.
    """
    if scheduler is not None:
        return scheduler
    own = dict(status) if status and status.get("job_id") == job_id else {}
    if own.get("state") in {COMPLETED, FAILED}:
        return own["state"]
    if answered:
        return UNKNOWN
    return own.get("state") if own.get("state") in {RUNNING, INTERRUPTED} else PENDING
