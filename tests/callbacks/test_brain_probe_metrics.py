"""BrainProbeCallback with ``probe.metrics: [encoding, rsa, cka]`` in a real `brainalign fit`."""

from __future__ import annotations

import pandas as pd
import pytest
from runs import run_fit, scalar_tags

from brainalign.probe.simulate import simulate_subject

SCHEDULED = [0, 1, 4]  # log schedule, 2 points over 4 steps, plus step 0


@pytest.mark.slow
def test_every_metric_is_logged_at_every_probe_with_its_figures(tmp_path):
    simulated = simulate_subject(tmp_path / "sim", n_stimuli=80, image_size=32, seed=0)
    callback = {
        "class_path": "brainalign.callbacks.BrainProbeCallback",
        "init_args": {
            "brain": [str(simulated.fmri_dir), str(simulated.meg_path)],
            "probe": {
                "features": {"pooling": "cls"},
                "encoding": {"n_folds": 4, "backend": "numpy"},
                "metrics": ["encoding", "rsa", "cka"],
            },
            "n_probes": 2,
        },
    }
    run_fit(tmp_path, "--trainer.max_steps", "4", overrides={"trainer": {"callbacks": [callback]}})
    run_dir = tmp_path / "runs" / "smoke"
    tags = scalar_tags(run_dir)
    for tag in (
        "brain/sim01/fmri/encoding",
        "brain/sim01/fmri/rsa",
        "brain/sim01/fmri/rsa/spatial_score",
        "brain/sim01/fmri/cka/roi/V1",
        "brain/sim01/meg/cka/temporal_score",
        "brain/sim01/meg/rsa/window/80-130ms",
    ):
        assert tag in tags, f"{tag} missing; have {sorted(t for t in tags if 'brain' in t)}"
        assert [step for step, _ in tags[tag]] == SCHEDULED, tag
    fractions = [step for step, _ in tags["brain_vs_fraction/sim01/fmri/rsa/spatial_score"]]
    assert fractions == [0, 250, 1000]  # per mille
    chronology = pd.read_parquet(run_dir / "chronology.parquet")
    last = chronology[(chronology["step"] == 4) & (chronology["modality"] == "fmri")]
    score = last.loc[last["metric"] == "spatial_score_rsa", "value"].iloc[0]
    assert tags["brain/sim01/fmri/rsa/spatial_score"][-1][1] == pytest.approx(score, nan_ok=True)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    images = set(accumulator.Tags()["images"])
    assert {
        "brain_figures/sim01/fmri/layer_x_roi",
        "brain_figures/sim01/fmri/metric_heatmaps",
        "brain_figures/sim01/meg/metric_time_courses",
        "brain_figures/sim01/meg/topomap",
    } <= images
    layout = accumulator.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    assert b"^brain/sim01/fmri/rsa/roi/" in layout
