"""The bootstrap inside the probe: streamed from the ridge solver, equal to the batch method."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainalign.probe.bootstrap import bootstrap_group_r, group_index_sets
from brainalign.probe.config import EncodingConfig
from brainalign.probe.fitting import BootstrapPlan, fit_layer
from brainalign.probe.formats import load_brain
from brainalign.probe.pipeline import summarise_fits
from brainalign.probe.ridge import fit_encoding
from brainalign.probe.simulate import oracle_features, simulate_subject

CONFIG = EncodingConfig(backend="numpy", n_folds=5)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    simulated = simulate_subject(root / "sim", n_stimuli=120, image_size=32, seed=3)
    fmri, stimuli = load_brain(str(simulated.fmri_dir))
    meg, _ = load_brain(str(simulated.meg_path))
    levels = oracle_features(stimuli.load_array(), pd.read_csv(simulated.stimuli_csv))
    return fmri, meg, stimuli, levels


def test_streamed_resamples_equal_the_batch_bootstrap_of_the_held_out_predictions():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 7))
    targets = features @ rng.normal(size=(7, 9)) + rng.normal(size=(60, 9)) * 3
    targets = targets.astype(np.float32)  # as BrainData holds them
    config = EncodingConfig(backend="numpy", n_folds=4, target_batch_size=4)  # 3 batches
    predictions = np.empty(targets.shape)

    def keep(fold, rows, batch, prediction, observed):
        predictions[rows, batch] = prediction

    result = fit_encoding(features, targets, config, prediction_sink=keep)
    plan = BootstrapPlan.draw(60, config, n_resamples=50, seed=7)
    assert [list(fold) for fold in plan.folds] == [list(test) for test in result.test_indices]
    groups = [np.arange(9), np.array([0, 3, 5]), np.array([1, 2, 4, 6, 7, 8])]
    expected = bootstrap_group_r(
        targets, predictions, groups, weights=plan.weights, folds=plan.folds
    )  # (50, 3)
    brain = _fake_fmri(targets, roi=["a", "b", "b", "a", "b", "a", "b", "b", "b"])
    fit = fit_layer(0, features, brain, config, bootstrap=plan)
    np.testing.assert_allclose(fit.boot_overall_r, expected[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.boot_group_r, expected[:, 1:], rtol=1e-10, atol=1e-12)
    # and the resamples bracket the point estimate of the same fit
    assert np.nanmin(fit.boot_overall_r) < fit.overall_r < np.nanmax(fit.boot_overall_r)
    assert group_index_sets(groups, 9)[1].tolist() == [0, 3, 5]


def _fake_fmri(targets, roi):
    from brainalign.probe.brain_data import BrainData

    n_stimuli, n_targets = targets.shape
    frame = pd.DataFrame({"roi": roi, "x": 0.0, "y": 0.0, "z": np.arange(n_targets, dtype=float)})
    return BrainData(
        subject="s",
        modality="fmri",
        data=targets.astype(np.float32),
        stimulus_ids=[str(i) for i in range(n_stimuli)],
        targets=frame,
    )


@pytest.mark.parametrize("modality", ["fmri", "meg"])
def test_intervals_of_every_score_and_curve_resamples(subject, modality):
    fmri, meg, stimuli, levels = subject
    brain, aligned = (fmri if modality == "fmri" else meg).align(stimuli)
    rows = stimuli.index_of(aligned.ids)
    plan = BootstrapPlan.draw(brain.n_stimuli, CONFIG, n_resamples=100, seed=0)
    fits = [
        fit_layer(index, level[rows].astype(np.float32), brain, CONFIG, bootstrap=plan)
        for index, level in enumerate(levels)
    ]
    depths = {index: index / 3 for index in range(4)}
    scores = summarise_fits(fits, depths, brain, config=CONFIG)
    table = scores.table
    r_rows = table[table["metric"] == "r"]
    assert r_rows[["ci_low", "ci_high"]].notna().all().all()
    assert (r_rows["ci_low"] <= r_rows["value"] + 1e-9).mean() > 0.95
    assert (r_rows["value"] <= r_rows["ci_high"] + 1e-9).mean() > 0.95
    assert (r_rows["ci_high"] > r_rows["ci_low"]).all()  # real resamples, not a constant
    score = "spatial_score" if modality == "fmri" else "temporal_score"
    row = table[(table["metric"] == score) & (table["layer"] < 0)].iloc[0]
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert row["ci_low"] > 0.5  # the planted hierarchy is far from chance
    curves = set(scores.replicates["curve"])
    assert {"encoding", score} <= curves
    expected = (
        {f"roi/{roi}" for roi in brain.rois["roi"]}
        if modality == "fmri"
        else {
            "window/80-130ms",
            "window/130-180ms",
            "window/500-550ms",
        }
    )
    assert expected <= curves
    assert scores.replicates.groupby("curve").size().eq(100).all()
    # the ratio rows carry no interval of their own
    assert table.loc[table["metric"] == "r_normalised", "ci_low"].isna().all()


def test_no_bootstrap_leaves_the_interval_columns_empty(subject):
    fmri, _, stimuli, levels = subject
    brain, _ = fmri.align(stimuli)
    fits = [fit_layer(i, level.astype(np.float32), brain, CONFIG) for i, level in enumerate(levels)]
    scores = summarise_fits(fits, {i: i / 3 for i in range(4)}, brain, config=CONFIG)
    assert "ci_low" not in scores.table and "ci_high" not in scores.table
    assert scores.replicates.empty
