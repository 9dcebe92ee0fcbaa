"""A tiny study end to end on the local launcher: run, status, report, idempotence, recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from brainalign.study.config import load_study
from brainalign.study.job_status import read_job_status
from brainalign.study.orchestrate import run_study

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "experiments" / "smoke.yaml")
BRAINALIGN = Path(sys.executable).parent / "brainalign"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from brainalign.probe.simulate import simulate_subject

    root = tmp_path_factory.mktemp("subject")
    return simulate_subject(root / "sim", n_stimuli=40, image_size=32, seed=0)


def study_file(folder: Path, subject, *, factors=None, max_workers=2, after_training=True):
    content = {
        "name": "tiny",
        "base": [SMOKE],
        "factors": factors
        or {
            "lr": {
                "low": {"model": {"optim": {"base_lr": 0.001}}},
                "high": {"model": {"optim": {"base_lr": 0.004}}},
            }
        },
        "probe": {
            "brain": [str(subject.fmri_dir), str(subject.meg_path)],
            "features": {"pooling": "cls"},
            "encoding": {"n_folds": 4, "backend": "numpy"},
            "bootstrap": {"n_resamples": 30},
        },
        "probing": {
            "n_probes": 3,
            "n_exports": 3,
            "checkpoint_every_n_steps": 2,
            "after_training": after_training,
        },
        "launcher": {"kind": "local", "max_workers": max_workers},
        "directory": str(folder / "study"),
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def test_run_report_and_run_again_changes_nothing(tmp_path, subject, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the smoke config writes its procedural shards under data/
    study = load_study(study_file(tmp_path, subject))
    table = run_study(study, progress=False)
    assert list(table["status"]) == ["COMPLETED", "COMPLETED"], table["error"].tolist()
    assert list(table["probe_status"]) == ["COMPLETED", "COMPLETED"]
    assert table["n_parameters"].notna().all() and list(table["max_steps"]) == [8, 8]
    folder = tmp_path / "study"
    for run in ("lr=low", "lr=high"):
        run_dir = folder / "runs" / run
        chronology = pd.read_parquet(run_dir / "chronology.parquet")
        assert sorted(chronology["step"].unique()) == [0, 1, 3, 8]  # 3 log probes + step 0
        assert (run_dir / "probe_exports" / "chronology.parquet").is_file()
    events = sorted(folder.rglob("events.out.tfevents*"))
    assert len(events) == 2  # both runs under one TensorBoard folder
    job_ids = list(table["job_id"])

    again = run_study(load_study(study_file(tmp_path, subject)), progress=False)
    assert list(again["job_id"]) == job_ids  # nothing was submitted again
    assert sorted(folder.rglob("events.out.tfevents*")) == events

    status = subprocess.run(
        [str(BRAINALIGN), "study", "status", str(folder)], capture_output=True, text=True
    )
    assert status.returncode == 0 and "2 runs: 2 COMPLETED" in status.stdout
    from brainalign.study.report import write_report

    out = write_report(folder)
    for name in ("scores.parquet", "final.csv", "half_times.csv", "comparisons.csv"):
        assert (out / name).is_file(), name
    assert (out / "chance.csv").is_file() and (out / "trends.csv").is_file()
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["run"]) == {"lr=low", "lr=high"} and set(scores["lr"]) == {"low", "high"}
    assert {"training", "exports"} == set(scores["source"])
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert {"bootstrap", "sign_flip"} <= set(comparisons["test"])
    assert comparisons["q_value"].between(0, 1).all()
    final = pd.read_csv(out / "final.csv")
    assert final.loc[final["curve"] == "encoding", ["ci_low", "ci_high"]].notna().all().all()
    report = (out / "report.md").read_text()
    assert "## Level comparisons" in report and "figures/" in report
    figures = list((out / "figures").glob("*.png"))
    assert figures and all(path.stat().st_size > 1000 for path in figures)


def test_a_failed_run_is_resubmitted_with_its_error_kept(tmp_path, subject, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for index in range(8):  # not images: the fit fails when it reads them
        (images / f"{index}.png").write_bytes(b"not a png")
    source = {"kind": "folder", "path": str(images)}
    factors = {"data": {"broken": {"data": {"sources": [source], "batch_size": 4}}}}
    path = study_file(tmp_path, subject, factors=factors, after_training=False)
    table = run_study(load_study(path), progress=False)
    assert list(table["status"]) == ["FAILED"]
    first_error = table["error"].iloc[0]
    assert first_error and "\n" not in first_error

    from PIL import Image

    from brainalign.synthetic.images import generate_images

    for index, image in enumerate(generate_images(8, size=32, seed=0)[0]):
        Image.fromarray(image).save(images / f"{index}.png")
    table = run_study(load_study(path), progress=False)
    assert list(table["status"]) == ["COMPLETED"], table["error"].tolist()
    status = read_job_status(tmp_path / "study" / "runs" / "data=broken")
    assert status["attempts"] == 2 and status["last_error"] == first_error


def test_killing_study_run_mid_study_loses_no_finished_run(tmp_path, subject):
    path = study_file(tmp_path, subject, max_workers=1, after_training=False)
    process = subprocess.Popen(
        [str(BRAINALIGN), "study", "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the workers too
    )
    first = tmp_path / "study" / "runs" / "lr=low"
    deadline = time.monotonic() + 300
    while (read_job_status(first) or {}).get("state") != "COMPLETED":
        assert process.poll() is None, "study run ended before the first run completed"
        assert time.monotonic() < deadline, "the first run did not complete in time"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = read_job_status(first)
    os.chdir(tmp_path)
    try:
        table = run_study(load_study(path), progress=False)
    finally:
        os.chdir(REPO)
    assert list(table["status"]) == ["COMPLETED", "COMPLETED"], table["error"].tolist()
    assert read_job_status(first)["job_id"] == finished["job_id"]  # not run again
    second = pd.read_parquet(tmp_path / "study" / "runs" / "lr=high" / "chronology.parquet")
    assert np.array_equal(sorted(second["step"].unique()), [0, 1, 3, 8])


def test_a_run_whose_earlier_job_dies_while_waited_for_is_run_again(tmp_path, subject):
    """The race a kill leaves: the killed job's process still exists at the first look and
    exits while ``study run`` waits for it. The run must then be submitted, not reported as
    RUNNING."""
    import socket

    from brainalign.study.job_status import update_job_status

    factors = {"lr": {"low": {"model": {"optim": {"base_lr": 0.001}}}}}
    path = study_file(tmp_path, subject, factors=factors, after_training=False)
    dying = subprocess.Popen(["sleep", "3"])
    run_dir = tmp_path / "study" / "runs" / "lr=low"
    run_dir.mkdir(parents=True)
    update_job_status(
        run_dir,
        name="lr=low",
        state="RUNNING",
        job_id=f"local-{dying.pid}-1",
        pid=dying.pid,
        host=socket.gethostname(),
    )
    os.chdir(tmp_path)
    try:
        table = run_study(load_study(path), progress=False)
    finally:
        os.chdir(REPO)
        dying.wait()
    assert list(table["status"]) == ["COMPLETED"], table["error"].tolist()
    assert read_job_status(run_dir)["job_id"] != f"local-{dying.pid}-1"


def test_a_study_mixing_a_trained_model_and_a_model_to_probe(tmp_path, subject, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factors = {
        "model": {
            "tiny": {"model": {"backbone": "vit_tiny_test"}},
            "resnet": {
                "probe_model": {"spec": "timm:resnet18", "weights": "random"},
                "probe": {"preprocess": {"resolution": 64}, "features": {"pooling": "mean"}},
            },
        }
    }
    path = study_file(tmp_path, subject, factors=factors, after_training=False)
    table = run_study(load_study(path), progress=False)
    assert list(table["kind"]) == ["fit", "probe"]
    assert list(table["status"]) == ["COMPLETED", "COMPLETED"], table["error"].tolist()
    probe_dir = tmp_path / "study" / "runs" / "model=resnet" / "probe"
    scores = pd.read_parquet(probe_dir / "scores.parquet")
    assert set(scores["modality"]) == {"fmri", "meg"} and set(scores["model"]) == {"timm:resnet18"}
    from brainalign.study.report import write_report

    out = write_report(tmp_path / "study")
    final = pd.read_csv(out / "final.csv")
    assert set(final["run"]) == {"model=tiny", "model=resnet"}
    comparisons = pd.read_csv(out / "comparisons.csv")
    # compared at the one fraction both have: the probe (1.0) and the trained run's last probe
    assert set(comparisons["train_fraction"]) == {1.0}
    assert set(comparisons[["level_a", "level_b"]].itertuples(index=False, name=None)) == {
        ("tiny", "resnet")
    }


def test_exports_probed_beside_training(tmp_path, subject, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factors = {"lr": {"low": {"model": {"optim": {"base_lr": 0.001}}}}}
    path = study_file(tmp_path, subject, factors=factors, after_training=False)
    content = yaml.safe_load(path.read_text())
    content["probing"].update(during_training=False, beside_training=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    table = run_study(load_study(path), progress=False)
    assert list(table["status"]) == ["COMPLETED"] and list(table["probe_status"]) == ["COMPLETED"]
    run_dir = tmp_path / "study" / "runs" / "lr=low"
    probe = read_job_status(run_dir / "probe_exports")
    assert probe["argv"][-1] == "--follow"
    fit = read_job_status(run_dir)
    assert probe["start"] < fit["end"]  # it ran beside the fit, not after it
    exports = sorted(int(p.name.split("_")[-1]) for p in (run_dir / "exports").iterdir())
    chronology = pd.read_parquet(run_dir / "probe_exports" / "chronology.parquet")
    assert sorted(chronology["step"].unique()) == exports
    assert not (run_dir / "chronology.parquet").exists()  # no probe in training
