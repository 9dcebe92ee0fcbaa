"""Noise ceilings: RSA from subjects and split halves, encoding from random split halves."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.probe.metrics import (
    compare_rdms,
    noise_ceiling_random_splits,
    rdms,
    rsa_noise_ceiling_split_half,
    rsa_noise_ceiling_subjects,
)
from brainalign.probe.scores import noise_ceiling_split_half


def zscored(rows: np.ndarray) -> np.ndarray:
    return (rows - rows.mean(axis=-1, keepdims=True)) / rows.std(axis=-1, keepdims=True)


def plain_pearson_ceiling(subject_rdms: np.ndarray) -> tuple[float, float]:
    """Leave-one-subject-out bounds of one set written as a loop (z-scored RDMs pooled)."""
    pooled_all = zscored(subject_rdms).mean(axis=0)
    lower, upper = [], []
    for subject in range(len(subject_rdms)):
        others = np.delete(subject_rdms, subject, axis=0)
        pooled_others = zscored(others).mean(axis=0)
        lower.append(np.corrcoef(subject_rdms[subject], pooled_others)[0, 1])
        upper.append(np.corrcoef(subject_rdms[subject], pooled_all)[0, 1])
    return float(np.mean(lower)), float(np.mean(upper))


def noisy_subjects(seed: int, n_subjects: int = 6, n_stimuli: int = 20):
    """Subjects whose patterns are one true pattern set plus independent noise, 2 ROIs."""
    rng = np.random.default_rng(seed)
    truths = [rng.normal(size=(n_stimuli, width)) for width in (15, 25)]
    subject_rdms = np.stack(
        [
            rdms([truth + 1.2 * rng.normal(size=truth.shape) for truth in truths])
            for _ in range(n_subjects)
        ]
    )  # (n_subjects, 2, n_pairs)
    return truths, subject_rdms


def test_subject_ceiling_equals_a_plain_leave_one_out_loop():
    _, subject_rdms = noisy_subjects(0)
    ceiling = rsa_noise_ceiling_subjects(subject_rdms, "pearson")
    for index in range(2):
        lower, upper = plain_pearson_ceiling(subject_rdms[:, index])
        np.testing.assert_allclose([ceiling.lower[index], ceiling.upper[index]], [lower, upper])


@pytest.mark.parametrize("method", ["spearman", "pearson", "kendall_tau_a"])
def test_the_true_model_scores_between_the_subject_bounds(method):
    truths, subject_rdms = noisy_subjects(1)
    ceiling = rsa_noise_ceiling_subjects(subject_rdms, method)
    for index, truth in enumerate(truths):
        true_score = compare_rdms(rdms([truth]), subject_rdms[:, index], method).mean()
        assert ceiling.lower[index] < true_score < ceiling.upper[index]


def test_split_half_rsa_ceiling_predicts_the_noise_free_rdm_score():
    """Averaged over 20 planted subjects, within 0.05 of the score the true RDM reaches."""
    rng = np.random.default_rng(2)
    n_stimuli, width, n_repeats = 40, 30, 4
    estimated, reached = [], []
    for _ in range(20):
        signal = rng.normal(size=(n_stimuli, width))
        repeats = signal[None] + rng.normal(size=(n_repeats, n_stimuli, width))
        estimated.append(rsa_noise_ceiling_split_half([repeats], method="pearson").ceiling[0])
        reached.append(compare_rdms(rdms([signal]), rdms([repeats.mean(axis=0)]), "pearson")[0, 0])
    assert abs(np.mean(estimated) - np.mean(reached)) < 0.05
    crossnobis = rsa_noise_ceiling_split_half(
        np.stack([repeats, repeats]), metric="crossnobis", method="spearman"
    )
    assert crossnobis.ceiling.shape == (2,) and np.all(crossnobis.ceiling > 0.3)


def test_random_split_reliability_recovers_the_planted_reliability_for_meg_shapes():
    rng = np.random.default_rng(3)
    n_repeats, n_stimuli, n_channels, n_times = 12, 1000, 3, 5
    noise_sd = np.linspace(1.0, 4.0, n_channels * n_times).reshape(n_channels, n_times)
    signal = rng.normal(size=(n_stimuli, n_channels, n_times))
    repeats = signal[None] + noise_sd * rng.normal(size=(n_repeats, *signal.shape))
    planted = 1.0 / (1.0 + noise_sd**2 / n_repeats)  # reliability of the 12-repeat mean
    reliability = noise_ceiling_random_splits(repeats, n_splits=20)
    assert reliability.shape == (n_channels, n_times)
    np.testing.assert_allclose(reliability, planted, atol=0.06)  # sampling sd <= 0.03
    even_odd = noise_ceiling_random_splits(repeats, n_splits=1, seed=None)
    np.testing.assert_allclose(
        even_odd.ravel(), noise_ceiling_split_half(repeats.reshape(n_repeats, n_stimuli, -1))
    )


def test_averaging_random_splits_removes_the_dependence_on_the_order_of_the_repeats():
    rng = np.random.default_rng(4)
    repeats = rng.normal(size=(1, 60, 40)) + 2.0 * rng.normal(size=(12, 60, 40))
    reordered = repeats[rng.permutation(12)]
    single_gap = np.abs(
        noise_ceiling_random_splits(repeats, n_splits=1, seed=None)
        - noise_ceiling_random_splits(reordered, n_splits=1, seed=None)
    )
    averaged_gap = np.abs(
        noise_ceiling_random_splits(repeats, n_splits=50, seed=1)
        - noise_ceiling_random_splits(reordered, n_splits=50, seed=2)
    )
    assert averaged_gap.mean() < 0.3 * single_gap.mean()


def test_ceilings_refuse_data_without_repeats_or_subjects():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="needs repeats"):
        rsa_noise_ceiling_split_half(rng.normal(size=(2, 10, 4)))
    with pytest.raises(ValueError, match="at least 4"):
        rsa_noise_ceiling_split_half([rng.normal(size=(3, 10, 4))], metric="crossnobis")
    with pytest.raises(ValueError, match="at least 2 subjects"):
        rsa_noise_ceiling_subjects(rng.normal(size=(1, 2, 45)))
    with pytest.raises(ValueError, match="data without repeats"):
        noise_ceiling_random_splits(rng.normal(size=(10, 4)))
