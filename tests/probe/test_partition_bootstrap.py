"""The bootstrap of variance partitioning: held-out R2 per resample, and calibrated intervals.

Reference: a plain loop that draws each resample's stimuli (within their folds), computes
scikit-learn's ``r2_score`` per fold and target, averages over folds and then over each group's
targets. Calibration: fixed predictions of targets drawn from a population whose R2 and unique
variance are known in closed form; 95% intervals from 500 stimuli (5 test folds of 100) must
cover them in 90-99% of 200 samples. Through the probe core:
``tests/probe/test_partitioning_in_probe.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import r2_score

from brainalign.probe.bootstrap import (
    GroupRAccumulator,
    percentile_interval,
    resample_counts,
    resample_indices,
)
from brainalign.probe.metrics.variance_partitioning import venn_regions


def folds_of(n, n_folds):
    return [np.asarray(part) for part in np.array_split(np.arange(n), n_folds)]


def accumulate_r2(observed, predicted, counts, folds, groups):
    accumulator = GroupRAccumulator(counts, folds, groups, n_targets=observed.shape[1], score="r2")
    for index, fold in enumerate(folds):
        accumulator.add(index, fold, slice(0, observed.shape[1]), predicted[fold], observed[fold])
    return accumulator.result()


def test_r2_resamples_equal_a_loop_with_scikit_learn():
    rng = np.random.default_rng(0)
    n, n_targets = 40, 7
    observed = rng.normal(size=(n, n_targets)) * rng.uniform(0.5, 3, n_targets) + 5.0
    predicted = 0.6 * observed + rng.normal(size=(n, n_targets))
    folds = folds_of(n, 4)
    groups = [np.arange(n_targets), np.array([0, 1, 2]), np.array([3, 4, 5, 6])]
    counts = resample_counts(n, 25, seed=1, folds=folds)
    fast = accumulate_r2(observed, predicted, counts, folds, groups)
    for b, drawn in enumerate(resample_indices(n, 25, seed=1, folds=folds)):
        parts = np.split(drawn, np.cumsum([len(fold) for fold in folds])[:-1])
        per_fold = [  # scikit-learn's R2, its SS_tot scaled by n / (n - 1) (see _resampled_r2)
            1.0
            - (1.0 - r2_score(observed[part], predicted[part], multioutput="raw_values"))
            * (len(part) - 1)
            / len(part)
            for part in parts
        ]
        per_target = np.mean(per_fold, axis=0)
        expected = [per_target[group].mean() for group in groups]
        np.testing.assert_allclose(fast[b], expected, atol=1e-10)


def test_a_target_constant_in_a_resample_is_left_out_of_its_mean():
    n = 12
    observed = np.column_stack([np.r_[np.ones(n // 2), np.arange(n // 2.0)], np.arange(n * 1.0)])
    predicted = observed + np.linspace(-0.5, 0.5, n)[:, None]
    counts = np.r_[np.full(n // 2, 2.0), np.zeros(n // 2)][None]  # target 0 is constant there
    both = accumulate_r2(observed, predicted, counts, [np.arange(n)], [np.array([0, 1])])
    second_alone = accumulate_r2(observed, predicted, counts, [np.arange(n)], [np.array([1])])
    assert np.isfinite(both[0, 0]) and both[0, 0] == pytest.approx(second_alone[0, 0])
    first_alone = accumulate_r2(observed, predicted, counts, [np.arange(n)], [np.array([0])])
    assert np.isnan(first_alone[0, 0])


def test_the_score_is_checked():
    with pytest.raises(ValueError, match="score must be 'r' or 'r2'"):
        GroupRAccumulator(np.ones((2, 4)), [np.arange(4)], [np.arange(1)], n_targets=1, score="R")


@pytest.mark.slow
def test_intervals_of_r2_and_unique_variance_cover_the_population_values():
    """y = x1 + x2 + noise; predictions x2 (space B alone) and x1 + x2 (A and B jointly)."""
    noise = 1.0
    variance = 2.0 + noise**2
    truth = {"r2_b": 1.0 - (1.0 + noise**2) / variance, "unique_a": 1.0 / variance}
    rng = np.random.default_rng(5)
    covered = {name: [] for name in truth}
    n = 500
    folds = folds_of(n, 5)
    for repetition in range(200):
        x = rng.normal(size=(n, 2))
        y = (x.sum(axis=1) + noise * rng.normal(size=n))[:, None]
        counts = resample_counts(n, 300, seed=repetition, folds=folds)
        resampled = {
            frozenset({"b"}): accumulate_r2(y, x[:, 1:], counts, folds, [np.arange(1)]),
            frozenset({"a", "b"}): accumulate_r2(y, x.sum(1)[:, None], counts, folds, [[0]]),
            frozenset({"a"}): accumulate_r2(y, x[:, :1], counts, folds, [[0]]),
        }
        regions = venn_regions(resampled, ("a", "b"))
        for name, boot in (
            ("r2_b", resampled[frozenset({"b"})]),
            ("unique_a", regions[frozenset({"a"})]),
        ):
            interval = percentile_interval(boot[:, 0], 0.95)
            covered[name].append(interval.low <= truth[name] <= interval.high)
    coverage = {name: float(np.mean(values)) for name, values in covered.items()}
    assert all(0.90 <= value <= 0.99 for value in coverage.values()), coverage
