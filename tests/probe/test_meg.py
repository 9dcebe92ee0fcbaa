"""MEG preparation: z-scoring, resampling, cropping, baseline, picks (known answers)."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import scipy.stats

from brainalign.probe.meg import MEGPreparation, prepare_epochs, zscore_trials

# 7 trials, 8 channels (6 mag, 2 eeg), 20 samples at 100 Hz from -0.1 s.
N_TRIALS, SFREQ, N_SAMPLES, TMIN = 7, 100.0, 20, -0.1
CHANNELS = [f"MEG{i}" for i in range(6)] + ["EEG0", "EEG1"]


def make_epochs(data: np.ndarray, *, bads: list[str] | None = None) -> mne.EpochsArray:
    info = mne.create_info(CHANNELS, SFREQ, ch_types=["mag"] * 6 + ["eeg"] * 2)
    info["bads"] = bads or []
    return mne.EpochsArray(data, info, tmin=TMIN, baseline=None, verbose="error")


@pytest.fixture
def random_data() -> np.ndarray:
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 3.0, (1, len(CHANNELS), 1))
    return rng.normal(2.0, 1.0, (N_TRIALS, len(CHANNELS), N_SAMPLES)) * scale


def test_zscore_gives_mean_zero_std_one_per_channel_and_time(random_data):
    data, times = prepare_epochs(make_epochs(random_data), MEGPreparation(picks=None))
    assert data.shape == (N_TRIALS, len(CHANNELS), N_SAMPLES)
    assert data.dtype == np.float32
    np.testing.assert_allclose(data.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(times, TMIN + np.arange(N_SAMPLES) / SFREQ)


def test_zscore_trials_matches_scipy_and_maps_constants_to_zero(random_data):
    data = random_data.copy()
    data[:, 2, 5] = 4.0
    expected = scipy.stats.zscore(random_data, axis=0)
    result = zscore_trials(data)
    mask = np.ones(data.shape[1:], bool)
    mask[2, 5] = False
    np.testing.assert_allclose(result[:, mask], expected[:, mask], rtol=1e-5, atol=1e-5)
    assert (result[:, 2, 5] == 0).all()


def test_without_zscore_data_are_returned_as_recorded(random_data):
    data, _ = prepare_epochs(make_epochs(random_data), MEGPreparation(zscore=False, picks=None))
    np.testing.assert_allclose(data, random_data, rtol=1e-6)


def test_resampling_halves_the_samples_and_keeps_a_slow_sinusoid():
    n_samples = 64
    times = TMIN + np.arange(n_samples) / SFREQ
    sinusoid = np.sin(2 * np.pi * 5.0 * times)  # 5 Hz, well below the new Nyquist (25 Hz)
    data = np.broadcast_to(sinusoid, (N_TRIALS, len(CHANNELS), n_samples)).copy()
    data *= np.arange(1, N_TRIALS + 1)[:, None, None]
    prep = MEGPreparation(resample_hz=50.0, zscore=False, picks=None)
    resampled, new_times = prepare_epochs(make_epochs(data), prep)
    assert resampled.shape == (N_TRIALS, len(CHANNELS), n_samples // 2)
    np.testing.assert_allclose(new_times, TMIN + np.arange(n_samples // 2) / 50.0)
    inner = slice(8, -8)  # away from the edges
    expected = np.sin(2 * np.pi * 5.0 * new_times) * 3.0  # trial 2 has gain 3
    np.testing.assert_allclose(resampled[2, 0, inner], expected[inner], atol=0.05)


def test_crop_keeps_the_window_inclusive(random_data):
    prep = MEGPreparation(tmin=0.0, tmax=0.05, zscore=False, picks=None)
    data, times = prepare_epochs(make_epochs(random_data), prep)
    np.testing.assert_allclose(times, [0.0, 0.01, 0.02, 0.03, 0.04, 0.05], atol=1e-9)
    first = round((0.0 - TMIN) * SFREQ)
    np.testing.assert_allclose(data, random_data[:, :, first : first + 6], rtol=1e-6)


def test_crop_outside_the_epochs_is_an_error(random_data):
    with pytest.raises(ValueError, match="outside the epochs"):
        prepare_epochs(make_epochs(random_data), MEGPreparation(tmin=1.0, tmax=2.0))


def test_baseline_removes_the_prestimulus_mean(random_data):
    data = random_data.copy()
    prestimulus = slice(0, 11)  # -0.1 .. 0.0 s
    expected = data - data[:, :, prestimulus].mean(axis=2, keepdims=True)
    prep = MEGPreparation(baseline=(None, 0.0), zscore=False, picks=None)
    prepared, _ = prepare_epochs(make_epochs(data), prep)
    np.testing.assert_allclose(prepared, expected, rtol=1e-5, atol=1e-6)


def test_picks_select_types_or_names_and_leave_out_bad_channels(random_data):
    epochs = make_epochs(random_data, bads=["MEG1"])
    meg_only, _ = prepare_epochs(epochs, MEGPreparation(zscore=False))  # picks="meg"
    np.testing.assert_allclose(meg_only, random_data[:, [0, 2, 3, 4, 5]], rtol=1e-6)
    named, _ = prepare_epochs(epochs, MEGPreparation(zscore=False, picks=["EEG1", "MEG3"]))
    assert named.shape[1] == 2
    np.testing.assert_allclose(named, random_data[:, [7, 3]], rtol=1e-6)  # order as given
    with pytest.raises(ValueError, match=r"select no usable channel.*channel types present"):
        prepare_epochs(epochs, MEGPreparation(picks="grad"))


def test_preparation_leaves_the_input_epochs_unchanged(random_data):
    epochs = make_epochs(random_data)
    prepare_epochs(epochs, MEGPreparation(resample_hz=50.0, tmin=0.0, baseline=(None, 0.0)))
    assert len(epochs.ch_names) == len(CHANNELS)
    np.testing.assert_allclose(epochs.get_data(), random_data)


def test_preparation_arguments_are_checked():
    with pytest.raises(ValueError, match="tmin"):
        MEGPreparation(tmin=0.5, tmax=0.1)
    with pytest.raises(ValueError, match="resample_hz"):
        MEGPreparation(resample_hz=0.0)
    with pytest.raises(ValueError, match="baseline"):
        MEGPreparation(baseline=(None, 0.0, 1.0))
    assert MEGPreparation(picks=["a", "b"]).picks == ("a", "b")  # hashable, frozen
