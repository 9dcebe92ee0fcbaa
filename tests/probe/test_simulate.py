"""The simulated subject: files readable by the generic loaders, and a recoverable planted truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict

from brainalign.probe.formats import load_brain
from brainalign.probe.rois import distance_from_v1
from brainalign.probe.simulate import (
    LEVEL_NAMES,
    SIMULATED_ROIS,
    oracle_features,
    planted_levels,
    simulate_subject,
)
from brainalign.synthetic.images import generate_images

N_STIMULI, IMAGE_SIZE, N_SENSORS, SFREQ = 200, 16, 8, 50.0


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("simulated")
    return simulate_subject(
        root,
        n_stimuli=N_STIMULI,
        image_size=IMAGE_SIZE,
        n_meg_sensors=N_SENSORS,
        meg_sfreq=SFREQ,
        seed=3,
    )


@pytest.fixture(scope="module")
def levels_by_id(subject):
    latents = pd.read_csv(subject.stimuli_csv, dtype={"stimulus_id": str})
    brain, stimuli = load_brain(subject.fmri_dir)
    levels = planted_levels(
        stimuli.load_array(), latents.set_index("stimulus_id").loc[brain.stimulus_ids].reset_index()
    )
    return dict(zip(brain.stimulus_ids, range(len(brain.stimulus_ids)))), levels


def cross_validated_r(features: np.ndarray, responses: np.ndarray) -> np.ndarray:
    """Pearson r per target between 5-fold ridge predictions and the responses."""
    predicted = cross_val_predict(
        RidgeCV(alphas=np.logspace(-1, 4, 6)), features, responses, cv=KFold(5)
    )
    predicted = predicted - predicted.mean(axis=0)
    centred = responses - responses.mean(axis=0)
    return (predicted * centred).sum(0) / np.sqrt((predicted**2).sum(0) * (centred**2).sum(0))


def test_files_are_written_in_the_generic_formats(subject):
    assert len(list(subject.images_dir.glob("*.png"))) == N_STIMULI
    assert (subject.fmri_dir / "responses.npy").is_file()
    assert (subject.fmri_dir / "repeats.npy").is_file()
    assert subject.meg_path.name == "sim01-epo.fif"
    truth = subject.truth()
    assert truth["seed"] == 3
    assert {name: spec["level"] for name, spec in truth["rois"].items()} == {
        name: level for name, level, _ in SIMULATED_ROIS
    }
    assert [level["meg_peak_latency_s"] for level in truth["levels"]] == [0.07, 0.12, 0.18, 0.30]
    assert json.loads(subject.truth_path.read_text())["noise"]["fmri_snr_per_repeat"] == 1.0


def test_loaders_read_the_simulated_subject(subject):
    fmri, fmri_stimuli = load_brain(subject.fmri_dir)
    assert fmri.data.shape == (N_STIMULI, len(SIMULATED_ROIS) * 12)
    assert fmri.repeats.shape == (2, *fmri.data.shape)
    np.testing.assert_allclose(fmri.data, fmri.repeats.mean(axis=0), atol=1e-5)
    assert fmri.rois["roi"].tolist() == [name for name, _, _ in SIMULATED_ROIS]
    assert {"expansion", "myelin"} <= set(fmri.rois.columns)

    meg, meg_stimuli = load_brain(subject.meg_path)
    assert meg.data.shape == (N_STIMULI, N_SENSORS, 36)  # -0.1 .. 0.6 s at 50 Hz
    assert meg.repeats.shape == (2, N_STIMULI, N_SENSORS, 36)
    assert sorted(meg.stimulus_ids) == sorted(fmri.stimulus_ids)
    assert meg_stimuli.content_hash == fmri_stimuli.subset(meg.stimulus_ids).content_hash
    aligned, stimuli = meg.align(fmri_stimuli)
    assert stimuli.ids == aligned.stimulus_ids


def test_roi_distance_from_v1_rises_with_the_planted_level(subject):
    fmri, _ = load_brain(subject.fmri_dir)
    distances = distance_from_v1(fmri.rois)
    level_of = {name: level for name, level, _ in SIMULATED_ROIS}
    for level in range(len(LEVEL_NAMES) - 1):
        lower = max(distances[name] for name in level_of if level_of[name] == level)
        higher = min(distances[name] for name in level_of if level_of[name] == level + 1)
        assert lower < higher


def test_each_roi_is_best_predicted_by_its_planted_level(subject, levels_by_id):
    fmri, _ = load_brain(subject.fmri_dir)
    _, levels = levels_by_id
    scores = pd.DataFrame(
        {
            level: pd.Series(cross_validated_r(features, fmri.targets_matrix()))
            .groupby(fmri.targets["roi"].to_numpy(), sort=False)
            .mean()
            for level, features in enumerate(levels)
        }
    )
    best_level = scores.idxmax(axis=1).to_dict()
    assert best_level == {name: level for name, level, _ in SIMULATED_ROIS}
    assert scores.max(axis=1).min() > 0.4  # the planted level predicts well (SNR 1, 2 repeats)


def test_meg_level_peaks_at_its_planted_latency(subject, levels_by_id):
    meg, _ = load_brain(subject.meg_path)
    position, levels = levels_by_id
    rows = [position[stimulus_id] for stimulus_id in meg.stimulus_ids]
    index = meg.target_index()
    peaks = []
    for features in levels:
        r = cross_validated_r(features[rows], meg.targets_matrix())
        time_course = pd.Series(r).groupby(index["time"].to_numpy()).mean()
        peaks.append(time_course.idxmax())
    np.testing.assert_allclose(peaks, [0.07, 0.12, 0.18, 0.30], atol=1.0 / SFREQ + 1e-9)
    assert np.all(np.diff(peaks) > 0)


def test_planted_levels_shapes_standardisation_and_oracle():
    images, latents = generate_images(40, size=IMAGE_SIZE, seed=1)
    levels = planted_levels(images, latents)
    assert [level.shape[0] for level in levels] == [40] * 4
    assert levels[1].shape[1] == 4 * 4 * 3 and levels[3].shape[1] == 8
    for level in levels:
        assert level.dtype == np.float32
        std = level.std(axis=0)
        np.testing.assert_allclose(level.mean(axis=0), 0.0, atol=1e-5)
        assert np.all((np.abs(std - 1.0) < 1e-4) | (std == 0))
    # the category level is the one-hot category, standardised
    category = latents["category"].to_numpy()
    assert np.all(np.argmax(levels[3], axis=1) == category)
    for oracle_layer, level in zip(oracle_features(images, latents), levels):
        np.testing.assert_array_equal(oracle_layer, level)


def test_planted_levels_errors_name_the_problem():
    images, latents = generate_images(5, size=IMAGE_SIZE, seed=1)
    with pytest.raises(ValueError, match="'orientation'"):
        planted_levels(images, latents.drop(columns=["orientation"]))
    with pytest.raises(ValueError, match="5 images but 4 rows"):
        planted_levels(images, latents.iloc[:4])
    with pytest.raises(ValueError, match="uint8"):
        planted_levels(images.astype(float), latents)


def test_same_seed_same_subject_and_overwrite_protection(tmp_path):
    arguments = {"n_stimuli": 12, "image_size": 8, "n_meg_sensors": 3, "meg_sfreq": 20.0}
    first = simulate_subject(tmp_path / "a", seed=5, **arguments)
    again = simulate_subject(tmp_path / "b", seed=5, **arguments)
    other = simulate_subject(tmp_path / "c", seed=6, **arguments)
    responses = [np.load(s.fmri_dir / "responses.npy") for s in (first, again, other)]
    np.testing.assert_array_equal(responses[0], responses[1])
    assert not np.allclose(responses[0], responses[2])

    (tmp_path / "a" / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        simulate_subject(tmp_path / "a", seed=5, **arguments)
    simulate_subject(tmp_path / "a", seed=7, overwrite=True, **arguments)
    assert (tmp_path / "a" / "keep.txt").read_text() == "user file"
    assert json.loads((tmp_path / "a" / "truth.json").read_text())["seed"] == 7


def test_simulation_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="cross_level_weight"):
        simulate_subject(tmp_path, n_stimuli=4, cross_level_weight=1.0)
    with pytest.raises(ValueError, match="4 values each"):
        simulate_subject(tmp_path, n_stimuli=4, meg_latencies=(0.1, 0.2))
