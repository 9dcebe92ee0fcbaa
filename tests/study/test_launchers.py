"""Launchers: job specs and job.json on their own, then real jobs on a real one-node SLURM
cluster (tests/study/conftest.py) and in local worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from brainalign.study import launchers, slurm_states
from brainalign.study.launchers import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    UNKNOWN,
    BrainalignJob,
    JobFailedError,
    JobSpec,
    LocalLauncher,
    Resources,
    SlurmLauncher,
    combine_states,
    exit_message,
    read_job_status,
    update_job_status,
)

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "experiments" / "smoke.yaml"


def simulate_spec(run_dir: Path, name: str, *, n_stimuli: int = 24) -> JobSpec:
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = ["simulate", "--out", str(run_dir / "sim"), "--n-stimuli", str(n_stimuli)]
    return JobSpec(name=name, run_dir=run_dir, argv=[*argv, "--image-size", "16"])


def failing_spec(run_dir: Path) -> JobSpec:
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = ["simulate", "--out", str(run_dir / "sim"), "--n-stimuli", "0"]
    return JobSpec(name="fails", run_dir=run_dir, argv=argv)


ZERO_STIMULI = "n must be a positive integer number of images, got 0"


def job_logs(run_dir: Path) -> str:
    """The SLURM/local logs of a run (for assertion messages)."""
    texts = [
        f"--- {path}\n{path.read_text()[-3000:]}"
        for pattern in ("slurm/*/*.err", "slurm/*/*.out", "local/*.log")
        for path in sorted(run_dir.glob(pattern))
    ]
    return "\n".join(texts) or f"no logs under {run_dir}"


# ----------------------------------------------------------------------------- specs


def test_job_spec_runs_resume_argv_once_the_marker_exists(tmp_path):
    spec = JobSpec(
        name="a",
        run_dir=tmp_path,
        argv=["fit", "--config", "a.yaml"],
        resume_argv=["fit", "--config", "a.yaml", "--ckpt_path", "last"],
        resume_marker="checkpoints/last.ckpt",
    )
    assert spec.command() == (["fit", "--config", "a.yaml"], False)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert spec.command() == (["fit", "--config", "a.yaml", "--ckpt_path", "last"], True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"argv": []}, "argv must be a non-empty list"),
        ({"argv": ["fit", 3]}, "non-string"),
        ({"resume_argv": ["fit"]}, "resume_argv and resume_marker go together"),
        ({"resume_argv": ["fit"], "resume_marker": "../last.ckpt"}, "inside run_dir"),
        ({"resume_argv": ["fit"], "resume_marker": "/abs/last.ckpt"}, "inside run_dir"),
        ({"name": ""}, "job name must be a non-empty string"),
    ],
)
def test_job_spec_rejects_bad_fields_in_one_line(tmp_path, fields, message):
    arguments = {"name": "a", "run_dir": tmp_path, "argv": ["simulate"], **fields}
    with pytest.raises(ValueError, match=message) as error:
        JobSpec(**arguments)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nodes": 0}, "nodes must be an integer >= 1, got 0"),
        ({"cpus_per_task": 1.5}, "cpus_per_task must be an integer >= 1, got 1.5"),
        ({"gpus_per_node": -1}, "gpus_per_node must be an integer >= 0"),
        ({"timeout_min": True}, "timeout_min must be an integer"),
        ({"mem_gb": 0}, "mem_gb must be a number > 0"),
        ({"partition": ""}, "partition must be a non-empty string"),
        ({"additional": {"--account": "x"}}, "without dashes"),
        ({"additional": {"account": 3}}, "must be a string"),
    ],
)
def test_resources_reject_bad_values_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        Resources(**fields)


def test_exit_message_is_the_last_error_line_of_stderr():
    lightning_cli = "usage: brainalign fit [-h]\ntip: run brainalign fit --help\nerror: unknown x\n"
    assert exit_message(2, lightning_cli) == "error: unknown x"
    ours = "some log\nbrainalign simulate: error: n must be positive\n\n"
    assert exit_message(2, ours) == "brainalign simulate: error: n must be positive"
    assert exit_message(3, "warning: a\nlast words\n") == "last words"
    assert exit_message(4, "") == "exit status 4"
    assert exit_message("stopped: no data\nmore", "error: ignored") == "stopped: no data"


# ----------------------------------------------------------------------------- job.json


def test_update_job_status_merges_atomically_and_respects_only_if(tmp_path):
    assert read_job_status(tmp_path) is None
    update_job_status(tmp_path, state=PENDING, job_id=None, name="a")
    # the job starts before the launcher writes its id: the late write must not win
    update_job_status(tmp_path, state=RUNNING, job_id="7_0", host="h")
    assert not update_job_status(tmp_path, only_if={"state": PENDING, "job_id": None}, job_id="7")
    assert read_job_status(tmp_path) == {
        "state": RUNNING,
        "job_id": "7_0",
        "name": "a",
        "host": "h",
    }
    assert update_job_status(tmp_path, only_if={"state": RUNNING}, state=COMPLETED)
    assert read_job_status(tmp_path)["state"] == COMPLETED
    assert sorted(p.name for p in tmp_path.iterdir()) == [".job.json.lock", "job.json"]


@pytest.mark.slow
def test_brainalign_job_records_completed_and_resumed(tmp_path):
    spec = JobSpec(
        name="sim",
        run_dir=tmp_path,
        argv=["simulate", "--out", str(tmp_path / "sim"), "--n-stimuli", "12"],
        resume_argv=["simulate", "--help"],
        resume_marker="sim/truth.json",
    )
    BrainalignJob(spec).run(job_id="local-1")
    status = read_job_status(tmp_path)
    assert status["state"] == COMPLETED and status["job_id"] == "local-1"
    assert status["resumed"] is False and status["error"] is None
    assert status["start"] <= status["end"]
    assert (tmp_path / "sim" / "truth.json").is_file()
    BrainalignJob(spec).run(job_id="local-2")  # the marker exists: --help, exit status 0
    status = read_job_status(tmp_path)
    assert status["state"] == COMPLETED and status["resumed"] is True
    assert status["argv"] == ["simulate", "--help"]


def test_brainalign_job_records_the_cli_error_line(tmp_path, capsys):
    with pytest.raises(JobFailedError, match=ZERO_STIMULI):
        BrainalignJob(failing_spec(tmp_path)).run(job_id="local-1")
    status = read_job_status(tmp_path)
    assert status["state"] == FAILED
    assert status["error"] == f"brainalign simulate: error: {ZERO_STIMULI}"
    assert ZERO_STIMULI in capsys.readouterr().err  # stderr still reaches the log


def test_brainalign_job_records_an_exception_and_reraises_it(tmp_path, monkeypatch):
    from brainalign import cli

    def broken(argv):
        raise RuntimeError("disk on fire\ntraceback details")

    monkeypatch.setattr(cli, "main", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        BrainalignJob(JobSpec(name="a", run_dir=tmp_path, argv=["fit"])).run(job_id="1")
    assert read_job_status(tmp_path)["error"] == "RuntimeError: disk on fire"


@pytest.mark.slow  # imports Lightning
def test_brainalign_job_stopped_by_sigterm_is_interrupted_not_failed(tmp_path, monkeypatch):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from brainalign import cli

    def preempted(argv):
        raise SIGTERMException

    monkeypatch.setattr(cli, "main", preempted)
    with pytest.raises(SystemExit) as stop:
        BrainalignJob(JobSpec(name="a", run_dir=tmp_path, argv=["fit"])).run(job_id="1")
    assert stop.value.code == 143
    status = read_job_status(tmp_path)
    assert status["state"] == INTERRUPTED and status["error"] is None


def test_brainalign_job_requeued_by_submitit_is_interrupted_whatever_follows(tmp_path, monkeypatch):
    """submitit's handler runs checkpoint(), then `scontrol requeue`, which the requeue's own
    SIGTERM can kill: the error that follows must not make the run FAILED."""
    import subprocess

    from brainalign import cli

    job = BrainalignJob(JobSpec(name="a", run_dir=tmp_path, argv=["fit"]))

    def requeued(argv):
        resubmission = job.checkpoint()
        assert resubmission.function is not job and resubmission.function.spec == job.spec
        raise subprocess.CalledProcessError(-15, ["scontrol", "requeue", "4"])

    monkeypatch.setattr(cli, "main", requeued)
    with pytest.raises(SystemExit) as stop:
        job.run(job_id="4")
    assert stop.value.code == 143
    assert read_job_status(tmp_path)["state"] == INTERRUPTED


def test_combine_states_prefers_slurm_while_it_knows_the_job():
    done = {"job_id": "5_0", "state": COMPLETED}
    assert combine_states(PENDING, {"job_id": "5_0", "state": INTERRUPTED}, "5_0") == PENDING
    assert combine_states("TIMEOUT", {"job_id": "5_0", "state": RUNNING}, "5_0") == "TIMEOUT"
    assert combine_states(None, done, "5_0") == COMPLETED
    assert combine_states(None, {"job_id": "5_0", "state": FAILED}, "5_0") == FAILED
    assert combine_states(None, done, "6_0") == UNKNOWN  # another job's record
    assert combine_states(None, {"job_id": "5_0", "state": RUNNING}, "5_0") == UNKNOWN
    assert combine_states(None, None, "5_0") == UNKNOWN
    # squeue failed: nothing is concluded from the job's absence
    running = {"job_id": "5_0", "state": RUNNING}
    assert combine_states(None, running, "5_0", answered=False) == RUNNING
    assert combine_states(None, done, "5_0", answered=False) == COMPLETED
    assert combine_states(None, done, "6_0", answered=False) == PENDING


def test_slurm_state_names_are_normalised():
    assert slurm_states.normalise_slurm_state("CANCELLED by 0") == "CANCELLED"
    assert slurm_states.normalise_slurm_state("COMPLETING") == RUNNING
    assert slurm_states.normalise_slurm_state("REQUEUED") == PENDING
    assert slurm_states.normalise_slurm_state("OUT_OF_MEMORY") == "OUT_OF_MEMORY"


def test_wait_by_polling_times_out_naming_the_late_jobs():
    now = [0.0]
    answers = iter([{"a": PENDING, "b": RUNNING}, {"b": COMPLETED}, {}, {}])

    def sleep(seconds):
        now[0] += seconds

    with pytest.raises(TimeoutError, match=r"after 5 s: a$"):
        launchers._wait_by_polling(
            lambda ids: next(answers) | dict.fromkeys(set(ids) - {"b"}, RUNNING),
            ["a", "b"],
            poll_s=2.0,
            timeout_s=5.0,
            clock=lambda: now[0],
            sleep=sleep,
        )


# ----------------------------------------------------------------------------- sbatch


def fake_slurm_bin(folder: Path) -> Path:
    """A PATH folder with stand-ins for sbatch/srun: enough for SlurmLauncher to construct."""
    folder.mkdir()
    for program in ("sbatch", "srun"):
        refusal = f"echo '{program}: error: invalid partition specified: nope' >&2"
        (folder / program).write_text(f"#!/bin/sh\n{refusal}\nexit 1\n")
        (folder / program).chmod(0o755)
    return folder


def test_resources_become_sbatch_options(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_slurm_bin(tmp_path / "bin")))
    resources = Resources(
        gpus_per_node=2,
        nodes=3,
        cpus_per_task=4,
        mem_gb=16,
        timeout_min=30,
        partition="gpu",
        array_parallelism=5,
        additional={"account": "brain"},
    )
    launcher = SlurmLauncher(tmp_path / "submitit", resources, signal_delay_s=120)
    script = launcher._executor._make_submission_file_text("COMMAND", "uid")
    for line in (
        "#SBATCH --gres=gpu:2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --nodes=3",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16384MB",
        "#SBATCH --time=30",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=brain",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
        "export OMP_NUM_THREADS=4",
    ):
        assert line in script.splitlines(), f"{line!r} missing from\n{script}"
    assert launcher._executor.parameters["array_parallelism"] == 5
    cpu_only = launchers.slurm_parameters(Resources())
    assert cpu_only["ntasks_per_node"] == 1 and "gres" not in cpu_only


def test_failed_submission_is_recorded_in_job_json(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_slurm_bin(tmp_path / 'bin')}:{os.environ['PATH']}")
    spec = simulate_spec(tmp_path / "run", "a")
    launcher = SlurmLauncher(tmp_path / "submitit", Resources())
    with pytest.raises(Exception, match="invalid partition"):
        launcher.submit([spec])
    status = read_job_status(spec.run_dir)
    assert status["state"] == FAILED
    assert status["error"] == (
        "submission failed: FailedJobError: sbatch: error: invalid partition specified: nope"
    )


def test_slurm_launcher_without_sbatch_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="needs sbatch and srun on PATH") as error:
        SlurmLauncher(tmp_path / "submitit", Resources())
    assert "\n" not in str(error.value)
    assert not (tmp_path / "submitit").exists()


# ----------------------------------------------------------------------------- local


@pytest.mark.slow
def test_local_launcher_runs_two_jobs_and_reports_a_failure(tmp_path):
    specs = [simulate_spec(tmp_path / f"run{i}", f"run{i}") for i in range(2)]
    specs.append(failing_spec(tmp_path / "bad"))
    with LocalLauncher(max_workers=2) as launcher:
        job_ids = launcher.submit(specs)
        outcomes = launcher.wait(job_ids, timeout_s=300)
    assert len(set(job_ids)) == 3 and all(job_id.startswith("local-") for job_id in job_ids)
    for spec, job_id in zip(specs[:2], job_ids):
        assert outcomes[job_id].state == COMPLETED, job_logs(spec.run_dir)
        assert outcomes[job_id].start <= outcomes[job_id].end
        status = read_job_status(spec.run_dir)
        assert status["state"] == COMPLETED and status["job_id"] == job_id
        assert (spec.run_dir / "sim" / "truth.json").is_file()
        assert "truth:" in (spec.run_dir / "local" / "stdout.log").read_text()
    bad = outcomes[job_ids[2]]
    assert bad.state == FAILED and bad.error == f"brainalign simulate: error: {ZERO_STIMULI}"
    assert ZERO_STIMULI in (tmp_path / "bad" / "local" / "stderr.log").read_text()
    assert launcher.states(["local-0-99"]) == {"local-0-99": UNKNOWN}


def test_local_job_that_raised_gets_a_final_state(tmp_path):
    from concurrent.futures.process import BrokenProcessPool

    spec = JobSpec(name="a", run_dir=tmp_path, argv=["fit"])
    crash = LocalLauncher._record_crash
    update_job_status(tmp_path, state=FAILED, job_id="local-1-1", error="error: bad key")
    assert crash(spec, "local-1-1", JobFailedError("x"), read_job_status(tmp_path)) == FAILED
    assert read_job_status(tmp_path)["error"] == "error: bad key"  # the job's own words stay
    update_job_status(tmp_path, state=INTERRUPTED, job_id="local-1-2", error=None)
    assert crash(spec, "local-1-2", SystemExit(143), read_job_status(tmp_path)) == "CANCELLED"
    assert read_job_status(tmp_path)["state"] == "CANCELLED"
    update_job_status(tmp_path, state=RUNNING, job_id="local-1-3")
    died = BrokenProcessPool("A process in the process pool was terminated abruptly")
    assert crash(spec, "local-1-3", died, read_job_status(tmp_path)) == FAILED
    assert read_job_status(tmp_path)["error"] == (
        "BrokenProcessPool: A process in the process pool was terminated abruptly"
    )


def test_a_killed_but_unreaped_local_job_is_not_alive():
    """A killed worker stays a zombie until its parent reaps it: it must count as gone, or
    ``study run`` would wait for it forever."""
    import signal
    import socket

    from brainalign.study.orchestrate import _alive

    child = subprocess.Popen(["sleep", "60"])
    status = {"state": RUNNING, "job_id": f"local-{child.pid}-1", "pid": child.pid}
    status["host"] = socket.gethostname()
    try:
        assert _alive(status, launcher=None)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed child did not become a zombie"
            time.sleep(0.05)
        assert not _alive(status, launcher=None)  # still unreaped here
    finally:
        child.wait()
    assert not _alive(status, launcher=None)
    assert not _alive({**status, "state": COMPLETED}, launcher=None)


# ----------------------------------------------------------------------------- SLURM


def scontrol_job(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (Key=Value pairs)."""
    text = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(pair.split("=", 1) for pair in text.split() if "=" in pair)


def test_cluster_start_reuses_a_running_cluster_and_refuses_a_stopped_one(slurm_cluster, tmp_path):
    start = [str(REPO / "scripts" / "slurm" / "start_cluster.sh")]
    again = subprocess.run([*start, str(slurm_cluster.folder)], capture_output=True, text=True)
    assert (
        again.returncode == 0 and again.stdout.strip() == f"export SLURM_CONF={slurm_cluster.conf}"
    )
    (tmp_path / "slurm.conf").write_text("# a cluster that was not stopped\n")
    stale = subprocess.run([*start, str(tmp_path)], capture_output=True, text=True)
    assert stale.returncode == 1
    assert "holds a cluster that is not running: run scripts/slurm/stop_cluster.sh" in stale.stderr


@pytest.mark.slow
def test_slurm_array_of_two_jobs_completes(slurm_cluster, tmp_path):
    specs = [simulate_spec(tmp_path / f"run{i}", f"size=S__data={i}") for i in range(2)]
    launcher = SlurmLauncher(tmp_path / "submitit", Resources(timeout_min=10))
    job_ids = launcher.submit(specs)
    outcomes = launcher.wait(job_ids, poll_s=0.5, timeout_s=240)
    array_id = job_ids[0].split("_")[0]  # one array: A_0, A_1
    assert job_ids == [f"{array_id}_0", f"{array_id}_1"]
    for spec, job_id in zip(specs, job_ids):
        assert outcomes[job_id].state == COMPLETED, job_logs(spec.run_dir)
        status = read_job_status(spec.run_dir)
        assert status["state"] == COMPLETED and status["job_id"] == job_id
        assert status["name"] == spec.name and status["restarts"] == 0
        assert (spec.run_dir / "sim" / "truth.json").is_file()
        slurm = scontrol_job(job_id)  # the id is SLURM's, and SLURM agrees
        assert slurm["JobState"] == "COMPLETED"
        assert f"{slurm['ArrayJobId']}_{slurm['ArrayTaskId']}" == job_id
        assert (spec.run_dir / "slurm" / job_id).is_symlink()
        assert "truth:" in "".join(p.read_text() for p in (spec.run_dir / "slurm").glob("*/*.out"))
    # a second launcher (a study run again) finds the states through the folder's index
    again = SlurmLauncher(tmp_path / "submitit", Resources())
    assert again.states(job_ids) == dict.fromkeys(job_ids, COMPLETED)


@pytest.mark.slow
def test_slurm_failing_command_is_failed_with_its_error(slurm_cluster, tmp_path):
    spec = failing_spec(tmp_path / "bad")
    launcher = SlurmLauncher(tmp_path / "submitit", Resources(timeout_min=10))
    (job_id,) = launcher.submit([spec])
    outcome = launcher.wait([job_id], poll_s=0.5, timeout_s=240)[job_id]
    assert outcome.state == FAILED, job_logs(spec.run_dir)
    assert outcome.error == f"brainalign simulate: error: {ZERO_STIMULI}"
    assert scontrol_job(job_id)["JobState"] == "FAILED"
    assert read_job_status(spec.run_dir)["error"] == outcome.error


def fit_spec(run_dir: Path, max_steps: int) -> JobSpec:
    """A tiny fit of the smoke config writing last.ckpt every step into run_dir/checkpoints."""
    run_dir.mkdir(parents=True, exist_ok=True)
    override = {
        "trainer": {
            "max_steps": max_steps,
            "log_every_n_steps": 1,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(run_dir), "name": "", "version": ""},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(run_dir / "checkpoints"),
                        "save_last": True,
                        "save_top_k": 0,
                        "every_n_train_steps": 1,
                    },
                }
            ],
        },
        "data": {
            "sources": [
                {
                    "kind": "procedural",
                    "path": str(run_dir / "images"),
                    "procedural": {"n_images": 64, "image_size": 32, "seed": 0},
                }
            ]
        },
    }
    (run_dir / "override.yaml").write_text(yaml.safe_dump(override))
    argv = ["fit", "--config", str(SMOKE), "--config", str(run_dir / "override.yaml")]
    last = run_dir / "checkpoints" / "last.ckpt"
    return JobSpec(
        name="fit",
        run_dir=run_dir,
        argv=argv,
        resume_argv=[*argv, "--ckpt_path", str(last)],
        resume_marker="checkpoints/last.ckpt",
    )


def checkpoint_step(path: Path) -> int | None:
    """global_step of a Lightning checkpoint, or None while it is absent or being written."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:
        return None


def wait_for_step(spec: JobSpec, step: int, *, restarts: int, timeout_s: float = 240) -> int:
    """Block until the job's attempt number ``restarts`` has checkpointed ``step`` or more."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = read_job_status(spec.run_dir) or {}
        reached = checkpoint_step(spec.run_dir / "checkpoints" / "last.ckpt")
        if status.get("state") == RUNNING and status.get("restarts") == restarts:
            if reached is not None and reached >= step:
                return reached
        assert status.get("state") not in (COMPLETED, FAILED), job_logs(spec.run_dir)
        time.sleep(0.2)
    raise AssertionError(f"step {step} not reached in {timeout_s} s\n{job_logs(spec.run_dir)}")


def logged_steps(run_dir: Path) -> list[list[int]]:
    """train/loss steps of each TensorBoard events file (one file per attempt), in order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    files = sorted(run_dir.glob("events.out.tfevents.*"), key=lambda p: int(p.name.split(".")[3]))
    return [
        sorted(
            event.step
            for event in EventFileLoader(str(path)).Load()
            if any(value.tag == "train/loss" for value in event.summary.value)
        )
        for path in files
    ]


@pytest.mark.slow
def test_slurm_requeued_fit_resumes_from_last_checkpoint(slurm_cluster, tmp_path):
    """An operator's `scontrol requeue`, then submitit's USR2 (time limit near): each time the
    job runs again from last.ckpt and the fit ends at max_steps."""
    max_steps = 16
    spec = fit_spec(tmp_path / "fit", max_steps)
    launcher = SlurmLauncher(tmp_path / "submitit", Resources(timeout_min=20))
    (job_id,) = launcher.submit([spec])

    first = wait_for_step(spec, 2, restarts=0)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    # once the second attempt runs, last.ckpt is where the first stopped (its SIGTERM save):
    # the second must train two steps of its own before it is signalled in turn
    resumed_at = wait_for_step(spec, 0, restarts=1)
    second = wait_for_step(spec, resumed_at + 2, restarts=1)
    assert read_job_status(spec.run_dir)["resumed"] is True
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # what --signal sends
    outcome = launcher.wait([job_id], poll_s=0.5, timeout_s=400)[job_id]

    assert outcome.state == COMPLETED, job_logs(spec.run_dir)
    status = read_job_status(spec.run_dir)
    assert status["restarts"] == 2 and status["resumed"] is True
    assert status["argv"] == spec.resume_argv
    assert scontrol_job(job_id)["Restarts"] == "2"
    assert checkpoint_step(spec.run_dir / "checkpoints" / "last.ckpt") == max_steps
    attempts = logged_steps(spec.run_dir)
    assert len(attempts) == 3, attempts
    assert attempts[0][0] == 0
    # each later attempt starts where a checkpoint of the one before left off, not at 0
    assert first <= attempts[1][0] <= attempts[0][-1] + 1, attempts
    assert second <= attempts[2][0] <= attempts[1][-1] + 1, attempts
    assert attempts[2][-1] == max_steps - 1
    assert sorted(set().union(*attempts)) == list(range(max_steps))  # no step lost
    log = "".join(p.read_text() for p in (spec.run_dir / "slurm").glob("*/*_log.*"))
    assert "Calling checkpoint method" in log  # the USR2 requeue was submitit's
    assert json.loads((spec.run_dir / "job.json").read_text())["job_id"] == job_id
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf)
