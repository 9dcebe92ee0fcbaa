"""What runs inside a job: a brainalign command line, in-process, recorded in job.json.

:class:`BrainalignJob` is submitit's job function on SLURM (a ``Checkpointable``, so that
submitit's requeue resubmits it) and what a local worker process runs. The command is
``brainalign.cli.main(argv)``: Lightning's SLURM support sees the task's SLURM variables as it
would under ``srun brainalign fit``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import submitit

from brainalign.study.job_status import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    now_utc,
    update_job_status,
)

_STDERR_TAIL_CHARS = 16_384


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One run to execute: a ``brainalign`` command line and the folder it belongs to.

    Parameters
    ----------
    name : str
        Run name, e.g. ``"size=S__data=objects"``.
    run_dir : Path
        The run's folder (must exist at submission); ``job.json`` and the logs go there.
    argv : list of str
        The command line without the program name, e.g. ``["fit", "--config", "X.yaml"]``.
    resume_argv : list of str or None
        Command line used instead when ``run_dir / resume_marker`` exists when the job starts
        (a requeued or resubmitted run).
    resume_marker : str or None
        Path relative to ``run_dir``, e.g. ``"checkpoints/last.ckpt"``.
    """

    name: str
    run_dir: Path
    argv: list[str]
    resume_argv: list[str] | None = None
    resume_marker: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"job name must be a non-empty string, got {self.name!r}")
        for label in ("argv", "resume_argv"):
            value = getattr(self, label)
            if value is None and label == "resume_argv":
                continue
            if not isinstance(value, list | tuple) or not value:
                raise ValueError(f"job {self.name!r}: {label} must be a non-empty list of strings")
            if not all(isinstance(word, str) for word in value):
                raise ValueError(f"job {self.name!r}: {label} holds a non-string: {value!r}")
        if (self.resume_argv is None) != (self.resume_marker is None):
            raise ValueError(
                f"job {self.name!r}: resume_argv and resume_marker go together (give both or "
                "neither)"
            )
        if self.resume_marker is not None:
            marker = Path(self.resume_marker)
            if marker.is_absolute() or ".." in marker.parts or not marker.parts:
                raise ValueError(
                    f"job {self.name!r}: resume_marker must be a path inside run_dir "
                    f"(relative, no '..'), got {self.resume_marker!r}"
                )
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    def command(self) -> tuple[list[str], bool]:
        """The command line to run now, and whether it is the resuming one."""
        if self.resume_marker is not None and (self.run_dir / self.resume_marker).exists():
            return list(self.resume_argv or ()), True
        return list(self.argv), False


class JobFailedError(RuntimeError):
    """A brainalign command exited with a non-zero status (its message is the CLI's error)."""


class _StderrTail:
    """``sys.stderr`` stand-in that passes everything through and keeps the last characters.

    The CLI reports bad input with ``parser.exit(2, message)``: the message goes to stderr, the
    ``SystemExit`` only carries the status. Keeping stderr's tail is how the job learns it.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tail = ""

    def write(self, text: str) -> int:
        self._tail = (self._tail + text)[-_STDERR_TAIL_CHARS:]
        return self._stream.write(text)

    @property
    def text(self) -> str:
        return self._tail

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self._stream, name)


def exit_message(code: object, stderr_tail: str) -> str:
    """One line saying why a command exited with status ``code``, from what it printed.

    Parameters
    ----------
    code : object
        ``SystemExit.code``: an int, or a message string (``sys.exit("...")``).
    stderr_tail : str
        The end of what the command wrote to stderr.

    Returns
    -------
    str
        The last stderr line holding ``error:`` (argparse, jsonargparse and the brainalign CLI
        all end with one), else the last non-empty line, else ``exit status N``.
    """
    if isinstance(code, str) and code.strip():
        return code.strip().splitlines()[0]
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error:" in line:
            return line
    return lines[-1] if lines else f"exit status {code}"


def exception_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


#: Exit statuses of ``brainalign fit`` stopped by a signal after saving ``last.ckpt``
#: (128 + signal number, :mod:`brainalign.commands.fit`).
_SIGNAL_EXITS = {128 + signal.SIGTERM, 128 + signal.SIGUSR1}


def _is_sigterm_exit(error: BaseException) -> bool:
    """Whether the command stopped because the process received SIGTERM (or SIGUSR1).

    ``brainalign fit`` saves ``last.ckpt`` and exits with 128 + the signal; Lightning alone
    raises its ``SIGTERMException``. Only a command that imported Lightning can raise the
    latter: other commands (``simulate``, ``probe``) do not pay for importing Lightning here.
    """
    if isinstance(error, SystemExit) and error.code in _SIGNAL_EXITS:
        return True
    exceptions = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return exceptions is not None and isinstance(error, exceptions.SIGTERMException)


class BrainalignJob(submitit.helpers.Checkpointable):
    """The function a job runs: ``brainalign.cli.main(argv)`` in-process, recorded in job.json.

    On SLURM it is submitit's job function (``__call__``); a requeue makes submitit call
    :meth:`checkpoint`, whose fresh copy is what the requeued job runs, and which chooses
    ``resume_argv`` since the marker then exists. Only global rank 0 writes ``job.json``.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self._interrupted = False

    def __call__(self) -> None:
        environment = submitit.JobEnvironment()
        self.run(
            job_id=environment.job_id,
            rank=environment.global_rank,
            restarts=int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        )

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit's signal handler before it requeues: resubmit a fresh copy."""
        self._interrupted = True
        return submitit.helpers.DelayedSubmission(type(self)(self.spec))

    def run(self, *, job_id: str, rank: int = 0, restarts: int = 0) -> None:
        """Run the command, record its states; raise :class:`JobFailedError` if it fails."""
        from brainalign import cli

        argv, resumed = self.spec.command()
        self._record(
            rank,
            state=RUNNING,
            name=self.spec.name,
            job_id=job_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            start=now_utc(),
            end=None,
            error=None,
            argv=argv,
            resumed=resumed,
            restarts=restarts,
        )
        stderr = _StderrTail(sys.stderr)
        try:
            with contextlib.redirect_stderr(stderr):  # type: ignore[type-var]
                cli.main(argv)
        except BaseException as error:
            self._end(rank, error, stderr.text)
        else:
            self._record(rank, state=COMPLETED, end=now_utc())

    def _end(self, rank: int, error: BaseException, stderr_text: str) -> None:
        """Record how the command stopped, then raise what the caller should see.

        Stopped by a signal: submitit's requeue (``checkpoint`` ran; what follows, even an
        error of its ``scontrol requeue``, which the requeue's own SIGTERM can kill), Lightning's
        ``SIGTERMException``, or Ctrl-C: INTERRUPTED, and ``SystemExit(143)``, which submitit
        does not record as the job's result. Exit status 0: COMPLETED. Another exit status:
        FAILED with the CLI's error line, as :class:`JobFailedError`. An exception: FAILED, and
        the exception itself (its traceback goes to the log).
        """
        stopped = isinstance(error, KeyboardInterrupt) or _is_sigterm_exit(error)
        if self._interrupted or stopped:
            self._record(rank, state=INTERRUPTED, end=now_utc())
            raise SystemExit(128 + signal.SIGTERM) from None
        if isinstance(error, SystemExit):
            if error.code in (None, 0):
                self._record(rank, state=COMPLETED, end=now_utc())
                return
            message = exit_message(error.code, stderr_text)
            self._record(rank, state=FAILED, end=now_utc(), error=message)
            raise JobFailedError(message) from None
        self._record(rank, state=FAILED, end=now_utc(), error=exception_line(error))
        raise error

    def _record(self, rank: int, **fields) -> None:
        if rank == 0:
            update_job_status(self.spec.run_dir, **fields)
