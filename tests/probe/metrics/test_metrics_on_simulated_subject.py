"""On the simulated subject, RSA and CKA of the oracle layers recover the planted hierarchy.

The oracle layers are the planted levels (layer k = level k), so the best layer of each ROI is
its planted level (spatial score > 0 with depth rising with distance from V1) and the layers'
MEG similarity peaks in the planted order of latencies (temporal score > 0); reversing the
layers flips both signs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainalign.probe.formats import load_brain
from brainalign.probe.metrics import (
    cross_validated_cka,
    linear_cka,
    representational_similarity,
)
from brainalign.probe.scores import (
    best_layer_depths,
    distance_from_v1,
    spatial_score,
    t_max,
    temporal_score,
)
from brainalign.probe.simulate import oracle_features, simulate_subject


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    simulated = simulate_subject(
        tmp_path_factory.mktemp("sim") / "sim", n_stimuli=200, image_size=32, seed=1
    )
    fmri, stimuli = load_brain(str(simulated.fmri_dir))
    meg, _ = load_brain(str(simulated.meg_path))
    levels = oracle_features(stimuli.load_array(), pd.read_csv(simulated.stimuli_csv))
    return simulated, fmri, meg, stimuli, levels


def roi_sets(brain):
    """Per ROI (in the ROI table's order): its voxels and their repeats."""
    rois = brain.rois["roi"].tolist()
    labels = brain.targets["roi"].to_numpy()
    columns = [np.flatnonzero(labels == roi) for roi in rois]
    return rois, [brain.data[:, c] for c in columns], [brain.repeats[:, :, c] for c in columns]


METRICS = {
    "rsa": lambda layers, rois, repeats: representational_similarity(layers, rois),
    "rsa_crossnobis": lambda layers, rois, repeats: representational_similarity(
        layers, repeats, brain_metric="crossnobis"
    ),
    "cka": lambda layers, rois, repeats: linear_cka(layers, rois),
    "cka_cross_validated": lambda layers, rois, repeats: cross_validated_cka(layers, repeats),
}


@pytest.mark.slow
@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("reverse, sign", [(False, 1.0), (True, -1.0)])
def test_oracle_layers_give_the_planted_roi_levels_and_spatial_score(
    subject, metric, reverse, sign
):
    simulated, fmri, _, stimuli, levels = subject
    brain, _ = fmri.align(stimuli)
    layers = list(reversed(levels)) if reverse else list(levels)
    depths = np.linspace(0.0, 1.0, len(layers))
    rois, voxels, repeats = roi_sets(brain)
    scores = METRICS[metric](layers, voxels, repeats)  # (n_layers, n_rois)
    best = best_layer_depths(scores, depths)
    truth = simulated.truth()["rois"]
    planted = np.array([truth[roi]["level"] for roi in rois]) / (len(layers) - 1)
    np.testing.assert_allclose(best, 1.0 - planted if reverse else planted)
    distances = distance_from_v1(brain.rois).reindex(rois).to_numpy()
    assert sign * spatial_score(distances, best) > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["rsa", "cka"])
@pytest.mark.parametrize("reverse, sign", [(False, 1.0), (True, -1.0)])
def test_oracle_layers_peak_in_the_planted_order_of_meg_latencies(subject, metric, reverse, sign):
    _, _, meg, stimuli, levels = subject
    brain, aligned = meg.align(stimuli)  # MEG keeps its presentation order
    rows = stimuli.index_of(aligned.ids)
    layers = [level[rows] for level in (reversed(levels) if reverse else levels)]
    depths = np.linspace(0.0, 1.0, len(layers))
    per_time = brain.data.transpose(2, 0, 1)  # (n_times, n_stimuli, n_channels)
    scores = METRICS[metric](layers, per_time, None)  # (n_layers, n_times)
    peaks = t_max(scores, brain.times)
    assert sign * temporal_score(depths, peaks) > 0.8
    assert list(np.argsort(peaks)) == (list(range(4))[::-1] if reverse else list(range(4)))
