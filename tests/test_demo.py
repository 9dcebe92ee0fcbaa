"""``brainalign demo``: packaged configs, ``--data``, ``--max-steps``, an out-of-date subject.

The demo's training itself (minutes of CPU) is not run here: ``run_lightning`` is replaced by
a stand-in that records the command, which is what the demo controls.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from brainalign.commands import demo

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src"
BRAINALIGN = Path(sys.executable).parent / "brainalign"
SMALL = {"n_stimuli": 24, "image_size": 16, "seed": 0}


def packaged(name: str) -> Path:
    return Path(str(files("brainalign").joinpath("configs", "experiments", name)))


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return [value] if isinstance(value, str) else []


# ---------------------------------------------------------------------- package data
def test_the_demo_configs_are_package_data_and_the_checkout_links_to_them():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["brainalign"]
    for names in demo.PRESETS.values():
        for name in names:
            path = packaged(name)
            assert path.is_file() and path.is_relative_to(SOURCE / "brainalign")
            relative = path.relative_to(SOURCE / "brainalign").as_posix()
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
            # one source of truth: configs/experiments/<name> in a checkout is the same file
            assert (REPO / "configs" / "experiments" / name).samefile(path)


def run_demo_command(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environment = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(SOURCE), os.environ.get("PYTHONPATH")])),
    )
    return subprocess.run(
        [str(BRAINALIGN), "demo", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_dry_run_outside_the_checkout_finds_the_packaged_config(tmp_path):
    result = run_demo_command(tmp_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"uses the config {packaged('demo.yaml')}" in result.stdout
    assert f"brainalign fit --config {packaged('demo.yaml')}\n" in result.stdout
    assert "would write the simulated subject to data/simulated" in result.stdout
    assert listing(tmp_path) == []  # a dry run writes nothing


def test_a_dry_run_with_data_and_max_steps_shows_the_relocated_configs(tmp_path):
    result = run_demo_command(
        tmp_path, "--dry-run", "--preset", "long", "--data", "mine", "--max-steps", "3"
    )
    assert result.returncode == 0, result.stderr
    expected = (
        "brainalign fit --config mine/configs/demo.yaml --config mine/configs/demo_long.yaml "
        "--trainer.max_steps 3"
    )
    assert expected in result.stdout
    assert "would write the config mine/configs/demo_long.yaml" in result.stdout
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------- --data
@pytest.mark.parametrize("name", ["demo.yaml", "demo_long.yaml"])
def test_relocated_configs_move_every_data_path_and_nothing_else(name):
    original = yaml.safe_load(packaged(name).read_text())
    relocated = yaml.safe_load(demo.relocated_config_text(packaged(name), Path("/scratch/mine")))
    assert not [text for text in strings(relocated) if text.startswith("data/")]
    brains = demo.brain_specs([relocated])
    assert brains == ["/scratch/mine/simulated/fmri", "/scratch/mine/simulated/meg/sim01-epo.fif"]
    if "data" in original:
        assert relocated["data"]["sources"][0]["path"] == "/scratch/mine/procedural_32px"
    # moving the paths back gives the packaged document
    text = demo.relocated_config_text(packaged(name), Path("/scratch/mine"))
    assert yaml.safe_load(text.replace("/scratch/mine/", "data/")) == original


# ---------------------------------------------------------------------- the simulated subject
@pytest.fixture
def small_demo(monkeypatch):
    """The demo with a small simulated subject (its settings define "up to date")."""
    monkeypatch.setattr(demo, "SIMULATED_SETTINGS", SMALL)


def _specs(data: Path) -> list[str]:
    return [str(data / "simulated" / "fmri"), str(data / "simulated" / "meg" / "sim01-epo.fif")]


def _with_old_image_paths(simulated: Path) -> None:
    """The layout before image paths were resolved inside their table's folder."""
    table = simulated / "fmri" / "stimuli.csv"
    table.write_text(table.read_text().replace(",images/", ",../images/"))


def test_an_out_of_date_simulated_subject_is_recognised(tmp_path, small_demo):
    from brainalign.probe.simulate import simulate_subject

    simulated = tmp_path / "simulated"
    assert "truth.json does not exist" in demo.simulated_subject_problem(simulated, [])
    simulate_subject(simulated, **SMALL)
    assert demo.simulated_subject_problem(simulated, _specs(tmp_path)) is None
    _with_old_image_paths(simulated)
    problem = demo.simulated_subject_problem(simulated, _specs(tmp_path))
    assert "refused by the current readers" in problem and "leaves the table's folder" in problem
    simulate_subject(simulated, **{**SMALL, "n_stimuli": 20}, overwrite=True)
    assert "simulated with {'n_stimuli': 20}" in demo.simulated_subject_problem(
        simulated, _specs(tmp_path)
    )


class FitCalled(Exception):
    """Raised by the stand-in for training."""


@pytest.fixture
def recorded_fit(monkeypatch):
    """Replace training: record the arguments and stop the demo there."""
    from brainalign import cli

    calls: list[list[str]] = []

    def fit(args):
        calls.append(list(args))
        raise FitCalled

    monkeypatch.setattr(cli, "run_lightning", fit)
    return calls


def demo_options(**fields) -> argparse.Namespace:
    defaults = {"preset": "short", "max_steps": None, "data": "data", "keep": False}
    return argparse.Namespace(**{**defaults, "dry_run": False, **fields})


def test_the_demo_rewrites_an_out_of_date_subject_under_data_and_passes_max_steps(
    tmp_path, monkeypatch, small_demo, recorded_fit
):
    from brainalign.probe.formats import load_brain
    from brainalign.probe.simulate import simulate_subject

    monkeypatch.chdir(tmp_path)
    simulate_subject(Path("mine/simulated"), **SMALL)
    _with_old_image_paths(Path("mine/simulated"))
    with pytest.raises(FitCalled):
        demo.run_demo(demo_options(data="mine", max_steps=3))
    assert recorded_fit == [
        ["fit", "--config", "mine/configs/demo.yaml", "--trainer.max_steps", "3"]
    ]
    config = yaml.safe_load(Path("mine/configs/demo.yaml").read_text())
    assert demo.brain_specs([config]) == _specs(Path("mine"))
    for spec in _specs(Path("mine")):
        load_brain(spec)  # the subject was written again, in the current format
    assert not (tmp_path / "data").exists()  # nothing under the default data folder


def test_the_default_data_folder_runs_the_packaged_config(
    tmp_path, monkeypatch, small_demo, recorded_fit
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FitCalled):
        demo.run_demo(demo_options(preset="long"))
    assert recorded_fit == [
        ["fit", "--config", str(packaged("demo.yaml")), "--config", str(packaged("demo_long.yaml"))]
    ]
    assert (tmp_path / "data" / "simulated" / "truth.json").is_file()
    assert not (tmp_path / "data" / "configs").exists()  # no copy of the packaged configs


@pytest.mark.slow
def test_relocated_configs_parse_with_lightning(tmp_path):
    """The copies written for --data are valid LightningCLI configs (types and keys checked)."""
    from test_configs import parse

    paths = []
    for name in demo.PRESETS["long"]:
        path = tmp_path / name
        path.write_text(demo.relocated_config_text(packaged(name), tmp_path / "mine"))
        paths.append(path)
    config = parse(*paths)
    assert config.trainer.max_steps == 5000
    assert config.data.sources[0].path == str(tmp_path / "mine" / "procedural_32px")
