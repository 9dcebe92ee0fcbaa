"""Run brainalign command lines as jobs: in local worker processes, or on SLURM through submitit.

A study hands a launcher one :class:`JobSpec` per run (a ``brainalign`` command line and the
run's folder) and gets job ids back; each job writes ``run_dir/job.json`` (state, job id, host,
start, end, error) so that the study reads statuses without submitit::

    launcher = SlurmLauncher(study_dir / "submitit", Resources(gpus_per_node=8, nodes=2))
    ids = launcher.submit([JobSpec(name="size=S", run_dir=run_dir,
                                   argv=["fit", "--config", "S.yaml"],
                                   resume_argv=["fit", "--config", "S.yaml", "--ckpt_path", "last"],
                                   resume_marker="checkpoints/last.ckpt")])
    outcomes = launcher.wait(ids)          # {job_id: JobOutcome(state="COMPLETED", ...)}

The scheduling is submitit's (one job per run, submitted as one array) and the distributed
set-up is Lightning's: each SLURM task runs ``brainalign.cli.main(argv)`` in-process, and
Lightning's ``SLURMEnvironment`` reads ``SLURM_NTASKS``/``SLURM_PROCID`` to start DDP. Nothing here
sets up process groups or talks to the scheduler except through submitit, ``squeue`` and
``sacct`` (for states).

Who requeues
------------
Two mechanisms could requeue a job that SLURM is about to stop. submitit's: ``sbatch
--signal=USR2@signal_delay_s``; its handler in the job calls the job function's
``checkpoint()`` (a :class:`submitit.helpers.Checkpointable`), writes the returned submission
over the job's pickle, runs ``scontrol requeue`` and exits. Lightning's
``SLURMEnvironment(auto_requeue=True)``: on SIGUSR1 it saves ``hpc_ckpt_N.ckpt`` and runs
``scontrol requeue``. **submitit requeues here, Lightning's handler never fires**, because:

- submitit's handler covers every brainalign command (``fit``, ``probe``, ...), not only
  Lightning ones, and counts time-outs (``max_num_timeout``): a job that can never finish in
  its time limit stops being requeued instead of looping.
- the two cannot both act: SLURM is asked for USR2 only, and Lightning listens on SIGUSR1 (its
  default ``requeue_signal``), which nothing sends. A fit config that moves Lightning to
  SIGUSR2 still does not fight: Lightning installs no requeue handler on a signal that already
  has one (submitit's, installed before the job function starts).
- the requeued job runs the job function again, which sees ``resume_marker`` (e.g.
  ``checkpoints/last.ckpt``) and runs ``resume_argv`` (e.g. ``--ckpt_path last``): it resumes from
  ModelCheckpoint's last checkpoint, not an HPC checkpoint taken at the signal, so the steps
  since that checkpoint are redone (checkpoint every few minutes to bound them).

SIGTERM, which SLURM sends on ``scancel``, on ``scontrol requeue`` (what an operator or a
preemption does) and before a kill: submitit only logs it, Lightning stops the fit at the next
step with ``SIGTERMException``. The job then records ``INTERRUPTED`` and exits with 143; if the
job was requeued, SLURM starts it again and it resumes as above. The job's state as SLURM sees
it comes from ``squeue`` (jobs the controller still holds), then ``sacct`` (accounting, when
the cluster has it), then ``job.json``.

Local jobs run in a process pool (stdlib ``concurrent.futures``, forkserver context, one fresh
process per job where Python allows): one crashing run cannot take the study down with it,
and Lightning's global state does not leak from one run into the next.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import submitit

from brainalign.study.job_run import (
    BrainalignJob,
    JobFailedError,
    JobSpec,
    exception_line,
    exit_message,
)
from brainalign.study.job_status import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINAL_STATES,
    INTERRUPTED,
    JOB_STATUS_FILE,
    PENDING,
    RUNNING,
    SLURM_FINAL_STATES,
    UNKNOWN,
    now_utc,
    parse_time,
    read_job_status,
    update_job_status,
)
from brainalign.study.slurm_states import combine_states, sacct_states, squeue_states

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "FINAL_STATES",
    "INTERRUPTED",
    "JOB_STATUS_FILE",
    "PENDING",
    "RUNNING",
    "SLURM_FINAL_STATES",
    "UNKNOWN",
    "BrainalignJob",
    "JobFailedError",
    "JobOutcome",
    "JobSpec",
    "Launcher",
    "LocalLauncher",
    "Resources",
    "SlurmLauncher",
    "combine_states",
    "exit_message",
    "read_job_status",
    "slurm_parameters",
    "update_job_status",
]


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one job asks of the cluster (the ``launcher`` block of a study file).

    Parameters
    ----------
    gpus_per_node : int
        GPUs per node; one SLURM task (one Lightning process) per GPU, one task without GPUs.
    nodes : int
        Nodes per job (Lightning's ``num_nodes``).
    cpus_per_task : int
        CPU cores per task; also the job's ``OMP_NUM_THREADS``.
    mem_gb : float or None
        Memory per node; ``None`` leaves the partition's default.
    timeout_min : int
        Time limit of one job (one attempt; a requeued job gets it again).
    partition : str or None
        SLURM partition; ``None`` for the cluster's default.
    array_parallelism : int
        How many jobs of one submission may run at once.
    additional : dict of str to str
        Extra ``sbatch`` options without the dashes, e.g. ``{"account": "brain", "qos": "high"}``.
    """

    gpus_per_node: int = 0
    nodes: int = 1
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    partition: str | None = None
    array_parallelism: int = 16
    additional: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        minimum = {"gpus_per_node": 0, "nodes": 1, "cpus_per_task": 1, "timeout_min": 1}
        minimum["array_parallelism"] = 1
        for name, lowest in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(
                    f"launcher resources: {name} must be an integer >= {lowest}, got {value!r}"
                )
        if self.mem_gb is not None and not (
            isinstance(self.mem_gb, int | float) and self.mem_gb > 0
        ):
            raise ValueError(
                f"launcher resources: mem_gb must be a number > 0 or null, got {self.mem_gb!r}"
            )
        if self.partition is not None and not (isinstance(self.partition, str) and self.partition):
            raise ValueError(
                "launcher resources: partition must be a non-empty string or null, "
                f"got {self.partition!r}"
            )
        for key, value in self.additional.items():
            if not isinstance(key, str) or not key or key.startswith("-"):
                raise ValueError(
                    f"launcher resources: additional option {key!r} must be an sbatch option "
                    "name without dashes, e.g. 'account'"
                )
            if not isinstance(value, str):
                raise ValueError(
                    f"launcher resources: additional option {key!r} must be a string, got {value!r}"
                )

    @property
    def tasks_per_node(self) -> int:
        """One task (one Lightning process) per GPU, one task on a CPU-only node."""
        return max(self.gpus_per_node, 1)


@dataclass(frozen=True, kw_only=True)
class JobOutcome:
    """How a job ended.

    Attributes
    ----------
    state : str
        One of :data:`FINAL_STATES` (``COMPLETED``, ``FAILED``, ``CANCELLED``, ``TIMEOUT``, ...).
    error : str or None
        For a failed job, the first line of its error (the CLI's one-line message, or the
        exception's type and first line); for a job SLURM stopped, what SLURM said and where
        the log is.
    start, end : datetime or None
        When the last attempt started and ended (UTC), from ``job.json``.
    """

    state: str
    error: str | None = None
    start: datetime | None = None
    end: datetime | None = None


class Launcher(Protocol):
    """What the study layer calls: submit runs, poll their states, wait for them."""

    def submit(self, jobs: Sequence[JobSpec]) -> list[str]: ...

    def states(self, job_ids: Sequence[str]) -> dict[str, str]: ...

    def wait(
        self, job_ids: Sequence[str], *, poll_s: float = 2.0, timeout_s: float | None = None
    ) -> dict[str, JobOutcome]: ...


# ----------------------------------------------------------------------------- shared checks


def _check_jobs(jobs: Sequence[JobSpec]) -> None:
    """Refuse, before anything runs, a batch whose runs would write over each other."""
    names: set[str] = set()
    folders: set[Path] = set()
    for job in jobs:
        if not isinstance(job, JobSpec):
            raise TypeError(f"launchers run JobSpec objects, got {type(job).__name__}")
        if not job.run_dir.is_dir():
            raise FileNotFoundError(f"job {job.name!r}: run folder {job.run_dir} does not exist")
        folder = job.run_dir.resolve()
        if job.name in names or folder in folders:
            raise ValueError(
                f"job {job.name!r} ({job.run_dir}): two jobs of one submission share a name or "
                "a run folder"
            )
        names.add(job.name)
        folders.add(folder)


def _outcome(state: str, status: Mapping[str, Any] | None, fallback_error: str | None = None):
    """A :class:`JobOutcome` from a final state and the job's ``job.json``."""
    status = status or {}
    error = status.get("error") if state == status.get("state") else None
    if state != COMPLETED and not error:
        error = fallback_error
    return JobOutcome(
        state=state,
        error=error,
        start=parse_time(status.get("start")),
        end=parse_time(status.get("end")),
    )


def _wait_by_polling(
    states: Callable[[Sequence[str]], dict[str, str]],
    job_ids: Sequence[str],
    *,
    poll_s: float,
    timeout_s: float | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, str]:
    """Poll ``states`` until every job is in :data:`FINAL_STATES`; their final states."""
    deadline = None if timeout_s is None else clock() + timeout_s
    final: dict[str, str] = {}
    while True:
        waiting = [job_id for job_id in job_ids if job_id not in final]
        for job_id, state in states(waiting).items():
            if state in FINAL_STATES:
                final[job_id] = state
        if len(final) == len(set(job_ids)):
            return final
        if deadline is not None and clock() >= deadline:
            late = ", ".join(job_id for job_id in job_ids if job_id not in final)
            raise TimeoutError(f"jobs not finished after {timeout_s:g} s: {late}")
        sleep(poll_s)


# ----------------------------------------------------------------------------- local


#: Imported once by the fork server, so a job's fresh process starts with them loaded.
_PRELOAD = ["brainalign.study.job_run", "torch", "lightning.pytorch", "brainalign.cli"]


def _job_context() -> multiprocessing.context.BaseContext:
    """Fresh processes forked from a server that has imported torch and Lightning once.

    A spawned process imports them again for every job (1 to 2 s each on a 2-core machine,
    ``benchmarks/study_overhead.py``); the fork server is single-threaded when it forks, so its
    children are as clean as spawned ones. Falls back to spawn where there is no fork server.
    """
    try:
        context = multiprocessing.get_context("forkserver")
    except ValueError:  # platforms without fork
        return multiprocessing.get_context("spawn")
    context.set_forkserver_preload(_PRELOAD)
    return context


def _init_local_worker(threads: int) -> None:
    """Pin the numeric libraries' threads in a fresh worker (its share of the cores).

    Torch may already be imported (by the fork server): its thread count is set directly, since
    ``OMP_NUM_THREADS`` is only read at import. An ``OMP_NUM_THREADS`` the user set wins.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@contextlib.contextmanager
def _output_to(folder: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (file descriptors 1 and 2) to ``folder/*.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(folder / "stdout.log", "a") as out, open(folder / "stderr.log", "a") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def _run_local_job(spec: JobSpec, job_id: str) -> None:
    """What a local worker process runs for one job (logs in ``run_dir/local/``)."""
    with _output_to(spec.run_dir / "local"):
        BrainalignJob(spec).run(job_id=job_id)


class LocalLauncher:
    """Run jobs on this machine, ``max_workers`` at a time, each in its own worker process.

    Job ids are ``local-<pid>-<n>`` (unique across study invocations). Jobs are children of
    this process: they end with it (a study run again resumes them from their marker). Call
    :meth:`close` (or use the launcher as a context manager) to stop the pool.

    Parameters
    ----------
    max_workers : int
        Jobs running at once. Each worker pins ``OMP_NUM_THREADS`` to its share of the cores
        unless the environment sets it.
    """

    def __init__(self, max_workers: int = 1) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(
                f"local launcher: max_workers must be an integer >= 1, got {max_workers!r}"
            )
        self.max_workers = max_workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._jobs: dict[str, tuple[JobSpec, concurrent.futures.Future]] = {}
        self._numbers = itertools.count(1)

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.max_workers)
            fresh_process = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.max_workers,
                mp_context=_job_context(),
                initializer=_init_local_worker,
                initargs=(threads,),
                **fresh_process,
            )
        return self._pool

    def submit(self, jobs: Sequence[JobSpec]) -> list[str]:
        """Queue the jobs; they start as workers free up. Returns their ids."""
        _check_jobs(jobs)
        job_ids = []
        for spec in jobs:
            job_id = f"local-{os.getpid()}-{next(self._numbers)}"
            update_job_status(
                spec.run_dir, name=spec.name, state=PENDING, job_id=job_id, submitted=now_utc()
            )
            try:
                future = self._executor().submit(_run_local_job, spec, job_id)
            except concurrent.futures.process.BrokenProcessPool:
                self._pool = None  # a worker died earlier: start a new pool
                future = self._executor().submit(_run_local_job, spec, job_id)
            self._jobs[job_id] = (spec, future)
            job_ids.append(job_id)
        return job_ids

    def states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """``PENDING``/``RUNNING`` from job.json while a job runs, its final state after."""
        states = {}
        for job_id in job_ids:
            if job_id not in self._jobs:
                states[job_id] = UNKNOWN  # another process's job: gone with that process
                continue
            spec, future = self._jobs[job_id]
            status = read_job_status(spec.run_dir) or {}
            if not future.done():
                states[job_id] = status.get("state", PENDING)
            elif future.exception() is None:
                states[job_id] = COMPLETED
            else:
                states[job_id] = self._record_crash(spec, job_id, future.exception(), status)
        return states

    @staticmethod
    def _record_crash(spec: JobSpec, job_id: str, error: BaseException, status: Mapping) -> str:
        """The final state of a local job that raised: FAILED as the job recorded it, CANCELLED
        if a signal stopped it (a local job is not requeued), FAILED with the error if its
        worker died before it could say anything."""
        own = status.get("job_id") == job_id
        if own and status.get("state") in FINAL_STATES:
            return status["state"]
        if own and status.get("state") == INTERRUPTED:
            update_job_status(spec.run_dir, state=CANCELLED)
            return CANCELLED
        update_job_status(spec.run_dir, state=FAILED, end=now_utc(), error=exception_line(error))
        return FAILED

    def wait(
        self, job_ids: Sequence[str], *, poll_s: float = 2.0, timeout_s: float | None = None
    ) -> dict[str, JobOutcome]:
        """Block until the jobs end (``poll_s`` is unused: the pool says when).

        Raises
        ------
        TimeoutError
            When ``timeout_s`` passes first (the jobs keep running).
        """
        unknown = [job_id for job_id in job_ids if job_id not in self._jobs]
        if unknown:
            raise ValueError(f"local launcher: unknown job ids {unknown} (not submitted here)")
        futures = [self._jobs[job_id][1] for job_id in job_ids]
        _, not_done = concurrent.futures.wait(futures, timeout=timeout_s)
        if not_done:
            late = [job_id for job_id in job_ids if not self._jobs[job_id][1].done()]
            raise TimeoutError(f"jobs not finished after {timeout_s:g} s: {', '.join(late)}")
        states = self.states(job_ids)
        return {
            job_id: _outcome(states[job_id], read_job_status(self._jobs[job_id][0].run_dir))
            for job_id in job_ids
        }

    def close(self) -> None:
        """Wait for running jobs and stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> LocalLauncher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- SLURM


def slurm_parameters(resources: Resources, *, signal_delay_s: int = 90) -> dict[str, Any]:
    """submitit ``SlurmExecutor.update_parameters`` arguments for ``resources``.

    One task per GPU (``--ntasks-per-node``, ``--gres=gpu:N``), ``--requeue`` so that
    ``scontrol requeue`` is allowed whatever the cluster's default, and ``OMP_NUM_THREADS`` set
    to the task's cores. submitit adds ``--signal=USR2@signal_delay_s`` itself.
    """
    parameters: dict[str, Any] = {
        "job_name": "brainalign",
        "time": resources.timeout_min,
        "nodes": resources.nodes,
        "ntasks_per_node": resources.tasks_per_node,
        "cpus_per_task": resources.cpus_per_task,
        "array_parallelism": resources.array_parallelism,
        "signal_delay_s": signal_delay_s,
        "setup": [f"export OMP_NUM_THREADS={resources.cpus_per_task}"],
        "additional_parameters": {"requeue": True, **resources.additional},
    }
    if resources.gpus_per_node:
        parameters["gres"] = f"gpu:{resources.gpus_per_node}"
    if resources.mem_gb is not None:
        parameters["mem"] = f"{math.ceil(resources.mem_gb * 1024)}MB"  # a bare number is MB
    if resources.partition is not None:
        parameters["partition"] = resources.partition
    return parameters


class SlurmLauncher:
    """Submit jobs to SLURM with submitit: one array per :meth:`submit`, one task per GPU.

    Parameters
    ----------
    folder : Path
        submitit's folder (on a file system the nodes share): one sub-folder per job with the
        sbatch script, the pickled job function and the logs; ``run_dir/slurm/<job_id>``
        links to it. ``jobs.jsonl`` there maps job ids to run folders across invocations.
    resources : Resources
        What each job asks for.
    signal_delay_s : int
        How long before the time limit SLURM sends USR2 (submitit then requeues).
    max_num_timeout : int
        How many times a job that reaches its time limit is requeued.

    Raises
    ------
    FileNotFoundError
        When ``sbatch`` or ``srun`` is not on PATH (checked before anything is written).
    """

    def __init__(
        self,
        folder: Path,
        resources: Resources,
        *,
        signal_delay_s: int = 90,
        max_num_timeout: int = 3,
    ) -> None:
        missing = [program for program in ("sbatch", "srun") if shutil.which(program) is None]
        if missing:
            raise FileNotFoundError(
                f"the slurm launcher needs {' and '.join(missing)} on PATH and "
                f"{'they are' if len(missing) > 1 else 'it is'} not there: run the study on a "
                "SLURM login node, or use the local launcher"
            )
        if not isinstance(resources, Resources):
            raise TypeError(f"resources must be a Resources, got {type(resources).__name__}")
        self.folder = Path(folder).absolute()
        self.resources = resources
        self._executor = submitit.SlurmExecutor(
            folder=self.folder / "%j", max_num_timeout=max_num_timeout
        )
        self._executor.update_parameters(
            **slurm_parameters(resources, signal_delay_s=signal_delay_s)
        )
        self._run_dirs: dict[str, Path] = {}

    @property
    def _index(self) -> Path:
        return self.folder / "jobs.jsonl"

    def submit(self, jobs: Sequence[JobSpec]) -> list[str]:
        """Submit the jobs as one SLURM array (throttled to ``array_parallelism``)."""
        _check_jobs(jobs)
        if not jobs:
            return []
        for spec in jobs:  # before sbatch: a job that starts at once must not be overwritten
            update_job_status(
                spec.run_dir, name=spec.name, state=PENDING, job_id=None, submitted=now_utc()
            )
        try:
            with self._executor.batch():
                submitted = [self._executor.submit(BrainalignJob(spec)) for spec in jobs]
        except Exception as error:
            for spec in jobs:
                update_job_status(
                    spec.run_dir, state=FAILED, error=f"submission failed: {exception_line(error)}"
                )
            raise
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._index.open("a") as index:
            for spec, job in zip(jobs, submitted):
                update_job_status(
                    spec.run_dir, only_if={"state": PENDING, "job_id": None}, job_id=job.job_id
                )
                self._link_logs(spec.run_dir, job)
                self._run_dirs[job.job_id] = spec.run_dir
                index.write(json.dumps({"job_id": job.job_id, "run_dir": str(spec.run_dir)}) + "\n")
        return [job.job_id for job in submitted]

    @staticmethod
    def _link_logs(run_dir: Path, job: submitit.Job) -> None:
        """``run_dir/slurm/<job_id>`` -> submitit's folder of the job (logs, sbatch script)."""
        link = run_dir / "slurm" / job.job_id
        link.parent.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(job.paths.folder, target_is_directory=True)

    def _run_dir(self, job_id: str) -> Path | None:
        if job_id not in self._run_dirs and self._index.is_file():
            for line in self._index.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    entry = json.loads(line)
                    self._run_dirs.setdefault(entry["job_id"], Path(entry["run_dir"]))
        return self._run_dirs.get(job_id)

    def _status(self, job_id: str) -> dict[str, Any] | None:
        run_dir = self._run_dir(job_id)
        return None if run_dir is None else read_job_status(run_dir)

    def states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Each job's state: squeue, then sacct, then job.json (see :func:`combine_states`)."""
        job_ids = list(job_ids)
        queue = squeue_states(job_ids)
        known = dict(queue or {})
        if queue is not None:
            known.update(sacct_states([job_id for job_id in job_ids if job_id not in queue]))
        return {
            job_id: combine_states(
                known.get(job_id), self._status(job_id), job_id, answered=queue is not None
            )
            for job_id in job_ids
        }

    def wait(
        self, job_ids: Sequence[str], *, poll_s: float = 2.0, timeout_s: float | None = None
    ) -> dict[str, JobOutcome]:
        """Poll until every job is final; a requeued job is waited for until it ends.

        Raises
        ------
        TimeoutError
            When ``timeout_s`` passes first (the jobs stay queued).
        """
        final = _wait_by_polling(
            self.states,
            job_ids,
            poll_s=poll_s,
            timeout_s=timeout_s,
            clock=time.monotonic,
            sleep=time.sleep,
        )
        outcomes = {}
        for job_id in job_ids:
            paths = submitit.core.utils.JobPaths(self.folder / "%j", job_id=job_id, task_id=0)
            fallback = f"SLURM state {final[job_id]}; log: {paths.stderr}"
            outcomes[job_id] = _outcome(final[job_id], self._status(job_id), fallback)
        return outcomes
