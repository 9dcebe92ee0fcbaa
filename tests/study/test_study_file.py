"""The study file: grid expansion, run names, probe cells, and bad input before any job starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from brainalign.study.config import load_study
from brainalign.study.grid import expand_cells
from brainalign.study.runs import cell_probe_config, plan_run

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "experiments" / "smoke.yaml")


def write_study(folder: Path, **fields) -> Path:
    study = {
        "name": "t",
        "base": [SMOKE],
        "factors": {
            "size": {"tiny": {"model": {"backbone": "vit_tiny_test"}}, "small": {}},
            "lr": {"low": {"model": {"optim": {"base_lr": 0.001}}}, "high": {}},
        },
        "probe": {"brain": [str(folder)]},
        **fields,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_full_grid_crossed_with_seeds_in_declared_order(tmp_path):
    study = load_study(write_study(tmp_path, seeds=[0, 1]))
    cells = expand_cells(study)
    assert [cell.name for cell in cells] == [
        f"size={size}__lr={lr}__seed={seed}"
        for size in ("tiny", "small")
        for lr in ("low", "high")
        for seed in (0, 1)
    ]
    first = cells[0]
    assert first.levels == {"size": "tiny", "lr": "low", "seed": "0"} and first.seed == 0
    assert first.kind == "fit"
    assert first.fit_deltas == [
        {"model": {"backbone": "vit_tiny_test"}},
        {"model": {"optim": {"base_lr": 0.001}}},
    ]


def test_explicit_cells_replace_the_grid(tmp_path):
    cells = [{"size": "tiny", "lr": "high"}, {"size": "small", "lr": "low"}]
    study = load_study(write_study(tmp_path, cells=cells))
    assert [cell.name for cell in expand_cells(study)] == [
        "size=tiny__lr=high",
        "size=small__lr=low",
    ]


def test_plan_writes_the_study_part_of_the_config_and_a_stable_hash(tmp_path):
    study = load_study(write_study(tmp_path, seeds=[3]))
    cell = expand_cells(study)[0]
    plan = plan_run(study, cell, tmp_path / "out")
    assert plan.job.argv[:3] == ["fit", "--config", SMOKE]
    assert plan.job.argv[-1].endswith("inputs/study.yaml")
    assert plan.job.resume_argv[-2:] == ["--ckpt_path", str(plan.run_dir / "checkpoints/last.ckpt")]
    overrides = yaml.safe_load(plan.inputs["study.yaml"])
    assert overrides["seed_everything"] == 3
    logger = overrides["trainer"]["logger"]["init_args"]
    assert logger["save_dir"] == str((tmp_path / "out" / "runs").absolute())
    assert logger["name"] == cell.name and logger["version"] == ""
    probe_callback = overrides["trainer"]["callbacks"][-1]
    assert probe_callback["class_path"] == "brainalign.callbacks.BrainProbeCallback"
    assert probe_callback["init_args"]["probe"]["brain"] == [str(tmp_path)]
    assert plan_run(study, cell, tmp_path / "out").config_hash == plan.config_hash
    other = plan_run(study, expand_cells(study)[1], tmp_path / "out")
    assert other.config_hash != plan.config_hash


def test_probe_only_levels_and_probe_deltas(tmp_path):
    factors = {
        "model": {
            "export": {"probe_model": {"spec": str(tmp_path)}},
            "resnet": {"probe_model": {"spec": "timm:resnet18", "weights": "random"}},
        },
        "pooling": {"cls": {"probe": {"features": {"pooling": "cls"}}}, "mean": {}},
    }
    study = load_study(write_study(tmp_path, factors=factors, seeds=[0, 1]))
    cells = expand_cells(study)
    assert [cell.kind for cell in cells] == ["probe"] * 4  # seeds do not cross probes
    assert cells[2].probe_model.spec == "timm:resnet18"
    assert cell_probe_config(study, cells[0]).features.pooling == "cls"
    assert cell_probe_config(study, cells[1]).features.pooling == "mean"
    plan = plan_run(study, cells[0], tmp_path / "out")
    assert plan.job.argv[0] == "probe" and plan.job.resume_argv is None
    probe_file = yaml.safe_load(plan.inputs["probe.yaml"])
    assert probe_file["model"]["spec"] == str(tmp_path)
    assert probe_file["probe"]["features"]["pooling"] == "cls"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base": ["nope.yaml"]}, "base config nope.yaml does not exist"),
        (
            {"factors": {"size": {"tiny": "missing_level.yaml"}}},
            "factor 'size', level 'tiny': config file missing_level.yaml does not exist",
        ),
        ({"cells": [{"size": "tyni", "lr": "low"}]}, "no level 'tyni' (did you mean 'tiny'?)"),
        (
            {"cells": [{"sise": "tiny", "lr": "low"}]},
            "unknown factor 'sise' (did you mean 'size'?)",
        ),
        (
            {"cells": [{"size": "tiny", "lr": "low"}, {"size": "tiny", "lr": "low"}]},
            "both resolve to the run name 'size=tiny__lr=low'",
        ),
        ({"seeds": [1, 1]}, "seeds lists a seed more than once"),
        ({"factors": {}}, "factors is empty"),
        ({"factors": {"seed": {"a": {}}}}, "'seed' is taken by seeds"),
        ({"factors": {"size": {"a b": {}}}}, "level name 'a b'"),
        ({"launcher": {"kind": "cloud"}}, "launcher.kind"),
        ({"probing": {"during_training": False}}, "set during_training and/or after_training"),
        (
            {"factors": {"m": {"x": {"probe_model": {"spec": "timm:a"}, "model": {"a": 1}}}}},
            "a probe_model level probes a model, it has no fit keys ['model']",
        ),
    ],
)
def test_bad_study_files_are_one_clear_error(tmp_path, fields, message):
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        load_study(write_study(tmp_path, **fields))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_misspelt_key_names_the_key_and_the_file(tmp_path):
    path = write_study(tmp_path)
    content = yaml.safe_load(path.read_text())
    content["probing"] = {"n_probe": 3}
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    with pytest.raises(ValueError, match=r"study\.yaml: .*n_probe") as error:
        load_study(path)
    assert "\n" not in str(error.value)


def test_a_fit_config_error_is_found_before_any_job(tmp_path):
    from brainalign.study.orchestrate import prepare_runs

    factors = {"size": {"tiny": {"model": {"backbnoe": "vit_tiny_test"}}}}
    study = load_study(write_study(tmp_path, factors=factors))
    with pytest.raises(ValueError, match="cell 'size=tiny': its fit configs do not parse"):
        prepare_runs(study, tmp_path / "out")
    assert not (tmp_path / "out" / "runs" / "size=tiny" / "job.json").exists()


def test_slurm_launcher_without_sbatch_fails_before_anything_is_written(tmp_path, monkeypatch):
    from brainalign.study.orchestrate import run_study

    study = load_study(write_study(tmp_path, launcher={"kind": "slurm"}))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="needs sbatch"):
        run_study(study, study_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert os.environ["PATH"] == str(tmp_path / "empty")


def test_a_changed_definition_is_refused_rather_than_mixed(tmp_path):
    from brainalign.study.orchestrate import prepare_runs

    path = write_study(tmp_path, cells=[{"size": "tiny", "lr": "low"}])
    prepare_runs(load_study(path), tmp_path / "out")
    content = yaml.safe_load(path.read_text())
    content["factors"]["lr"]["low"] = {"model": {"optim": {"base_lr": 0.002}}}
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    with pytest.raises(ValueError, match="made from another definition of the cell"):
        prepare_runs(load_study(path), tmp_path / "out")
