"""End-to-end runs of `brainalign fit` (LightningCLI) in subprocesses: smoke, resume, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from runs import run_fit, scalar_tags
from safetensors.torch import load_file


def folder_of_images(root: Path, n: int = 48) -> Path:
    from PIL import Image

    from brainalign.synthetic.images import generate_images

    images, _ = generate_images(n, size=32, seed=3)
    root.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(root / f"img{index:03d}.png")
    return root


@pytest.mark.slow
def test_smoke_run_writes_logs_checkpoints_exports_and_config(tmp_path):
    run_fit(tmp_path)
    run_dir = tmp_path / "runs" / "smoke"
    assert (run_dir / "config.yaml").is_file(), "resolved config not saved next to the logs"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["backbone"] == "vit_tiny_test"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    exports = sorted(p.name for p in (run_dir / "exports").iterdir())
    assert exports[0] == "step_0000000" and exports[-1] == "step_0000008"
    meta = json.loads((run_dir / "exports" / "step_0000008" / "meta.json").read_text())
    assert meta["train_fraction"] == 1.0 and meta["architecture"] == "vit_tiny_test"
    assert meta["data"][0]["kind"] == "procedural"
    tags = scalar_tags(run_dir)
    for tag in (
        "train/loss",
        "train/loss_dino",
        "train/loss_ibot",
        "train/loss_koleo",
        "diagnostics/teacher_entropy",
        "diagnostics/prototype_usage",
        "diagnostics/cls_std",
        "schedule/lr",
    ):
        assert tag in tags, f"{tag} missing from TensorBoard events"
    assert len(tags["train/loss"]) == 8


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path):
    images = folder_of_images(tmp_path / "images")
    data = {"data": {"sources": [{"kind": "folder", "path": str(images)}], "num_workers": 0}}
    reference = tmp_path / "reference"
    reference.mkdir()
    run_fit(reference, overrides=data)

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    kill = {
        **data,
        "trainer": {
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 2},
                },
                {
                    "class_path": "brainalign.callbacks.LogSpacedCheckpoint",
                    "init_args": {"n_checkpoints": 4},
                },
                {"class_path": "fit_helpers.KillAtStep", "init_args": {"step": 5}},
            ]
        },
    }
    killed = run_fit(interrupted, overrides=kill, check=False)
    assert killed.returncode == 17, killed.stderr[-2000:]
    last = interrupted / "runs" / "smoke" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    run_fit(interrupted, "--ckpt_path", "last", overrides=data)

    final = "runs/smoke/exports/step_0000008/model.safetensors"
    expected, resumed = load_file(reference / final), load_file(interrupted / final)
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    ref_ckpt = torch.load(reference / "runs/smoke/checkpoints/last.ckpt", weights_only=True)
    res_ckpt = torch.load(last, weights_only=True)
    assert res_ckpt["global_step"] == ref_ckpt["global_step"] == 8
    for key, value in ref_ckpt["state_dict"].items():
        if key.startswith("student."):
            torch.testing.assert_close(res_ckpt["state_dict"][key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_ddp_two_cpu_processes_reduce_sinkhorn_across_ranks(tmp_path):
    record = tmp_path / "sinkhorn.json"
    overrides = {
        "trainer": {
            "devices": 2,
            "strategy": "ddp",
            "max_steps": 3,
            "callbacks": [
                {
                    "class_path": "fit_helpers.RecordSinkhornReduction",
                    "init_args": {"out": str(record)},
                },
            ],
        }
    }
    run_fit(tmp_path, overrides=overrides)
    result = json.loads(record.read_text())
    assert result["world_size"] == 2 and result["distributed"]
    # the reduced call on each rank equals one Sinkhorn-Knopp over all ranks' samples ...
    assert result["max_diff_to_single_process"] < 1e-6
    # ... which per-rank normalisation is not
    assert result["max_diff_local_to_single"] > 1e-3
    assert result["n_samples"] == 3 + 5


def test_config_key_typo_is_a_clear_error(tmp_path):
    result = run_fit(tmp_path, "--model.backbon", "vit_tiny_test", check=False)
    assert result.returncode != 0
    assert "backbon" in result.stderr
    result = run_fit(tmp_path, overrides={"data": {"bacth_size": 8}}, check=False)
    assert result.returncode != 0
    assert "bacth_size" in result.stderr


def test_unknown_model_name_is_a_clear_error(tmp_path):
    result = run_fit(
        tmp_path, "--model.backbone", "vit_huge_typo", "--trainer.max_steps", "1", check=False
    )
    assert result.returncode != 0
    assert "unknown backbone 'vit_huge_typo'" in result.stderr


@pytest.mark.slow
def test_validate_reports_the_ssl_loss_on_held_back_batches(tmp_path):
    import subprocess

    from runs import BRAINALIGN, SMOKE

    run_fit(tmp_path)
    result = subprocess.run(
        [
            str(BRAINALIGN),
            "validate",
            "--config",
            str(SMOKE),
            "--data.val_batches",
            "2",
            "--ckpt_path",
            "runs/smoke/checkpoints/last.ckpt",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/loss_dino" in result.stdout


@pytest.mark.slow
def test_resuming_with_another_architecture_is_a_clear_error(tmp_path):
    run_fit(tmp_path)
    result = run_fit(
        tmp_path, "--ckpt_path", "last", "--model.backbone", "vit_small_test", check=False
    )
    assert result.returncode != 0
    assert "trained with backbone 'vit_tiny_test' but this run builds 'vit_small_test'" in (
        result.stderr
    )


# --------------------------------------------------------------------------- stops, resumes


def start_fit(cwd: Path, overrides: dict, *extra: str):
    """`brainalign fit --config smoke.yaml --config <overrides>` started in the background."""
    import os
    import subprocess

    from runs import BRAINALIGN, PYTHONPATH, SMOKE

    (cwd / "override.yaml").write_text(yaml.safe_dump(overrides))
    return subprocess.Popen(
        [str(BRAINALIGN), "fit", "--config", str(SMOKE), "--config", "override.yaml", *extra],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=PYTHONPATH, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def folder_data(root: Path) -> dict:
    return {"data": {"sources": [{"kind": "folder", "path": str(root)}], "num_workers": 0}}


def callbacks(*extra: dict, every: int = 100) -> dict:
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": every},
    }
    exports = {"class_path": "brainalign.callbacks.LogSpacedCheckpoint", "init_args": {}}
    return {"trainer": {"callbacks": [checkpoint, exports, *extra]}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A complete 8-step run on a folder of images (the reference for the resumed runs)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    images = folder_of_images(root / "images")
    run_fit(root, overrides={**folder_data(images), **callbacks()})
    return root, images


def assert_same_final_weights(reference: Path, resumed: Path) -> None:
    final = "runs/smoke/exports/step_0000008/model.safetensors"
    expected, got = load_file(reference / final), load_file(resumed / final)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    last = "runs/smoke/checkpoints/last.ckpt"
    ref = torch.load(reference / last, weights_only=True)
    res = torch.load(resumed / last, weights_only=True)
    assert res["global_step"] == ref["global_step"] == 8
    for key, value in ref["state_dict"].items():
        torch.testing.assert_close(res["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGUSR1"])
def test_a_stop_signal_saves_last_and_the_resumed_run_ends_as_the_uninterrupted(
    tmp_path, uninterrupted, signal_name
):
    import signal
    import time

    reference, images = uninterrupted
    ready = tmp_path / "at-step-3"
    wait = {
        "class_path": "fit_stops.WaitForSignalAtStep",
        "init_args": {"step": 3, "ready": str(ready)},
    }
    # periodic checkpoints every 100 steps: without the signal, last.ckpt would not exist
    process = start_fit(tmp_path, {**folder_data(images), **callbacks(wait)})
    deadline = time.monotonic() + 600
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready.exists(), process.communicate()[1][-3000:]
    process.send_signal(getattr(signal, signal_name))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + getattr(signal, signal_name), stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"brainalign fit: stopped by {signal_name}; saved runs/smoke/checkpoints/last.ckpt: "
        "resume with --ckpt_path last"
    )
    last = tmp_path / "runs" / "smoke" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    run_fit(tmp_path, "--ckpt_path", "last", overrides={**folder_data(images), **callbacks()})
    assert_same_final_weights(reference, tmp_path)
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # updated, no last-v1.ckpt


@pytest.mark.slow
def test_two_log_spaced_checkpoints_keep_their_own_steps_through_a_kill(tmp_path):
    from brainalign.callbacks.checkpoint_schedule import log_spaced_steps

    images = folder_of_images(tmp_path / "images")
    sparse = {
        "class_path": "brainalign.callbacks.LogSpacedCheckpoint",
        "init_args": {"n_checkpoints": 3},
    }
    dense = {
        "class_path": "brainalign.callbacks.LogSpacedCheckpoint",
        "init_args": {"n_checkpoints": 6, "include_step_zero": False},
    }
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 2},
    }
    kill = {"class_path": "fit_helpers.KillAtStep", "init_args": {"step": 5}}
    schedules = {
        "sparse": log_spaced_steps(8, 3),
        "dense": log_spaced_steps(8, 6, include_zero=False),
    }
    assert schedules == {"sparse": [0, 1, 3, 8], "dense": [1, 2, 3, 5, 8]}

    def done_steps(path: Path) -> dict[str, list[int]]:
        states = torch.load(path, weights_only=True)["callbacks"]
        found = {key: state["done_steps"] for key, state in states.items() if "LogSpaced" in key}
        assert len(found) == 2, list(states)
        return {
            ("sparse" if "'n_checkpoints': 3" in key else "dense"): steps
            for key, steps in found.items()
        }

    data = folder_data(images)
    killed = run_fit(
        tmp_path,
        overrides={**data, "trainer": {"callbacks": [sparse, dense, checkpoint, kill]}},
        check=False,
    )
    assert killed.returncode == 17, killed.stderr[-3000:]
    last = tmp_path / "runs" / "smoke" / "checkpoints" / "last.ckpt"
    assert done_steps(last) == {"sparse": [0, 1, 3], "dense": [1, 2, 3]}  # saved at step 4
    run_fit(
        tmp_path,
        "--ckpt_path",
        "last",
        overrides={**data, "trainer": {"callbacks": [sparse, dense, checkpoint]}},
    )
    assert done_steps(last) == schedules  # every step of each schedule, each once
    exports = sorted(p.name for p in (tmp_path / "runs" / "smoke" / "exports").iterdir())
    expected = sorted(set(schedules["sparse"]) | set(schedules["dense"]))
    assert exports == [f"step_{step:07d}" for step in expected]


@pytest.mark.slow
def test_a_run_failing_before_its_first_step_leaves_no_run_folder(tmp_path):
    images = folder_of_images(tmp_path / "images")
    fail = {"class_path": "fit_stops.FailAtTrainStart"}
    overrides = {**folder_data(images), **callbacks(fail)}
    result = run_fit(tmp_path, overrides=overrides, check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["brainalign fit: error: planted failure at the start of training"]
    assert not (tmp_path / "runs").exists()
    # a run folder that existed keeps what it held, its config.yaml put back
    run = tmp_path / "runs" / "smoke"
    (run / "exports" / "step_0000000").mkdir(parents=True)
    (run / "config.yaml").write_text("# the earlier run's config\n")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    result = run_fit(tmp_path, overrides=overrides, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert (run / "config.yaml").read_text() == "# the earlier run's config\n"


@pytest.mark.slow
def test_default_root_dir_moves_the_whole_run(tmp_path):
    result = run_fit(
        tmp_path, "--trainer.default_root_dir", "elsewhere", "--trainer.max_steps", "2"
    )
    assert not (tmp_path / "runs").exists(), result.stderr[-2000:]
    run = tmp_path / "elsewhere" / "runs" / "smoke"
    assert (run / "config.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run / "exports").iterdir()) == [
        "step_0000000",
        "step_0000001",
        "step_0000002",
    ]
    meta = json.loads((run / "exports" / "step_0000002" / "meta.json").read_text())
    assert (tmp_path / meta["run"]).resolve() == run.resolve()  # relative to the run's cwd


@pytest.mark.slow
def test_resume_with_nothing_saved_says_so_and_model_from_ckpt_takes_its_settings(tmp_path):
    result = run_fit(tmp_path, "--ckpt_path", "last", "--trainer.max_steps", "2")
    assert (
        "brainalign fit: --ckpt_path last: no last checkpoint in runs/smoke/checkpoints yet, so "
        "there is nothing to resume; starting from step 0"
    ) in result.stderr.splitlines()
    assert "save_last=True" not in result.stderr  # Lightning's misleading hint is gone
    last = tmp_path / "runs" / "smoke" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    # the checkpoint's model settings on request: a vit_small_test config builds vit_tiny_test
    run_fit(
        tmp_path,
        "--ckpt_path",
        str(last),
        "--model.backbone",
        "vit_small_test",
        "--model_from_ckpt",
        "true",
        "--trainer.max_steps",
        "3",
    )
    saved = yaml.safe_load((tmp_path / "runs" / "smoke" / "config.yaml").read_text())
    assert saved["model"]["backbone"] == "vit_tiny_test"
    meta = json.loads((tmp_path / "runs/smoke/exports/step_0000003/meta.json").read_text())
    assert meta["architecture"] == "vit_tiny_test"
    assert torch.load(last, weights_only=True)["global_step"] == 3
