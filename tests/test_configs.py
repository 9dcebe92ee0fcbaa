"""Every YAML in the repository parses, and every config merges over the smoke run through the
real LightningCLI parser (types and keys checked, nothing instantiated)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.cli import LightningCLI

from brainalign.train.data import SSLDataModule
from brainalign.train.module import DINOv3Module

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted(
    path
    for path in (REPO / "configs" / "studies").glob("*.yaml")
    if "factors" in (yaml.safe_load(path.read_text()) or {})
)
CONFIGS = sorted(path for path in (REPO / "configs").rglob("*.yaml") if path not in STUDIES)
ALL_YAML = sorted(
    path
    for path in REPO.rglob("*.y*ml")
    if ".venv" not in path.parts and "runs" not in path.parts and "data" not in path.parts
)


class ParseOnly(LightningCLI):
    """LightningCLI that parses and type-checks but builds nothing (a 7B model stays unbuilt)."""

    def instantiate_classes(self) -> None:
        pass


def parse(*configs: Path) -> dict:
    args = [part for config in configs for part in ("--config", str(config))]
    argv, sys.argv = sys.argv, ["brainalign", *args]
    try:
        cli = ParseOnly(
            DINOv3Module, SSLDataModule, run=False, parser_kwargs={"allow_abbrev": False}
        )
    finally:
        sys.argv = argv
    return cli.config


def test_there_are_configs_for_every_size_and_the_experiments():
    names = {path.relative_to(REPO / "configs").as_posix() for path in CONFIGS}
    for size in ("vit_s", "vit_s_plus", "vit_b", "vit_l", "vit_h_plus", "vit_7b", "vit_tiny_test"):
        assert f"models/{size}.yaml" in names
    assert {"experiments/demo.yaml", "experiments/smoke.yaml"} <= names


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.relative_to(REPO).as_posix())
def test_yaml_is_valid(path):
    assert yaml.safe_load(path.read_text()) is not None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_config_merges_over_the_smoke_run(path):
    smoke = REPO / "configs" / "experiments" / "smoke.yaml"
    config = parse(smoke, path) if path != smoke else parse(smoke)
    expected = yaml.safe_load(path.read_text())
    if "model" in expected and "backbone" in expected["model"]:
        assert config.model.backbone == expected["model"]["backbone"]
    if "trainer" in expected and "max_steps" in expected["trainer"]:
        assert config.trainer.max_steps == expected["trainer"]["max_steps"]


def test_demo_long_is_a_delta_over_the_demo():
    experiments = REPO / "configs" / "experiments"
    config = parse(experiments / "demo.yaml", experiments / "demo_long.yaml")
    assert config.trainer.max_steps == 5000 and config.model.backbone == "vit_tiny_test"


def test_a_misspelt_key_in_a_config_file_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: vit_tiny_test\n  drop_path: 0.1\n")
    with pytest.raises(SystemExit):
        parse(REPO / "configs" / "experiments" / "smoke.yaml", bad)


def test_slurm_script_is_valid_bash():
    result = subprocess.run(
        ["bash", "-n", str(REPO / "scripts" / "slurm_train.sbatch")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_study_files_load_and_their_cells_parse(path, monkeypatch):
    from brainalign.study.config import load_study
    from brainalign.study.grid import expand_cells
    from brainalign.study.orchestrate import check_fit_configs
    from brainalign.study.runs import plan_run

    monkeypatch.chdir(REPO)  # study files name configs relative to the repository
    study = load_study(path)
    plans = [plan_run(study, cell, REPO / "studies" / study.name) for cell in expand_cells(study)]
    check_fit_configs([plan for plan in plans if plan.cell.kind == "fit"])


EXPERIMENTS = REPO / "configs" / "experiments"
#: Every experiment as it is run (demo_long is a delta over the demo).
EXPERIMENT_RUNS = [("smoke.yaml",), ("demo.yaml",), ("demo.yaml", "demo_long.yaml")]


def test_every_experiment_is_in_the_runs_checked_below():
    names = {name for run in EXPERIMENT_RUNS for name in run}
    assert names == {path.name for path in EXPERIMENTS.glob("*.yaml")}


@pytest.mark.parametrize("configs", EXPERIMENT_RUNS, ids=lambda names: names[-1])
def test_default_root_dir_moves_the_run_of_every_experiment(configs, tmp_path):
    """The shipped loggers and checkpoint folders follow --trainer.default_root_dir."""
    from brainalign.train.config_sources import ConfigSources
    from brainalign.train.lightning_cli import BrainalignCLI, RunState

    class ParseOnlyBrainalign(BrainalignCLI):
        def instantiate_classes(self) -> None:
            pass

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    files = [part for name in configs for part in ("--config", str(EXPERIMENTS / name))]
    args = ["fit", *files, "--trainer.default_root_dir", str(tmp_path)]
    argv, sys.argv = sys.argv, ["brainalign", *args]
    try:
        cli = ParseOnlyBrainalign(
            DINOv3Module,
            SSLDataModule,
            run_state=RunState(),
            sources=ConfigSources(args),
            seed_everything_default=False,
            auto_configure_optimizers=False,
        )
    finally:
        sys.argv = argv
    trainer = cli.config.fit.trainer
    save_dir = Path(trainer.logger.init_args.save_dir)
    assert save_dir.is_relative_to(tmp_path), save_dir
    for callback in trainer.callbacks:
        dirpath = callback.init_args.get("dirpath")
        assert dirpath is None or Path(dirpath).is_relative_to(tmp_path)
