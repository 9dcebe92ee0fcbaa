"""The RSA bootstrap: equal to a plain loop that resamples the stimuli, and calibrated.

The reference resamples the patterns, recomputes both RDMs, leaves out the pairs of two copies
of one stimulus and compares with scipy. Calibration: stimuli drawn from a population whose
RSA value is known (computed on 3,000 stimuli); 95% intervals from 60 stimuli must cover it in
90-99% of 200 independent samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from brainalign.probe.bootstrap import percentile_interval, resample_counts, resample_indices
from brainalign.probe.metrics.rsa import compare_rdms, rdms
from brainalign.probe.metrics.rsa_bootstrap import bootstrap_compare_rdms, pair_weights


def loop_reference(model_sets, brain_sets, indices, model_metric, brain_metric, method):
    """Resample, recompute the RDMs, drop identical pairs, compare: (n_boot, n_a, n_b)."""
    compare = scipy.stats.pearsonr if method == "pearson" else scipy.stats.spearmanr
    n = indices.shape[1]
    rows, columns = np.triu_indices(n, 1)
    result = np.empty((len(indices), len(model_sets), len(brain_sets)))
    for b, drawn in enumerate(indices):
        keep = drawn[rows] != drawn[columns]
        model = rdms([item[drawn] for item in model_sets], model_metric)
        axis = 1 if brain_metric == "crossnobis" else 0  # repeats come first
        brain = rdms([np.take(item, drawn, axis=axis) for item in brain_sets], brain_metric)
        for i in range(len(model_sets)):
            for j in range(len(brain_sets)):
                result[b, i, j] = compare(model[i, keep], brain[j, keep])[0]
    return result


@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize("brain_metric", ["correlation", "euclidean", "crossnobis"])
def test_pair_weights_equal_resampling_the_stimuli(method, brain_metric):
    rng = np.random.default_rng(0)
    n = 25
    model_sets = [rng.normal(size=(n, 6)), rng.normal(size=(n, 4))]
    signal = model_sets[0][:, :3]
    if brain_metric == "crossnobis":
        brain_sets = [signal + rng.normal(size=(3, n, 3)), rng.normal(size=(2, n, 5))]
    else:
        brain_sets = [signal + rng.normal(size=(n, 3)), rng.normal(size=(n, 5))]
    counts = resample_counts(n, n_boot=15, seed=3)
    indices = resample_indices(n, n_boot=15, seed=3)
    fast = bootstrap_compare_rdms(
        rdms(model_sets, "correlation"), rdms(brain_sets, brain_metric), counts, method
    )
    slow = loop_reference(model_sets, brain_sets, indices, "correlation", brain_metric, method)
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_ties_get_the_average_rank_of_the_resampled_multiset():
    """Tied dissimilarities (few distinct values): each resampled RDM is read from the full one
    (recomputing it would break the ties by rounding), then ranked by scipy."""
    from scipy.spatial.distance import squareform

    rng = np.random.default_rng(1)
    n = 20
    a = rng.integers(0, 3, size=(2, n * (n - 1) // 2)).astype(float)
    b = rng.integers(0, 4, size=(1, n * (n - 1) // 2)).astype(float)
    indices = resample_indices(n, n_boot=10, seed=0)
    fast = bootstrap_compare_rdms(a, b, resample_counts(n, n_boot=10, seed=0), "spearman")
    rows, columns = np.triu_indices(n, 1)
    for replicate, drawn in enumerate(indices):
        keep = drawn[rows] != drawn[columns]
        for i in range(2):
            resampled_a = squareform(a[i])[drawn[rows], drawn[columns]][keep]
            resampled_b = squareform(b[0])[drawn[rows], drawn[columns]][keep]
            expected = scipy.stats.spearmanr(resampled_a, resampled_b)[0]
            assert fast[replicate, i, 0] == pytest.approx(expected, abs=1e-12)


def test_all_ones_counts_give_the_point_estimate():
    rng = np.random.default_rng(2)
    a = rdms([rng.normal(size=(15, 4)) for _ in range(3)], "correlation")
    b = rdms([rng.normal(size=(15, 5)) for _ in range(2)], "euclidean")
    ones = np.ones((2, 15))
    assert np.all(pair_weights(ones) == 1.0)
    for method in ("pearson", "spearman"):
        np.testing.assert_allclose(
            bootstrap_compare_rdms(a, b, ones, method)[0], compare_rdms(a, b, method), atol=1e-12
        )


def test_bad_inputs_are_one_clear_error():
    a = np.zeros((1, 10))
    counts = np.ones((2, 5))
    with pytest.raises(ValueError, match="no bootstrap for the 'kendall_tau_a' comparison"):
        bootstrap_compare_rdms(a, a, counts, "kendall_tau_a")
    with pytest.raises(ValueError, match="do not match 6 stimuli"):
        bootstrap_compare_rdms(a, a, np.ones((2, 6)), "pearson")
    with pytest.raises(ValueError, match="NaN or infinite"):
        bootstrap_compare_rdms(np.full((1, 10), np.nan), a, counts, "pearson")


def population_sample(rng, n):
    """Layer and brain patterns of ``n`` stimuli drawn from one population."""
    latent = rng.normal(size=(n, 4))
    layer = np.column_stack([latent, latent[:, :2] ** 2])
    brain = latent[:, :3] + 0.8 * rng.normal(size=(n, 3))
    return layer, brain


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_intervals_cover_the_population_value(method):
    rng = np.random.default_rng(10)
    layer, brain = population_sample(rng, 3000)
    truth = compare_rdms(rdms([layer], "euclidean"), rdms([brain], "euclidean"), method)[0, 0]
    covered = []
    for repetition in range(200):
        layer, brain = population_sample(rng, 60)
        boot = bootstrap_compare_rdms(
            rdms([layer], "euclidean"),
            rdms([brain], "euclidean"),
            resample_counts(60, n_boot=300, seed=repetition),
            method,
        )[:, 0, 0]
        interval = percentile_interval(boot, 0.95)
        covered.append(interval.low <= truth <= interval.high)
    coverage = float(np.mean(covered))
    assert 0.90 <= coverage <= 0.99, coverage
