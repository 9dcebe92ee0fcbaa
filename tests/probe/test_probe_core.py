"""The probe core: one extraction per (model, stimulus set), one result per probe block.

fMRI and MEG of the simulated subject show the same images, the MEG data in presentation
order: one probe of both must run the model once over the images, and a second probe through
the feature cache must not run it at all, whatever the order of the data sets, and give the
same scores (cached rows are put back in each caller's order) (issue 10, "Extract once"). And
one probe block gives the same scores through ``brainalign probe --config`` and through the
training callback (issue 10, "Must show").
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from runs import BRAINALIGN, REPO, SMOKE

from brainalign.models import create_backbone, save_teacher_export
from brainalign.probe.config import EncodingConfig, FeatureConfig, ModelSource, ProbeConfig
from brainalign.probe.models import ProbeModel
from brainalign.probe.run import load_targets, probe_model, stimulus_groups
from brainalign.probe.simulate import simulate_subject

N_STIMULI = 60
ROW_KEYS = ["subject", "modality", "feature_kind", "layer", "group", "time", "metric"]


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return simulate_subject(
        tmp_path_factory.mktemp("sim") / "sim", n_stimuli=N_STIMULI, image_size=16, seed=0
    )


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "export"
    return save_teacher_export(create_backbone("vit_tiny_test"), folder, {"step": 0})


@pytest.fixture
def images_forwarded(monkeypatch) -> list[int]:
    """Batch sizes of every ``ProbeModel.extract`` call (one forward pass each)."""
    sizes: list[int] = []
    original = ProbeModel.extract

    def counting(self, images, layers):
        sizes.append(len(images))
        return original(self, images, layers)

    monkeypatch.setattr(ProbeModel, "extract", counting)
    return sizes


def _config(brain, cache_dir=None, **options) -> ProbeConfig:
    return ProbeConfig(
        brain=[str(spec) for spec in brain],
        cache_dir=None if cache_dir is None else str(cache_dir),
        features=FeatureConfig(layers=[0.0, 0.5, 1.0], batch_size=16),
        encoding=EncodingConfig(n_folds=3, backend="numpy", alphas=[1.0, 1e2, 1e4]),
        **options,
    )


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(ROW_KEYS).reset_index(drop=True)


def test_the_meg_data_list_the_same_images_in_another_order(subject):
    # The premise of the tests below: same image set, other order.
    fmri, meg = load_targets(_config([subject.fmri_dir, subject.meg_path]))
    assert fmri.stimuli.ids != meg.stimuli.ids
    assert sorted(fmri.stimuli.ids) == sorted(meg.stimuli.ids)
    assert len(stimulus_groups([fmri, meg])) == 1


def test_fmri_and_meg_of_the_same_images_run_the_model_once(subject, export, images_forwarded):
    probe_model(ModelSource(spec=str(export)), _config([subject.fmri_dir, subject.meg_path]))
    assert sum(images_forwarded) == N_STIMULI, "each image must go through the model once"


@pytest.mark.slow
def test_a_second_probe_reads_the_cache_in_its_own_order(
    subject, export, images_forwarded, tmp_path
):
    source = ModelSource(spec=str(export))
    uncached = probe_model(source, _config([subject.fmri_dir, subject.meg_path]))
    images_forwarded.clear()
    first = probe_model(source, _config([subject.fmri_dir, subject.meg_path], tmp_path))
    assert sum(images_forwarded) == N_STIMULI
    images_forwarded.clear()
    # MEG first: the features are now needed in presentation order, read from the cache
    second = probe_model(source, _config([subject.meg_path, subject.fmri_dir], tmp_path))
    assert sum(images_forwarded) == 0, "every layer was cached: the model must not run"
    pd.testing.assert_frame_equal(_sorted(second.table), _sorted(first.table))
    pd.testing.assert_frame_equal(_sorted(first.table), _sorted(uncached.table))
    meg_only = probe_model(source, _config([subject.meg_path], tmp_path))
    assert sum(images_forwarded) == 0
    meg_rows = first.table[first.table["modality"] == "meg"]
    pd.testing.assert_frame_equal(_sorted(meg_only.table), _sorted(meg_rows))


def test_a_stimulus_subset_is_the_same_for_data_sets_of_the_same_images(
    subject, export, images_forwarded
):
    config = _config([subject.fmri_dir, subject.meg_path], max_stimuli=40)
    fmri, meg = load_targets(config)
    assert sorted(fmri.stimuli.ids) == sorted(meg.stimuli.ids)
    probe_model(ModelSource(spec=str(export)), config)
    assert sum(images_forwarded) == 40


# ---------------------------------------------------------------------------- CLI = callback
def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``brainalign ARGS`` in ``cwd`` on this checkout's sources (fit helpers importable)."""
    path = os.pathsep.join([str(REPO / "src"), str(REPO / "tests" / "support")])
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    result = subprocess.run(
        [str(BRAINALIGN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"brainalign {args[0]} failed:\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_one_probe_block_gives_the_same_scores_in_the_cli_and_the_callback(tmp_path):
    # The same YAML block in `brainalign probe --config` and in the callback's
    # init_args.probe, on the same weights (the step-0 teacher, probed by the callback and
    # exported) and stimuli, must give identical scores. Pooling, final norm, preprocessing
    # and alphas are left to the shared defaults on purpose: they used to differ.
    subject = simulate_subject(tmp_path / "sim", n_stimuli=N_STIMULI, image_size=32, seed=0)
    block = {
        "brain": [str(subject.fmri_dir), str(subject.meg_path)],
        "features": {"layers": [0.0, 0.5, 1.0], "batch_size": 16},
        "encoding": {"n_folds": 3, "backend": "numpy"},
    }
    callbacks = [
        {
            "class_path": "brainalign.callbacks.LogSpacedCheckpoint",
            "init_args": {"n_checkpoints": 1},
        },
        {
            "class_path": "brainalign.callbacks.BrainProbeCallback",
            "init_args": {
                "probe": block,
                "schedule": "fractions",
                "fractions": [0.0],
                "log_figures": False,
            },
        },
    ]
    (tmp_path / "fit.yaml").write_text(
        yaml.safe_dump({"trainer": {"max_steps": 1, "callbacks": callbacks}})
    )
    _run(tmp_path, "fit", "--config", str(SMOKE), "--config", "fit.yaml")
    run_dir = tmp_path / "runs" / "smoke"
    export = run_dir / "exports" / "step_0000000"
    (tmp_path / "probe.yaml").write_text(
        yaml.safe_dump({"model": {"spec": str(export)}, "probe": block})
    )
    _run(tmp_path, "probe", "--config", "probe.yaml", "--out", "out")

    chronology = pd.read_parquet(run_dir / "chronology.parquet")
    from_callback = chronology[chronology["step"] == 0]
    from_cli = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    columns = [
        column
        for column in from_cli.columns
        if column in from_callback.columns and column != "model"
    ]
    assert {"value", "metric", "layer", "group"} <= set(columns)
    assert len(from_cli) == len(from_callback) > 0
    assert set(from_cli["modality"]) == {"fmri", "meg"}
    pd.testing.assert_frame_equal(
        _sorted(from_cli[columns]), _sorted(from_callback[columns]), check_exact=True
    )


@pytest.mark.parametrize(
    ("score", "peak_times", "expected"),
    [
        (0.5, [0.1, 0.2, 0.3], "temporal 0.50"),
        (
            float("nan"),
            [0.115, 0.115, 0.115, 0.115],
            "temporal undefined (every layer peaks at 115 ms)",
        ),
        (float("nan"), [float("nan")] * 4, "temporal undefined (no layer has a positive peak)"),
        (float("nan"), [0.1, 0.1], "temporal undefined (needs 3+ layers)"),
    ],
)
def test_the_summary_line_says_why_a_temporal_score_is_undefined(score, peak_times, expected):
    from brainalign.probe.run import _metric_line

    entry = {"score": 0.1, "best_depth": 1.0, "temporal_score": score, "t_max": peak_times}
    assert _metric_line("encoding", entry) == f"encoding 0.100 (best depth 1.00), {expected}"
