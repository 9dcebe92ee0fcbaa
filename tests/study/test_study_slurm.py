"""A tiny study on the real one-node SLURM test cluster (tests/study/conftest.py starts it).

- two runs through the slurm launcher complete;
- a running training job requeued with ``scontrol requeue`` resumes from ``last.ckpt`` and its
  chronology has every scheduled probe step exactly once;
- ``brainalign study run`` killed mid-study and run again loses no finished run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from brainalign.callbacks import probe_steps
from brainalign.study.config import load_study
from brainalign.study.job_status import COMPLETED, RUNNING, read_job_status
from brainalign.study.orchestrate import run_study

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "experiments" / "smoke.yaml")
BRAINALIGN = Path(sys.executable).parent / "brainalign"
ROW_KEYS = ["step", "subject", "modality", "feature_kind", "layer", "group", "time", "metric"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from brainalign.probe.simulate import simulate_subject

    root = tmp_path_factory.mktemp("subject")
    return simulate_subject(root / "sim", n_stimuli=40, image_size=32, seed=0)


def study_file(folder: Path, subject, *, max_steps: int = 8, levels=("low", "high")) -> Path:
    rates = {"low": 0.001, "high": 0.004}
    content = {
        "name": "slurm",
        "base": [SMOKE],
        "factors": {
            "lr": {
                level: {
                    "model": {"optim": {"base_lr": rates[level]}},
                    "trainer": {"max_steps": max_steps},
                }
                for level in levels
            }
        },
        "probe": {
            "brain": [str(subject.fmri_dir), str(subject.meg_path)],
            "features": {"pooling": "cls"},
            "encoding": {"n_folds": 4, "backend": "numpy"},
        },
        "probing": {"n_probes": 4, "n_exports": 2, "checkpoint_every_n_steps": 1},
        "launcher": {"kind": "slurm", "slurm": {"timeout_min": 20, "cpus_per_task": 1}},
        "directory": str(folder / "study"),
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def _chronology(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "chronology.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=ROW_KEYS)


def test_two_run_study_completes_on_slurm(slurm_cluster, tmp_path, subject, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = run_study(load_study(study_file(tmp_path, subject)), progress=False)
    assert list(table["status"]) == [COMPLETED, COMPLETED], table.to_string()
    assert table["job_id"].str.match(r"^\d+_\d+$").all()  # one array, one task per run
    scheduled = probe_steps(8, schedule="log", n_probes=4, every_n_steps=1, fractions=None)
    for run_dir in table["run_dir"]:
        assert sorted(_chronology(Path(run_dir))["step"].unique()) == scheduled


def test_a_requeued_training_job_resumes_and_loses_no_probe(
    slurm_cluster, tmp_path, subject, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    max_steps = 40
    path = study_file(tmp_path, subject, max_steps=max_steps, levels=("low",))
    table = run_study(load_study(path), wait=False, progress=False)
    run_dir = Path(table["run_dir"].iloc[0])
    job_id = table["job_id"].iloc[0]
    deadline = time.monotonic() + 300
    while _chronology(run_dir)["step"].nunique() < 3:  # the first three probes are in
        status = read_job_status(run_dir) or {}
        assert status.get("state") != "FAILED", status
        assert time.monotonic() < deadline, "the first probes did not come in time"
        time.sleep(0.5)
    before = _chronology(run_dir)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    table = run_study(load_study(path), progress=False)  # waits; submits nothing new
    assert table["job_id"].iloc[0] == job_id
    status = read_job_status(run_dir)
    assert status["state"] == COMPLETED and status["resumed"] is True
    assert status["restarts"] >= 1
    chronology = _chronology(run_dir)
    scheduled = probe_steps(max_steps, schedule="log", n_probes=4, every_n_steps=1, fractions=None)
    assert sorted(chronology["step"].unique()) == scheduled
    assert chronology.duplicated(ROW_KEYS).sum() == 0  # no probe step doubled
    first = before[before["step"] == 0].sort_values(ROW_KEYS).reset_index(drop=True)
    again = chronology[chronology["step"] == 0].sort_values(ROW_KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(first, again)  # step 0 was not probed a second time


def test_killed_study_run_loses_no_finished_run(slurm_cluster, tmp_path, subject):
    path = study_file(tmp_path, subject, max_steps=8)
    environment = {**os.environ, "SLURM_CONF": str(slurm_cluster.conf)}
    process = subprocess.Popen(
        [str(BRAINALIGN), "study", "run", str(path)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    runs = tmp_path / "study" / "runs"
    deadline = time.monotonic() + 300
    while not any(
        (read_job_status(runs / run) or {}).get("state") == COMPLETED
        for run in ("lr=low", "lr=high")
    ):
        assert time.monotonic() < deadline, "no run completed in time"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)  # the study process; the SLURM jobs go on
    process.wait()
    done = {
        run: read_job_status(runs / run)
        for run in ("lr=low", "lr=high")
        if (read_job_status(runs / run) or {}).get("state") == COMPLETED
    }
    os.chdir(tmp_path)
    try:
        table = run_study(load_study(path), progress=False)
    finally:
        os.chdir(REPO)
    assert list(table["status"]) == [COMPLETED, COMPLETED], table.to_string()
    for run, status in done.items():
        assert read_job_status(runs / run)["job_id"] == status["job_id"]  # not run again
    assert RUNNING not in set(table["status"])
