"""BrainProbeCallback in real `brainalign fit` runs: TensorBoard, chronology, resume, DDP."""

from __future__ import annotations

import lightning as L
import pandas as pd
import pytest
from runs import run_fit, scalar_tags

from brainalign.callbacks import BrainProbeCallback, probe_steps
from brainalign.probe.config import FeatureConfig, ProbeConfig
from brainalign.probe.simulate import simulate_subject

SCHEDULED = [0, 1, 2, 4, 8]  # log schedule, 4 points over 8 steps, plus step 0
ROW_KEYS = ["step", "subject", "modality", "feature_kind", "layer", "group", "time", "metric"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("subject")
    return simulate_subject(root / "sim", n_stimuli=100, image_size=32, seed=0)


def callback_config(simulated, class_path="brainalign.callbacks.BrainProbeCallback", **extra):
    return {
        "class_path": class_path,
        "init_args": {
            "brain": [str(simulated.fmri_dir), str(simulated.meg_path)],
            "probe": {
                "max_stimuli": 80,
                "features": {"pooling": "cls"},
                "encoding": {"n_folds": 4, "backend": "numpy"},
            },
            "n_probes": 4,
            **extra,
        },
    }


def overrides(simulated, *callbacks, **trainer):
    base = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 2},
        },
    ]
    return {"trainer": {"callbacks": base + list(callbacks), **trainer}}


def test_probe_schedules():
    assert probe_steps(8, schedule="log", n_probes=4, every_n_steps=1, fractions=None) == SCHEDULED
    assert probe_steps(10, schedule="every", n_probes=1, every_n_steps=4, fractions=None) == [
        0,
        4,
        8,
        10,
    ]
    assert probe_steps(
        100, schedule="fractions", n_probes=1, every_n_steps=1, fractions=[0.1, 0.5]
    ) == [0, 10, 50]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="brain is empty"):
        BrainProbeCallback(brain=[])
    with pytest.raises(ValueError, match="unknown feature kinds"):
        FeatureConfig(kinds=["activations"])


@pytest.mark.slow
def test_fit_with_callback_logs_every_scheduled_probe(tmp_path, simulated):
    run_fit(tmp_path, overrides=overrides(simulated, callback_config(simulated)))
    run_dir = tmp_path / "runs" / "smoke"
    tags = scalar_tags(run_dir)
    for tag in (
        "brain/sim01/fmri/encoding",
        "brain/sim01/fmri/roi/V1",
        "brain/sim01/fmri/spatial_score",
        "brain/sim01/meg/encoding",
        "brain/sim01/meg/temporal_score",
        "brain/sim01/meg/window/80-130ms",
    ):
        assert tag in tags, f"{tag} missing; have {sorted(t for t in tags if 'brain' in t)}"
        assert [step for step, _ in tags[tag]] == SCHEDULED, tag
    fraction_steps = [step for step, _ in tags["brain_vs_fraction/sim01/fmri/encoding"]]
    assert fraction_steps == [0, 125, 250, 500, 1000]
    chronology = pd.read_parquet(run_dir / "chronology.parquet")
    assert sorted(chronology["step"].unique()) == SCHEDULED
    assert set(chronology["status"]) == {"ok"}
    assert set(chronology["modality"]) == {"fmri", "meg"}
    assert chronology.duplicated(ROW_KEYS).sum() == 0
    assert (run_dir / "brain_rois" / "sim01.csv").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    assert "custom_scalars__config__" in accumulator.PluginTagToContent("custom_scalars")
    layout = accumulator.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    assert b"^brain/sim01/fmri/roi/" in layout and b"^brain/sim01/meg/window/" in layout
    hparams = accumulator.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    assert b"model_size" in hparams["_hparams_/session_start_info"]
    assert b"brain/sim01/fmri/spatial_score" in hparams["_hparams_/experiment"]
    assert any(tag.startswith("brain_figures/sim01/fmri") for tag in accumulator.Tags()["images"])
    # figures at the first probe, every third one and the last
    heatmaps = accumulator.Images("brain_figures/sim01/fmri/layer_x_roi")
    assert [image.step for image in heatmaps] == [0, 4, 8]


@pytest.mark.slow
def test_failed_probe_is_recorded_and_training_goes_on(tmp_path, simulated):
    failing = callback_config(simulated, "fit_helpers.FailingBrainProbe", fail_at_steps=[2])
    run_fit(tmp_path, overrides=overrides(simulated, failing))
    run_dir = tmp_path / "runs" / "smoke"
    chronology = pd.read_parquet(run_dir / "chronology.parquet")
    failed = chronology[chronology["status"] == "failed"]
    assert list(failed["step"]) == [2]
    assert "non-finite features" in failed["error"].iloc[0]
    ok_steps = sorted(chronology.loc[chronology["status"] == "ok", "step"].unique())
    assert ok_steps == [0, 1, 4, 8], "probes after the failure must go on"
    tags = scalar_tags(run_dir)
    assert [step for step, _ in tags["brain/probe_failed"]] == [2]
    assert len(tags["train/loss"]) == 8


@pytest.mark.slow
def test_strict_probe_failure_stops_training(tmp_path, simulated):
    failing = callback_config(
        simulated, "fit_helpers.FailingBrainProbe", fail_at_steps=[1], strict=True
    )
    result = run_fit(tmp_path, overrides=overrides(simulated, failing), check=False)
    assert result.returncode != 0
    assert "brain probe failed at step 1 (strict=True)" in result.stderr


@pytest.mark.slow
def test_kill_and_resume_keeps_one_row_set_per_scheduled_step(tmp_path, simulated):
    kill = {"class_path": "fit_helpers.KillAtStep", "init_args": {"step": 5}}
    killed = run_fit(
        tmp_path, overrides=overrides(simulated, callback_config(simulated), kill), check=False
    )
    assert killed.returncode == 17, killed.stderr[-2000:]
    run_dir = tmp_path / "runs" / "smoke"
    before = pd.read_parquet(run_dir / "chronology.parquet")
    assert sorted(before["step"].unique()) == [0, 1, 2, 4]
    run_fit(
        tmp_path, "--ckpt_path", "last", overrides=overrides(simulated, callback_config(simulated))
    )
    chronology = pd.read_parquet(run_dir / "chronology.parquet")
    assert sorted(chronology["step"].unique()) == SCHEDULED
    assert chronology.duplicated(ROW_KEYS).sum() == 0
    # the resumed run did not probe step 4 again: its rows are the ones written before the kill
    step4_before = before[before["step"] == 4].sort_values(ROW_KEYS).reset_index(drop=True)
    step4_after = chronology[chronology["step"] == 4].sort_values(ROW_KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(step4_before, step4_after)


@pytest.mark.slow
def test_ddp_two_processes_gather_the_same_features_as_one(tmp_path, simulated):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir()
    ddp.mkdir()
    config = callback_config(simulated, n_probes=1)
    run_fit(single, overrides=overrides(simulated, config, max_steps=2))
    run_fit(ddp, overrides=overrides(simulated, config, max_steps=2, devices=2, strategy="ddp"))
    rows = [pd.read_parquet(folder / "runs/smoke/chronology.parquet") for folder in (single, ddp)]
    first = [
        table[table["step"] == 0].sort_values(ROW_KEYS).reset_index(drop=True) for table in rows
    ]
    assert len(first[0]) > 0
    pd.testing.assert_series_equal(first[0]["value"], first[1]["value"], atol=1e-5, rtol=1e-4)
    assert sorted(rows[1]["step"].unique()) == [0, 1, 2]


def test_callback_skips_under_fast_dev_run(tmp_path, simulated):
    from brainalign.train.data import DataSource, SSLDataModule
    from brainalign.train.module import DINOv3Module, HeadConfig

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    from brainalign.synthetic.images import generate_images

    for index, image in enumerate(generate_images(8, size=32, seed=0)[0]):
        Image.fromarray(image).save(images / f"{index}.png")
    head = HeadConfig(n_prototypes=32, hidden_dim=32, bottleneck_dim=16)
    callback = BrainProbeCallback(
        brain=[str(simulated.fmri_dir)], probe=ProbeConfig(max_stimuli=20)
    )
    trainer = L.Trainer(
        fast_dev_run=True,
        callbacks=[callback],
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        max_steps=2,
    )
    data = SSLDataModule(
        sources=[DataSource(str(images), kind="folder")],
        batch_size=4,
        num_workers=0,
        global_size=32,
        local_size=16,
        n_local_crops=0,
    )
    trainer.fit(DINOv3Module(dino_head=head, ibot_head=head), datamodule=data)
    assert callback.done_steps == []
    assert not list(tmp_path.rglob("chronology.parquet"))


@pytest.mark.slow
def test_bootstrap_probe_gives_intervals_and_half_time_intervals(tmp_path, simulated):
    from brainalign.commands.chronology import load_runs, write_report

    config = callback_config(simulated, log_figures=False)
    config["init_args"]["probe"]["bootstrap"] = {"n_resamples": 40, "seed": 1}
    run_fit(tmp_path, overrides=overrides(simulated, config))
    run_dir = tmp_path / "runs" / "smoke"
    chronology = pd.read_parquet(run_dir / "chronology.parquet")
    scores = chronology[chronology["metric"].isin(["encoding_score", "spatial_score"])]
    assert scores[["ci_low", "ci_high"]].notna().all().all()
    assert (scores["ci_low"] <= scores["ci_high"]).all()
    replicates = pd.read_parquet(run_dir / "chronology_replicates.parquet")
    assert sorted(replicates["step"].unique()) == SCHEDULED
    assert replicates.groupby(["step", "subject", "modality", "curve"]).size().eq(40).all()
    tables, rois, resamples = load_runs([run_dir], ProbeConfig())
    _, times = write_report(
        tables, rois, tmp_path / "report", overwrite=False, replicates=resamples
    )
    assert {"half_time_ci_low", "half_time_ci_high", "n_resamples"} <= set(times.columns)
    assert times["n_resamples"].eq(40).all()
    finite = times.dropna(subset=["half_time_ci_low", "half_time_ci_high"])
    assert len(finite) > 0 and (finite["half_time_ci_low"] <= finite["half_time_ci_high"]).all()
