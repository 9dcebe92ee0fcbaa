"""``brainalign probe`` and ``brainalign chronology`` with ``--probe.metrics [encoding, rsa, cka]``.

Through the real console script, on the simulated subject (120 stimuli, 32 px) and tiny ViT
exports: the rows of every metric, their figures (files present, non-empty, one panel per
metric) and their chronology curves; a metric that needs repeats on data without them fails
with one line before any feature is extracted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

BRAINALIGN = Path(sys.executable).parent / "brainalign"
FAST = ("--n-folds", "3", "--backend", "numpy", "--cache-dir", "")
METRICS = ("--probe.metrics", "[encoding, rsa, cka]")
BRAIN = ("--brain", "sim/fmri", "--brain", "sim/meg/sim01-epo.fif")


def brainalign(cwd: Path, *args: object) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run(
        [str(BRAINALIGN), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def checked(cwd: Path, *args: object) -> subprocess.CompletedProcess:
    result = brainalign(cwd, *args)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    from brainalign.models import create_backbone, save_teacher_export
    from brainalign.probe.simulate import simulate_subject

    folder = tmp_path_factory.mktemp("metrics")
    simulate_subject(folder / "sim", n_stimuli=120, image_size=32)
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny_test").eval()
    for step, fraction in ((0, 0.0), (10, 1.0)):
        if step:
            with torch.no_grad():
                for parameter in backbone.parameters():
                    parameter.add_(0.2 * torch.randn_like(parameter))
        save_teacher_export(
            backbone, folder / "run" / "exports" / f"step_{step:07d}",
            {"step": step, "train_fraction": fraction},
        )  # fmt: skip
    return folder


@pytest.mark.slow
def test_probe_writes_every_metrics_rows_and_figures(workspace):
    from brainalign.probe.report import probe_figures

    model = workspace / "run" / "exports" / "step_0000010"
    result = checked(workspace, "probe", "--model", model, "--out", "out", *BRAIN, *FAST, *METRICS)
    assert "rsa " in result.stdout and "cka " in result.stdout  # the summary lines
    table = pd.read_parquet(workspace / "out" / "scores.parquet")
    rois = set(pd.read_csv(workspace / "sim" / "fmri" / "rois.csv")["roi"])
    for metric in ("r", "rsa", "cka"):
        fmri = table[(table["metric"] == metric) & (table["modality"] == "fmri")]
        assert set(fmri["group"]) == rois | {"all"} and set(fmri["layer"]) == {0, 1, 2, 3}
        meg = table[(table["metric"] == metric) & (table["modality"] == "meg")]
        assert set(meg["group"]) == {"all", "time", "80-130ms", "130-180ms", "500-550ms"}
    summary_rows = set(table.loc[table["layer"] == -1, "metric"])
    assert {"score_rsa", "spatial_score_rsa", "best_depth_cka", "temporal_score_cka"} <= (
        summary_rows
    )
    assert {"t_max_rsa", "noise_ceiling", "noise_ceiling_r", "rsa_noise_ceiling"} <= summary_rows
    results = json.loads((workspace / "out" / "summary.json").read_text())["results"]
    assert all(set(entry["metrics"]) == {"rsa", "cka"} for entry in results)

    folder = workspace / "out" / "figures"
    names = {path.name: path.stat().st_size for path in folder.glob("*.png")}
    expected = {
        f"sim01_fmri_activation_{name}.png"
        for name in ("roi_heatmap", "metric_heatmaps", "brain_map")
    } | {
        f"sim01_meg_activation_{name}.png"
        for name in ("meg_time_courses", "metric_time_courses", "topomap")
    }
    assert set(names) == expected and min(names.values()) > 5_000
    fmri = table[table["modality"] == "fmri"]
    figures = dict(probe_figures(fmri, None))
    heatmaps = [axis for axis in figures["metric_heatmaps"].axes if axis.images]
    assert [axis.get_title() for axis in heatmaps] == ["encoding R", "RSA", "CKA"]


@pytest.mark.slow
def test_chronology_of_exports_has_every_metrics_curves(workspace):
    checked(workspace, "chronology", "run", "--out", "report", *BRAIN, *FAST, *METRICS)
    curve_table = pd.read_csv(workspace / "report" / "curves.csv")
    names = set(curve_table["curve"])
    # (the temporal scores of a tiny ViT are NaN, its layers all peak at one time: no curve)
    assert {"encoding", "spatial_score", "roi/V1", "window/80-130ms"} <= names
    assert {"rsa", "rsa/spatial_score", "rsa/roi/V1", "cka/window/80-130ms"} <= names
    half_times = pd.read_csv(workspace / "report" / "half_times.csv")
    assert {"rsa/spatial_score", "cka"} <= set(half_times["curve"])
    assert (curve_table.groupby("curve")["step"].nunique() == 2).all()  # both exports


@pytest.mark.slow
def test_a_metric_needing_repeats_fails_in_one_line_before_extraction(workspace, tmp_path):
    from brainalign.probe.simulate import simulate_subject

    simulate_subject(tmp_path / "once", n_stimuli=30, image_size=16, n_repeats=1)
    model = workspace / "run" / "exports" / "step_0000000"
    result = brainalign(
        tmp_path, "probe", "--model", model, "--out", "out", "--brain", "once/fmri",
        *FAST, "--probe.metrics", "[encoding, cka_cv]",
    )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].endswith("or choose another metric"), result.stderr[-2000:]
    assert "once/fmri: metrics: cka_cv needs single repeats" in lines[-1]
    assert "Traceback" not in result.stderr and "features" not in result.stderr
    assert not (tmp_path / "out").exists()
