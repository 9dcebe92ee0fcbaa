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
