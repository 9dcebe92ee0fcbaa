"""``brainalign study run``: make every run of a study, once, and bring it to completion.

Idempotent: run it again after a crash, a kill or a failure and it

- skips runs that completed with the same definition (config hash),
- leaves runs alone that are still queued or running (a live SLURM job, a live local process),
- resubmits the others: interrupted runs resume from ``checkpoints/last.ckpt``, failed ones
  start again with their last error kept in ``job.json`` (``last_error``) and the table,
- refuses a run folder made from another definition of its cell (the study file or a config
  it names changed) instead of mixing the two.

Everything is checked before any job starts: the study file (:func:`load_study`), every
training cell's fit configs through LightningCLI's own parser, every probe cell's probe block,
every language cell's brain specs (without reading MEG), and the launcher (``sbatch`` present
for SLURM). Training cells probed after training get a second job each (``brainalign study
probe-exports RUN``) once their fit has completed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from brainalign.study.config import StudyConfig
from brainalign.study.grid import expand_cells
from brainalign.study.job_run import JobSpec
from brainalign.study.job_status import (
    COMPLETED,
    PENDING,
    RUNNING,
    read_job_status,
    update_job_status,
)
from brainalign.study.runs import (
    CELL_FILE,
    INPUTS,
    RunPlan,
    check_language_inputs,
    plan_run,
    probe_exports_job,
)
from brainalign.study.table import build_table, write_table
from brainalign.utils.atomic import atomic_path
from brainalign.utils.processes import process_alive

__all__ = ["STUDY_FILE", "check_fit_configs", "make_launcher", "prepare_runs", "run_study"]

#: The study definition as the runs were made from it (read by the report).
STUDY_FILE = "study.json"


def prepare_runs(study: StudyConfig, study_dir: Path) -> list[RunPlan]:
    """Plan every cell, check the plans against existing run folders, write the inputs."""
    plans = [plan_run(study, cell, study_dir) for cell in expand_cells(study)]
    for plan in plans:
        recorded = plan.run_dir / INPUTS / CELL_FILE
        if recorded.is_file():
            previous = json.loads(recorded.read_text()).get("config_hash")
            if previous != plan.config_hash:
                raise ValueError(
                    f"{plan.run_dir} was made from another definition of the cell "
                    f"{plan.cell.name!r} (the study file or a config it names changed since); "
                    "use another study folder (directory:) or remove that run folder"
                )
    check_fit_configs([plan for plan in plans if plan.cell.kind == "fit"])
    check_language_inputs(plans)
    for plan in plans:
        inputs = plan.run_dir / INPUTS
        inputs.mkdir(parents=True, exist_ok=True)
        for name, content in plan.inputs.items():
            with atomic_path(inputs / name) as temporary:
                temporary.write_text(content)
        description = {
            "run": plan.cell.name,
            "kind": plan.cell.kind,
            "levels": plan.cell.levels,
            "config_hash": plan.config_hash,
            "argv": plan.job.argv,
        }
        with atomic_path(inputs / CELL_FILE) as temporary:
            temporary.write_text(json.dumps(description, indent=2))
    return plans


def check_fit_configs(plans: Sequence[RunPlan]) -> None:
    """Parse every training cell's configs with LightningCLI (nothing is trained or written).

    The study's own inputs are not written yet: they are parsed from a temporary folder.
    """
    if not plans:
        return
    import tempfile

    from brainalign.cli import run_lightning  # LightningCLI's own parser of fit configs

    for plan in plans:
        with tempfile.TemporaryDirectory(prefix=".brainalign-check-") as folder:
            argv = list(plan.job.argv)
            inputs = str(plan.run_dir / INPUTS)
            for name, content in plan.inputs.items():
                (Path(folder) / name).write_text(content)
            argv = [word.replace(inputs, folder) for word in argv]
            output = io.StringIO()
            try:
                with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                    run_lightning([*argv, "--print_config"])
            except SystemExit as exit_:
                if exit_.code not in (None, 0):
                    lines = [line for line in output.getvalue().splitlines() if line.strip()]
                    reason = lines[-1].strip() if lines else f"exit status {exit_.code}"
                    raise ValueError(
                        f"cell {plan.cell.name!r}: its fit configs do not parse: {reason}"
                    ) from None


def make_launcher(study: StudyConfig, study_dir: Path) -> Any:
    """The study's launcher (a SLURM launcher needs ``sbatch``: checked here, before any job)."""
    from brainalign.study.launchers import LocalLauncher, SlurmLauncher

    if study.launcher.kind == "local":
        return LocalLauncher(max_workers=study.launcher.max_workers)
    resources = study.launcher.slurm
    return SlurmLauncher(study_dir.absolute() / "submitit", resources)


def _alive(status: dict[str, Any], launcher: Any) -> bool:
    """Whether a run's last job is still queued or running (so it must not be submitted)."""
    if status.get("state") not in (PENDING, RUNNING):
        return False
    job_id = str(status.get("job_id") or "")
    if job_id.startswith("local-"):
        if status.get("host") not in (None, socket.gethostname()):
            return True  # another machine's local job: not ours to judge
        pid = status.get("pid")
        if pid is None:  # queued in a study process: alive only if that process is
            pid = int(job_id.split("-")[1]) if job_id.count("-") >= 2 else None
        return pid is not None and process_alive(int(pid))
    if not job_id:
        return False
    state = launcher.states([job_id]).get(job_id)
    return state in (PENDING, RUNNING)


def _due(run_dir: Path, launcher: Any) -> bool:
    """Whether a job for this folder has to be submitted now."""
    status = read_job_status(run_dir)
    if status is None:
        return True
    if status.get("state") == COMPLETED:
        return False
    return not _alive(status, launcher)


def _submit(launcher: Any, jobs: list[JobSpec]) -> list[str]:
    for job in jobs:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        status = read_job_status(job.run_dir) or {}
        attempts = int(status.get("attempts", 0) or 0) + 1
        fields: dict[str, Any] = {"attempts": attempts}
        if status.get("error"):
            fields["last_error"] = status["error"]
        update_job_status(job.run_dir, **fields)
    return launcher.submit(jobs) if jobs else []


def run_study(
    study: StudyConfig,
    *,
    study_dir: Path | None = None,
    wait: bool = True,
    launcher: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Make, submit and (with ``wait``) finish every run of ``study``; returns the table.

    Parameters
    ----------
    study : StudyConfig
    study_dir : Path, optional
        Default ``study.folder``.
    wait : bool
        Wait for the jobs (and then submit the after-training probes). Without it, the jobs
        are submitted and the call returns: run it again later for the probes.
    launcher : Launcher, optional
        Default :func:`make_launcher`.
    progress : bool
        Print one line per submission round.
    """
    study_dir = (study_dir or study.folder).absolute()
    launcher = launcher or make_launcher(study, study_dir)  # sbatch checked before any write
    study_dir.mkdir(parents=True, exist_ok=True)
    plans = prepare_runs(study, study_dir)
    with atomic_path(study_dir / STUDY_FILE) as temporary:  # what the report reads back
        temporary.write_text(json.dumps(dataclasses.asdict(study), indent=2, default=str))
    factors = list(study.factors)
    try:
        due = [plan.job for plan in plans if _due(plan.run_dir, launcher)]
        running = [plan for plan in plans if _alive(read_job_status(plan.run_dir) or {}, launcher)]
        if progress:
            print(
                f"[study {study.name}] {len(plans)} runs, {len(due)} to submit, "
                f"{len(running)} still queued or running ({study_dir})"
            )
        ids = _submit_fits(study, plans, launcher, due)
        write_table(build_table(plans, factors), study_dir)
        if wait:
            if ids:
                launcher.wait(ids)
            _wait_for(running, launcher)
            # A job that an earlier invocation left and that ended without completing (its
            # process was still exiting when we looked, or it failed) is submitted once now.
            revived = [plan.job for plan in running if _due(plan.run_dir, launcher)]
            ids = _submit_fits(study, plans, launcher, revived)
            if ids:
                launcher.wait(ids)
        if study.probing.probes_exports and wait:
            jobs = _export_probes(plans, launcher)
            if progress and jobs:
                print(f"[study] probing the exports of {len(jobs)} runs")
            ids = _submit(launcher, jobs)
            if ids:
                launcher.wait(ids)
    finally:
        close = getattr(launcher, "close", None)
        if callable(close):
            close()
    table = build_table(plans, factors)
    write_table(table, study_dir)
    return table


def _submit_fits(
    study: StudyConfig, plans: Sequence[RunPlan], launcher: Any, due: list[JobSpec]
) -> list[str]:
    """Submit the run jobs ``due`` (with their export probes when those run beside training)."""
    if not due:
        return []
    if study.probing.beside_training:  # export probes start with their fits
        due = due + _export_probes(plans, launcher, fits=[job.name for job in due], follow=True)
    return _submit(launcher, due)


def _wait_for(plans: Sequence[RunPlan], launcher: Any, poll_s: float = 2.0) -> None:
    """Wait for runs whose jobs an earlier ``study run`` submitted (queued or running)."""
    import time

    while any(_alive(read_job_status(plan.run_dir) or {}, launcher) for plan in plans):
        time.sleep(poll_s)


def _export_probes(
    plans: Sequence[RunPlan],
    launcher: Any,
    *,
    fits: Sequence[str] | None = None,
    follow: bool = False,
) -> list[JobSpec]:
    """Export-probe jobs due now: for completed fits (or, beside training, for ``fits``)."""
    jobs = []
    for plan in plans:
        if plan.cell.kind != "fit":
            continue
        probe = probe_exports_job(plan, follow=follow)
        if fits is not None:
            ready = plan.cell.name in fits
        else:
            ready = (read_job_status(plan.run_dir) or {}).get("state") == COMPLETED
        if ready and _due(probe.run_dir, launcher):
            jobs.append(probe)
    return jobs
