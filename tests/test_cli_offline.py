"""The offline subcommands through the real console script: simulate, probe, chronology.

Every command runs as a subprocess of ``.venv/bin/brainalign`` in a temporary folder, on the
simulated subject (120 stimuli, 32 px) and tiny ViT exports, with the numpy ridge backend.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

BRAINALIGN = Path(sys.executable).parent / "brainalign"
FAST = ("--n-folds", "3", "--backend", "numpy")
WINDOWS = {"80-130ms", "130-180ms", "500-550ms"}


def brainalign(cwd: Path, *args: object, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``brainalign ARGS`` in ``cwd``; with ``check``, fail the test on a non-zero exit."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    result = subprocess.run(
        [str(BRAINALIGN), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"brainalign {args} exited with {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return result


def save_exports(folder: Path, seed: int) -> list[Path]:
    """Exports of one run: steps 0, 5, 10 (fractions 0, 0.5, 1), weights drifting between them."""
    from brainalign.models import create_backbone, save_teacher_export

    torch.manual_seed(seed)
    backbone = create_backbone("vit_tiny_test").eval()
    paths = []
    for step, fraction in ((0, 0.0), (5, 0.5), (10, 1.0)):
        if step:
            with torch.no_grad():
                for parameter in backbone.parameters():
                    parameter.add_(0.2 * torch.randn_like(parameter))
        path = folder / "exports" / f"step_{step:07d}"
        save_teacher_export(backbone, path, {"step": step, "train_fraction": fraction})
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A teacher export of the tiny ViT."""
    from brainalign.models import create_backbone, save_teacher_export

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "export"
    return save_teacher_export(create_backbone("vit_tiny_test"), path, {"step": 0})


@pytest.fixture(scope="module")
def small_sim(tmp_path_factory) -> Path:
    """A simulated subject with 60 stimuli of 16 px (written in-process: for bad-input tests)."""
    from brainalign.probe.simulate import simulate_subject

    folder = tmp_path_factory.mktemp("small") / "sim60"
    simulate_subject(folder, n_stimuli=60, image_size=16)
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, export) -> Path:
    """``sim/`` (the simulated subject, written by the CLI) and ``export/`` (a tiny ViT)."""
    folder = tmp_path_factory.mktemp("cli")
    brainalign(folder, "simulate", "--out", "sim", "--n-stimuli", 120)
    shutil.copytree(export, folder / "export")
    return folder


@pytest.fixture(scope="module")
def probed(workspace) -> Path:
    """``out/``: one probe of ``export`` against the simulated fMRI and MEG data."""
    brainalign(
        workspace,
        *("probe", "--model", "export", "--out", "out", "--cache-dir", "cache"),
        *("--brain", "sim/fmri", "--brain", "sim/meg/sim01-epo.fif", *FAST),
    )
    return workspace / "out"


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


# ---------------------------------------------------------------------- probe
@pytest.mark.slow
def test_probe_writes_scores_summary_and_figures_then_reuses_its_cache(workspace, probed):
    from brainalign.probe.pipeline import COLUMNS

    scores = pd.read_parquet(probed / "scores.parquet")
    assert set(COLUMNS) | {"model"} <= set(scores.columns)
    assert set(scores["modality"]) == {"fmri", "meg"}
    rois = set(pd.read_csv(workspace / "sim" / "fmri" / "rois.csv")["roi"])
    fmri_r = scores[(scores["modality"] == "fmri") & (scores["metric"] == "r")]
    assert set(fmri_r.loc[fmri_r["layer"] >= 0, "group"]) == rois | {"all"}
    meg_r = scores[(scores["modality"] == "meg") & (scores["metric"] == "r")]
    assert WINDOWS | {"time", "all"} == set(meg_r["group"])
    assert set(scores["layer"]) == {-1, 0, 1, 2, 3}  # the tiny ViT's 4 blocks + summaries

    text = (probed / "summary.json").read_text()
    assert "NaN" not in text  # strict JSON: NaN is written as null
    summary = json.loads(text)
    results = {entry["modality"]: entry for entry in summary["results"]}
    assert set(results) == {"fmri", "meg"}
    for modality, key in (("fmri", "spatial_score"), ("meg", "temporal_score")):
        value = results[modality][key]
        assert value is None or math.isfinite(value)
    assert math.isfinite(results["fmri"]["encoding_score"])

    figures = sorted(path.name for path in (probed / "figures").glob("*.png"))
    assert any("fmri" in name for name in figures) and any("meg" in name for name in figures)
    assert all((probed / "figures" / name).stat().st_size > 0 for name in figures)

    cached = _files(workspace / "cache")
    assert cached, "the first run should fill the feature cache"
    brainalign(
        workspace,
        *("probe", "--model", "export", "--out", "out2", "--cache-dir", "cache"),
        *("--brain", "sim/fmri", "--brain", "sim/meg/sim01-epo.fif", *FAST),
    )
    assert _files(workspace / "cache") == cached  # nothing new written: features were reused
    pd.testing.assert_frame_equal(pd.read_parquet(workspace / "out2" / "scores.parquet"), scores)


# ---------------------------------------------------------------------- chronology
@pytest.mark.slow
def test_chronology_probes_a_folder_of_exports(workspace):
    save_exports(workspace / "run_a", seed=1)
    # an export left half-written by a killed run (hidden temporary name) is not a probe
    from brainalign.models import create_backbone, save_teacher_export

    save_teacher_export(
        create_backbone("vit_tiny_test"),
        workspace / "run_a" / "exports" / ".step_0000007.tmp",
        {"step": 7, "train_fraction": 0.7},
    )

    brainalign(
        workspace,
        *("chronology", "run_a", "--out", "report_a", "--cache-dir", "cache"),
        *("--brain", "sim/fmri", "--brain", "sim/meg/sim01-epo.fif", *FAST),
    )
    report = workspace / "report_a"
    times = pd.read_csv(report / "half_times.csv")
    assert set(times["run"]) == {"run_a"}
    rois = set(pd.read_csv(workspace / "sim" / "fmri" / "rois.csv")["roi"])
    fmri = times[times["modality"] == "fmri"]
    assert set(fmri["curve"]) >= {f"roi/{roi}" for roi in rois} | {"encoding", "spatial_score"}
    meg = times[times["modality"] == "meg"]
    assert set(meg["curve"]) >= {f"window/{window}" for window in WINDOWS} | {"encoding"}
    roi_rows = times[times["curve"].str.startswith("roi/")]
    assert (roi_rows["n_probes"] == 3).all()
    assert set(pd.read_csv(report / "curves.csv")["step"]) == {0, 5, 10}
    finite = times["half_time"].dropna()
    assert ((finite >= 0) & (finite <= 1)).all()

    summary = json.loads((report / "summary.json").read_text())
    entry = summary["run_a"]["sim01/fmri/activation"]
    assert set(entry["roi_half_time"]) == rois
    assert {"distance_from_v1", "expansion", "myelin"} <= set(entry["roi_half_time_correlations"])
    assert "encoding" in summary["run_a"]["sim01/meg/activation"]
    assert (report / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_chronology_compares_runs(workspace, probed):
    from brainalign.probe.rois import distance_from_v1

    save_exports(workspace / "run_b", seed=2)
    save_exports(workspace / "other" / "run_b", seed=4)  # same name: named by its path
    # run_d: a training run folder as BrainProbeCallback leaves it (nothing to probe)
    scores = pd.read_parquet(probed / "scores.parquet")
    steps = []
    for step, fraction in ((0, 0.0), (50, 0.5), (100, 1.0)):
        rows = scores.assign(step=step, train_fraction=fraction, status="ok", error="")
        rows["value"] = rows["value"] * (0.2 + fraction)
        steps.append(rows)
    run_d = workspace / "run_d"
    (run_d / "brain_rois").mkdir(parents=True)
    pd.concat(steps).to_parquet(run_d / "chronology.parquet", index=False)
    rois = pd.read_csv(workspace / "sim" / "fmri" / "rois.csv")
    rois["distance_from_v1"] = rois["roi"].map(distance_from_v1(rois))
    rois.to_csv(run_d / "brain_rois" / "sim01.csv", index=False)

    brainalign(
        workspace,
        *("chronology", "run_b", "other/run_b/exports", "run_d", "--out", "compare"),
        *("--brain", "sim/fmri", "--brain", "sim/meg/sim01-epo.fif", *FAST),
        *("--cache-dir", "cache"),
    )
    times = pd.read_csv(workspace / "compare" / "half_times.csv")
    runs = {"run_b", "other/run_b/exports", "run_d"}
    assert set(times["run"]) == runs
    curves = pd.read_csv(workspace / "compare" / "curves.csv")
    assert set(curves.loc[curves["run"] == "run_d", "step"]) == {0, 50, 100}
    summary = json.loads((workspace / "compare" / "summary.json").read_text())
    assert set(summary) == runs
    correlations = summary["run_d"]["sim01/fmri/activation"]["roi_half_time_correlations"]
    assert "distance_from_v1" in correlations
    assert (workspace / "compare" / "curves.png").is_file()
    distance_figures = sorted(path.name for path in (workspace / "compare").glob("half_time_vs*"))
    assert len(distance_figures) == 3  # one per run, the path-named one included


# ---------------------------------------------------------------------- bad input
def _fails_cleanly(cwd: Path, *args: object, expected: str) -> str:
    """Run a command that must fail: one clear message, no traceback, nothing left behind."""
    before = sorted(path.name for path in cwd.iterdir())
    result = brainalign(cwd, *args, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "error:" in result.stderr
    assert expected in result.stderr, result.stderr
    assert sorted(path.name for path in cwd.iterdir()) == before  # no output, no temp folder
    return result.stderr


def test_a_missing_brain_path_is_named(tmp_path, export):
    stderr = _fails_cleanly(
        tmp_path,
        *("probe", "--model", export, "--out", "out", "--brain", "no_such_folder"),
        expected="brain data not found: no_such_folder",
    )
    assert "responses.npy" in stderr  # says what was expected


def test_an_unknown_brain_format_is_named(tmp_path, export):
    (tmp_path / "responses.txt").write_text("1 2 3\n")
    stderr = _fails_cleanly(
        tmp_path,
        *("probe", "--model", export, "--out", "out", "--brain", "responses.txt"),
        expected="unknown brain data format: responses.txt",
    )
    assert "-epo.fif" in stderr


def test_an_existing_output_folder_is_kept_without_overwrite(tmp_path, export, small_sim):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    _fails_cleanly(
        tmp_path,
        *("probe", "--model", export, "--out", "out", "--brain", small_sim / "fmri"),
        expected="out exists; pass --overwrite",
    )
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["keep.txt"]
    runs = tmp_path / "runs"
    runs.mkdir()
    _fails_cleanly(tmp_path, "chronology", runs, "--out", "out", expected="pass --overwrite")


def test_fewer_stimuli_than_folds_is_refused(tmp_path, export, small_sim):
    _fails_cleanly(
        tmp_path,
        *("probe", "--model", export, "--out", "out", "--n-folds", 50),
        *("--brain", small_sim / "fmri"),
        expected="60 stimuli are too few for 50 folds",
    )


def test_meg_epochs_without_stimulus_ids_are_refused(tmp_path, export):
    import mne

    info = mne.create_info(["MEG0111", "MEG0121"], sfreq=100.0, ch_types="mag")
    data = np.random.default_rng(0).normal(0, 1e-13, (6, 2, 20))
    mne.EpochsArray(data, info, tmin=-0.1, verbose="error").save(
        tmp_path / "nometa-epo.fif", verbose="error"
    )
    _fails_cleanly(
        tmp_path,
        *("probe", "--model", export, "--out", "out", "--brain", "nometa-epo.fif"),
        expected="'stimulus_id' column",
    )


def test_a_damaged_meg_file_is_named(tmp_path, export, small_sim):
    damaged = tmp_path / "damaged-epo.fif"
    source = small_sim / "meg" / "sim01-epo.fif"
    damaged.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    _fails_cleanly(
        tmp_path,
        *("probe", "--model", export, "--out", "out", "--brain", "damaged-epo.fif"),
        expected="damaged-epo.fif: cannot read an MNE Epochs .fif file",
    )


@pytest.mark.slow
def test_an_unknown_model_spec_lists_the_accepted_forms(tmp_path, small_sim):
    stderr = _fails_cleanly(
        tmp_path,
        *("probe", "--model", "not_a_model.bin", "--out", "out"),
        *("--brain", small_sim / "fmri", *FAST),
        expected="cannot load a model from 'not_a_model.bin'",
    )
    assert "timm:" in stderr  # the accepted specs are listed


# ---------------------------------------------------------------------- one writer per --out
#: The console script's entry point with a brain data set that takes until it is killed to read
#: (a registered loader that sleeps): a command that holds its --out for as long as needed.
SLOW_READER = """
import sys, time
from brainalign.probe.formats import register_brain_loader
register_brain_loader("slow", lambda location, **options: time.sleep(3600))
from brainalign.cli import main
main(sys.argv[1:])
"""


def _wait_for_temporary(folder: Path, name: str, process: subprocess.Popen) -> Path:
    """The hidden temporary folder of ``folder/name`` once ``process`` has created it."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = sorted(folder.glob(f".{name}.tmp-*"))
        if found:
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}: {process.stderr.read()}")
        time.sleep(0.1)
    raise TimeoutError(f"no temporary folder for {name} appeared")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["probe", "chronology"])
def test_one_writer_per_out_and_a_killed_writers_temporary_is_removed(
    tmp_path, export, small_sim, command
):
    """A second command writing the same --out fails at once, even with --overwrite, while
    the first still runs (reading its brain data); once the first is killed mid-run, the next
    run removes its temporary folder and writes --out."""
    shutil.copytree(export, tmp_path / "run" / "exports" / "step_0000000")
    target = ["--model", str(export)] if command == "probe" else ["run"]

    def arguments(brain: Path) -> list[str]:
        return [command, *target, "--brain", str(brain), "--out", "out", *FAST]

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_READER, *arguments(Path("slow:subject"))],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        temporary = _wait_for_temporary(tmp_path, "out", first)
        assert f"-{first.pid}-" in temporary.name
        for extra in ((), ("--overwrite",)):
            second = brainalign(tmp_path, *arguments(small_sim / "fmri"), *extra, check=False)
            assert second.returncode == 2, second.stderr
            assert len([line for line in second.stderr.splitlines() if line.strip()]) == 1
            assert "out is being written by another process" in second.stderr
            assert f"pid {first.pid}" in second.stderr
            assert first.poll() is None  # the second failed while the first ran
    finally:
        first.kill()
        first.wait(timeout=60)
    assert temporary.is_dir() and not (tmp_path / "out").exists()  # what a kill leaves

    brainalign(tmp_path, *arguments(small_sim / "fmri"))
    written = "scores.parquet" if command == "probe" else "half_times.csv"
    assert (tmp_path / "out" / written).is_file()
    assert not list(tmp_path.glob(".out.*"))  # the killed run's temporary is gone


# ---------------------------------------------------------------------- error dispatch
def _probe_with_loader(monkeypatch, tmp_path, error: BaseException) -> None:
    """Run ``main(["probe", ...])`` in-process with a brain loader that raises ``error``."""
    from brainalign import cli
    from brainalign.probe import formats

    def loader(location, **options):
        raise error

    monkeypatch.setitem(formats._PREFIX_LOADERS, "failing", loader)
    # A valid model spec: the spec is checked before any brain data is read.
    model = ["--model", "timm:resnet18", "--weights", "random"]
    cli.main(["probe", *model, "--brain", "failing:x", "--out", str(tmp_path / "out")])


def test_a_key_error_from_id_alignment_is_one_clean_line(monkeypatch, tmp_path, capsys):
    error = KeyError("stimulus ids missing from images: 'a7', 'b2' (2 of 9)")
    with pytest.raises(SystemExit) as exit_info:
        _probe_with_loader(monkeypatch, tmp_path, error)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr == (
        "brainalign probe: error: stimulus ids missing from images: 'a7', 'b2' (2 of 9)\n"
    )
    assert not (tmp_path / "out").exists()


def test_an_unexpected_error_keeps_its_traceback(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="a bug"):
        _probe_with_loader(monkeypatch, tmp_path, RuntimeError("a bug"))
