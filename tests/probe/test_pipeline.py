"""Known answers of the scoring pipeline on the simulated subject (planted hierarchy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainalign.probe.formats import load_brain
from brainalign.probe.pipeline import EncodingConfig, score_layers, window_label
from brainalign.probe.simulate import oracle_features, simulate_subject


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    simulated = simulate_subject(root / "sim", n_stimuli=240, image_size=32, seed=1)
    fmri, stimuli = load_brain(str(simulated.fmri_dir))
    meg, _ = load_brain(str(simulated.meg_path))
    images = stimuli.load_array()
    latents = pd.read_csv(simulated.stimuli_csv)
    levels = oracle_features(images, latents)
    return simulated, fmri, meg, stimuli, levels


def _oracle(levels, reverse=False, rows=None):
    order = list(reversed(levels)) if reverse else list(levels)
    rows = slice(None) if rows is None else rows
    features = {index: level[rows].astype(np.float32) for index, level in enumerate(order)}
    depths = {index: index / (len(order) - 1) for index in features}
    return features, depths


CONFIG = EncodingConfig(backend="numpy", n_folds=5)


DIRECTIONS = pytest.mark.parametrize("direction", ["encoding", "decoding"])


@DIRECTIONS
@pytest.mark.parametrize("reverse, sign", [(False, 1.0), (True, -1.0)])
def test_oracle_recovers_planted_roi_levels_and_spatial_score(subject, reverse, sign, direction):
    """Encoding: layer -> each voxel; decoding: each ROI's voxels -> the layer's features."""
    simulated, fmri, _, stimuli, levels = subject
    brain, _ = fmri.align(stimuli)
    features, depths = _oracle(levels, reverse)
    config = EncodingConfig(backend="numpy", n_folds=5, direction=direction)
    scores = score_layers(features, depths, brain, config=config)
    truth = simulated.truth()
    n_levels = len(levels)
    for roi, best_depth in scores.summary["roi_best_depth"].items():
        level = truth["roi_levels"][roi] if "roi_levels" in truth else truth["rois"][roi]["level"]
        expected = (n_levels - 1 - level) if reverse else level
        assert best_depth == pytest.approx(expected / (n_levels - 1)), roi
    assert sign * scores.summary["spatial_score"] > 0.8


@DIRECTIONS
@pytest.mark.parametrize("reverse, sign", [(False, 1.0), (True, -1.0)])
def test_oracle_temporal_score_follows_planted_latencies(subject, reverse, sign, direction):
    """Encoding: layer -> every (channel, time); decoding: all channels at each time -> layer
    (Study C's direction, one decoder per time sample)."""
    _, _, meg, stimuli, levels = subject
    brain, aligned = meg.align(stimuli)  # MEG keeps its own (presentation) order
    rows = stimuli.index_of(aligned.ids)
    features, depths = _oracle(levels, reverse, rows)
    config = EncodingConfig(backend="numpy", n_folds=5, direction=direction)
    scores = score_layers(features, depths, brain, config=config, stimulus_ids=aligned.ids)
    assert sign * scores.summary["temporal_score"] > 0.8
    encoding = scores.summary["encoding_by_layer"]
    assert min(encoding) > 0.05, f"a planted level is not encoded in MEG: {encoding}"
    expected_order = np.argsort(scores.summary["t_max"])
    assert list(expected_order) == (list(range(4))[::-1] if reverse else list(range(4)))
    table = scores.table
    windows = set(table["group"]) & {window_label((0.08, 0.13)), window_label((0.5, 0.55))}
    assert windows == {"80-130ms", "500-550ms"}
    times = table[(table["group"] == "time") & (table["metric"] == "r")]
    assert times["time"].nunique() == len(brain.times)


def test_table_is_long_format_with_normalised_rows(subject):
    _, fmri, _, stimuli, levels = subject
    brain, _ = fmri.align(stimuli)
    features, depths = _oracle(levels)
    table = score_layers(features, depths, brain, config=CONFIG).table
    assert list(table.columns) == [
        "subject",
        "modality",
        "feature_kind",
        "layer",
        "depth",
        "group",
        "time",
        "metric",
        "value",
    ]
    normalised = table[table["metric"] == "r_normalised"]
    assert normalised.groupby("group")["value"].max().round(6).eq(1.0).all()


def test_features_in_another_stimulus_order_are_rejected(subject):
    _, _, meg, stimuli, levels = subject
    brain, _ = meg.align(stimuli)
    features, depths = _oracle(levels)
    with pytest.raises(ValueError, match="rows follow another stimulus order"):
        score_layers(features, depths, brain, config=CONFIG, stimulus_ids=stimuli.ids)


def test_features_with_wrong_rows_are_rejected(subject):
    _, fmri, _, stimuli, levels = subject
    brain, _ = fmri.align(stimuli)
    with pytest.raises(ValueError, match="align brain data and stimuli first"):
        score_layers({0: levels[0][:10]}, {0: 0.0}, brain, config=CONFIG)
