"""Study statistics against plain references and on simulated subjects with a planted truth.

The calibration tests (``test_calibration_*``) print what they measured; run them with ``-s``
to read the false-positive rates, power and coverage.
"""

from __future__ import annotations

import itertools
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.stats
from study_simulation import (
    planted_predictions,
    subject_level_scores,
    target_differences,
)

from brainalign.probe.chronology import half_time
from brainalign.probe.scores import (
    best_layer_depths,
    pearson_r,
    spatial_score,
    t_max,
    temporal_score,
)
from brainalign.study import stats

ALPHA = 0.05


def binomial_band(n_trials: int, rate: float, tail: float = 0.001) -> tuple[float, float]:
    """Range of observed rejection rates a correct test gives with probability 1 - tail."""
    low = scipy.stats.binom.ppf(tail / 2, n_trials, rate) / n_trials
    high = scipy.stats.binom.ppf(1 - tail / 2, n_trials, rate) / n_trials
    return float(low), float(high)


def hand_bh(p_values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg written out: step-up rejections and monotone adjusted p values."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p)
    ranked = p[order]
    below = np.flatnonzero(ranked <= alpha * np.arange(1, m + 1) / m)
    rejected = np.zeros(m, dtype=bool)
    if below.size:
        rejected[order[: below.max() + 1]] = True
    adjusted_sorted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(adjusted_sorted, 1.0)
    return q, rejected


# ---------------------------------------------------------------------- bootstrap of group R
@pytest.fixture
def planted_data() -> tuple[np.ndarray, np.ndarray]:
    """57 stimuli x 43 targets (unequal sizes so a transposed axis fails), rho 0.1..0.6."""
    rng = np.random.default_rng(3)
    observed, predicted = planted_predictions(rng, 57, np.linspace(0.1, 0.6, 43))
    # Offsets and scales far from 0 and 1: the weighted sums must not lose precision to them.
    return 1e3 + 5.0 * observed, -40.0 + 0.01 * predicted


def test_bootstrap_group_r_equals_plain_loop(planted_data) -> None:
    # (d) the weighted-sum bootstrap equals resampling rows and recomputing Pearson per target.
    observed, predicted = planted_data
    labels = np.arange(43) % 5
    fast = stats.bootstrap_group_r(observed, predicted, labels, n_boot=60, seed=7, target_batch=8)
    loop = stats.bootstrap_group_r_loop(observed, predicted, labels, n_boot=60, seed=7)
    assert fast.shape == (60, 5)
    np.testing.assert_allclose(fast, loop, rtol=0, atol=1e-10)
    assert np.ptp(fast, axis=0).min() > 0.01  # the resamples really differ


def test_bootstrap_group_r_overlapping_groups_and_float32(planted_data) -> None:
    observed, predicted = planted_data
    groups = [np.arange(0, 20), np.arange(10, 43), np.arange(43) % 2 == 0]  # overlapping sets
    loop = stats.bootstrap_group_r_loop(observed, predicted, groups, n_boot=30, seed=1)
    fast = stats.bootstrap_group_r(observed, predicted, groups, n_boot=30, seed=1)
    single = stats.bootstrap_group_r(
        observed, predicted, groups, n_boot=30, seed=1, dtype=np.float32
    )
    np.testing.assert_allclose(fast, loop, rtol=0, atol=1e-10)
    np.testing.assert_allclose(single, loop, rtol=0, atol=1e-5)


def test_bootstrap_group_r_with_folds_averages_per_fold_r(planted_data) -> None:
    # The probe's R is the mean over outer folds of the per-fold Pearson R; with folds the
    # bootstrap resamples within folds and averages the same way.
    observed, predicted = planted_data
    order = np.random.default_rng(9).permutation(57)
    folds = [order[:20], order[20:39], order[39:]]  # unequal sizes 20, 19, 18
    labels = np.arange(43) % 3
    fast = stats.bootstrap_group_r(
        observed, predicted, labels, n_boot=40, seed=2, folds=folds, target_batch=16
    )
    loop = stats.bootstrap_group_r_loop(observed, predicted, labels, n_boot=40, seed=2, folds=folds)
    np.testing.assert_allclose(fast, loop, rtol=0, atol=1e-10)
    counts = stats.resample_counts(57, n_boot=40, seed=2, folds=folds)
    for fold in folds:
        assert (counts[:, fold].sum(axis=1) == len(fold)).all()  # each fold keeps its size
    # Unit weights (no resampling) give the probe's number: mean over folds of per-fold R.
    per_fold = np.mean([pearson_r(observed[f], predicted[f]) for f in folds], axis=0)
    identity = stats.bootstrap_group_r(
        observed, predicted, labels, weights=np.ones((1, 57)), folds=folds
    )
    np.testing.assert_allclose(identity[0], [per_fold[labels == g].mean() for g in range(3)])
    pooled = stats.bootstrap_group_r(observed, predicted, labels, weights=np.ones((1, 57)))
    assert not np.allclose(identity, pooled)  # the two definitions differ
    with pytest.raises(ValueError, match="every stimulus row 0..56 exactly once"):
        stats.bootstrap_group_r(observed, predicted, labels, folds=[order[:30], order[29:]])


def test_resamples_are_shared_and_seeded(planted_data) -> None:
    observed, predicted = planted_data
    counts = stats.resample_counts(57, n_boot=40, seed=5)
    indices = stats.resample_indices(57, n_boot=40, seed=5)
    assert counts.shape == (40, 57) and (counts.sum(axis=1) == 57).all()
    np.testing.assert_array_equal(counts, [np.bincount(row, minlength=57) for row in indices])
    labels = np.zeros(43, dtype=int)
    by_seed = stats.bootstrap_group_r(observed, predicted, labels, n_boot=40, seed=5)
    by_weights = stats.bootstrap_group_r(observed, predicted, labels, weights=counts)
    np.testing.assert_array_equal(by_seed, by_weights)
    other_seed = stats.bootstrap_group_r(observed, predicted, labels, n_boot=40, seed=6)
    assert not np.allclose(by_seed, other_seed)
    # Replicate b of two "layers" comes from the same stimuli: identical predictions give
    # identical replicates, and the replicate of a subset of targets matches the full call.
    subset = stats.bootstrap_group_r(observed[:, :9], predicted[:, :9], labels[:9], weights=counts)
    in_full = stats.bootstrap_group_r(observed, predicted, [np.arange(9)], weights=counts)
    np.testing.assert_allclose(subset, in_full, atol=1e-12)


def test_bootstrap_group_r_constant_targets_are_left_out() -> None:
    rng = np.random.default_rng(0)
    observed, predicted = planted_predictions(rng, 30, np.full(6, 0.5))
    observed[:, 2] = 4.0  # a constant target has no R
    fast = stats.bootstrap_group_r(observed, predicted, [np.arange(6), [2]], n_boot=20)
    loop = stats.bootstrap_group_r_loop(observed, predicted, [np.arange(6), [2]], n_boot=20)
    assert np.isnan(fast[:, 1]).all()
    np.testing.assert_allclose(fast[:, 0], loop[:, 0], atol=1e-10)


def test_bootstrap_group_r_memory_stays_bounded() -> None:
    # 200 resamples x 400 stimuli x 4,000 targets: the full (n_boot, n_stimuli, n_targets)
    # array would take 2.6 GB; the module's bound with target_batch=256 is about 12 MB.
    rng = np.random.default_rng(0)
    n_boot, n_stimuli, n_targets, batch = 200, 400, 4000, 256
    observed = rng.standard_normal((n_stimuli, n_targets))
    predicted = 0.3 * observed + rng.standard_normal((n_stimuli, n_targets))
    tracemalloc.start()
    stats.bootstrap_group_r(observed, predicted, np.arange(n_targets) % 7, n_boot=n_boot)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    bound = 8 * (n_boot * n_stimuli + 7 * n_stimuli * batch + 10 * n_boot * batch)
    assert peak < 1.5 * bound + 8 * n_targets * 16, (peak, bound)


def test_bootstrap_group_r_rejects_bad_input(planted_data) -> None:
    observed, predicted = planted_data
    labels = np.zeros(43, dtype=int)
    with pytest.raises(ValueError, match="same shape|shape \\(n_stimuli, n_targets\\)"):
        stats.bootstrap_group_r(observed, predicted[:, :-1], labels)
    bad = observed.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="observed has 1 non-finite"):
        stats.bootstrap_group_r(bad, predicted, labels)
    with pytest.raises(ValueError, match="groups \\[1\\] have no targets"):
        stats.bootstrap_group_r(observed, predicted, np.where(np.arange(43) > 20, 2, 0))
    with pytest.raises(ValueError, match="groups\\[0\\]: target indices must be in 0..42"):
        stats.bootstrap_group_r(observed, predicted, [np.array([0, 43])])
    with pytest.raises(ValueError, match="weights must have shape \\(n_boot, 57\\)"):
        stats.bootstrap_group_r(observed, predicted, labels, weights=np.ones((5, 56)))


# ---------------------------------------------------------------------- intervals
def test_percentile_interval_ignores_and_counts_nan() -> None:
    rng = np.random.default_rng(0)
    replicates = rng.standard_normal((500, 3))
    replicates[:17, 1] = np.nan
    replicates[:, 2] = np.nan
    low, high, n_nan, n_replicates = stats.percentile_interval(replicates, level=0.9)
    np.testing.assert_allclose(
        low[:2], [np.percentile(replicates[:, 0], 5), np.percentile(replicates[17:, 1], 5)]
    )
    np.testing.assert_allclose(
        high[:2], [np.percentile(replicates[:, 0], 95), np.percentile(replicates[17:, 1], 95)]
    )
    assert np.isnan(low[2]) and np.isnan(high[2])
    np.testing.assert_array_equal(n_nan, [0, 17, 500])
    assert n_replicates == 500
    scalar = stats.percentile_interval(replicates[:, 0])
    assert isinstance(scalar.low, float) and scalar.n_nan == 0
    with pytest.raises(ValueError, match="level must be in \\(0, 1\\)"):
        stats.percentile_interval(replicates, level=95)


@pytest.mark.slow
def test_calibration_bootstrap_interval_covers_planted_r() -> None:
    # (c) Planted truth: 200 stimuli, group 0 = 10 targets with rho 0.2, group 1 = 10 targets
    # with rho 0.5, group 2 = all 20; population group R = mean planted rho (0.2, 0.5, 0.35).
    # 95% percentile intervals from 1,000 resamples must cover it in 90-98% of 200 repetitions.
    rng = np.random.default_rng(11)
    rho = np.repeat([0.2, 0.5], 10)
    groups = [np.arange(10), np.arange(10, 20), np.arange(20)]
    truth = np.array([0.2, 0.5, 0.35])
    covered = []
    for repetition in range(200):
        observed, predicted = planted_predictions(rng, 200, rho)
        boot = stats.bootstrap_group_r(observed, predicted, groups, n_boot=1000, seed=repetition)
        low, high, n_nan, _ = stats.percentile_interval(boot)
        assert (n_nan == 0).all()
        covered.append((low <= truth) & (truth <= high))
    coverage = np.mean(covered, axis=0)
    print(f"\nbootstrap 95% interval coverage of planted group R (200 reps): {coverage}")
    assert ((coverage >= 0.90) & (coverage <= 0.98)).all(), coverage


# ---------------------------------------------------------------------- derived scores
@pytest.fixture
def boot_layers_rois() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_boot=40, n_layers=7, n_rois=9) replicates with a hierarchy, some NaN, some ties."""
    rng = np.random.default_rng(2)
    depths = np.linspace(0, 1, 7)
    distances = np.linspace(0, 80, 9)
    preferred = distances / 80  # planted best depth of each ROI
    boot = -((depths[:, None] - preferred[None]) ** 2) + 0.05 * rng.standard_normal((40, 7, 9))
    boot[3, :, 4] = np.nan  # an ROI with no score in one replicate
    boot[5] = boot[5, :1]  # every ROI best at layer 0 in one replicate: undefined score
    boot[6, 2, 0] = np.nan
    return boot, depths, distances


def test_bootstrap_spatial_score_matches_probe_scores(boot_layers_rois) -> None:
    boot, depths, distances = boot_layers_rois
    replicates = stats.bootstrap_spatial_score(boot, depths, distances)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = [spatial_score(distances, best_layer_depths(b, depths)) for b in boot]
    np.testing.assert_allclose(replicates, expected, rtol=0, atol=1e-12)
    assert np.isnan(replicates[5]) and np.isfinite(replicates[3])
    assert np.nanmedian(replicates) > 0.8  # the planted hierarchy
    best = stats.best_depth_replicates(boot, depths)
    assert np.isnan(best[3, 4])


def test_bootstrap_temporal_score_matches_probe_scores() -> None:
    rng = np.random.default_rng(4)
    depths = np.linspace(0, 1, 6)
    times = np.linspace(-0.1, 0.6, 15)
    peaks = 0.08 + 0.3 * depths  # planted T_max rises with depth
    courses = np.exp(-((times[None, None] - peaks[None, :, None]) ** 2) / 0.005)
    courses = courses + 0.1 * rng.standard_normal((30, 6, 15))  # (n_boot, n_layers, n_times)
    courses[2, 1] = -1.0  # a layer with no positive maximum: T_max NaN
    courses[4, :, 3] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected_peaks = np.array([t_max(c, times) for c in courses])
        expected = [temporal_score(depths, p) for p in expected_peaks]
    np.testing.assert_allclose(stats.t_max_replicates(courses, times), expected_peaks, atol=1e-12)
    replicates = stats.bootstrap_temporal_score(courses, depths, times)
    np.testing.assert_allclose(replicates, expected, rtol=0, atol=1e-12)
    assert np.median(replicates) > 0.8


def test_bootstrap_encoding_score_and_half_time() -> None:
    boot = np.array([[0.1, 0.3, 0.2], [np.nan, 0.1, 0.4], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(stats.bootstrap_encoding_score(boot), [0.3, 0.4, np.nan])
    fractions = np.array([0.01, 0.1, 0.5, 1.0])
    curves = np.array([[0.0, 0.1, 0.3, 0.4], [0.0, 0.3, 0.3, 0.4], [0.1, 0.0, -0.1, -0.2]])
    # half of 0.4 is 0.2: halfway between 0.1 and 0.5 in the first curve; at 0.01 + 0.09 *
    # 2/3 in the second; never (final value not positive) in the third.
    replicates = stats.bootstrap_half_time(curves, fractions)
    np.testing.assert_allclose(replicates, [0.3, 0.01 + 0.09 * 2 / 3, np.nan])
    assert replicates[1] == pytest.approx(half_time(fractions, curves[1]))
    with pytest.raises(ValueError, match="fractions must have shape \\(n_checkpoints\\)"):
        stats.bootstrap_half_time(curves, fractions[:3])


def test_derived_scores_reject_bad_shapes(boot_layers_rois) -> None:
    boot, depths, distances = boot_layers_rois
    with pytest.raises(
        ValueError, match="depths must have shape \\(n_layers\\), axis 0 of length 7"
    ):
        stats.bootstrap_spatial_score(boot, depths[:-1], distances)
    with pytest.raises(ValueError, match="distances must have shape \\(n_rois\\)"):
        stats.bootstrap_spatial_score(boot, depths, distances[:-1])
    with pytest.raises(ValueError, match="boot_r_by_layer_roi must have shape"):
        stats.bootstrap_spatial_score(boot[0], depths, distances)


def test_joint_bootstrap_over_layers_gives_a_spatial_interval() -> None:
    # Planted truth: 6 ROIs at distances 0..75 mm prefer depths 0..1; a layer's prediction of
    # an ROI has rho 0.5 - 0.4 |depth - preferred depth|. The spatial score is near 1 and its
    # interval, from replicates shared across layers, excludes 0.
    rng = np.random.default_rng(12)
    depths = np.linspace(0, 1, 5)
    distances = np.linspace(0, 75, 6)
    preferred = distances / 75
    roi_of_target = np.repeat(np.arange(6), 8)
    observed = rng.standard_normal((150, 48))
    counts = stats.resample_counts(150, n_boot=300, seed=0)
    boot = []
    for depth in depths:
        rho = 0.5 - 0.4 * np.abs(depth - preferred[roi_of_target])
        predicted = rho * observed + np.sqrt(1 - rho**2) * rng.standard_normal((150, 48))
        boot.append(stats.bootstrap_group_r(observed, predicted, roi_of_target, weights=counts))
    boot = np.stack(boot, axis=1)  # (n_boot, n_layers, n_rois)
    low, high, n_nan, _ = stats.percentile_interval(
        stats.bootstrap_spatial_score(boot, depths, distances)
    )
    assert low > 0.5 and high <= 1.0 and n_nan == 0
    # Shared resamples make replicates of two layers comparable: the spread of a difference
    # between layers is smaller than with independent resamples of each layer.
    other = stats.resample_counts(150, n_boot=300, seed=1)
    rho = 0.5 - 0.4 * np.abs(depths[1] - preferred[roi_of_target])
    predicted = rho * observed + np.sqrt(1 - rho**2) * rng.standard_normal((150, 48))
    independent = stats.bootstrap_group_r(observed, predicted, roi_of_target, weights=other)
    shared = stats.bootstrap_group_r(observed, predicted, roi_of_target, weights=counts)
    assert (
        np.std(boot[:, 0] - shared, axis=0).mean() < np.std(boot[:, 0] - independent, axis=0).mean()
    )


def test_rowwise_pearson_matches_pearson_r() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 11))
    y = rng.standard_normal((5, 11))
    np.testing.assert_allclose(stats.rowwise_pearson(x, y), pearson_r(x, y, axis=1))
    x[0, :9] = np.nan  # two pairs left: undefined
    y[1] = 3.0  # constant side
    r = stats.rowwise_pearson(x, y)
    assert np.isnan(r[:2]).all() and np.isfinite(r[2:]).all()


# ---------------------------------------------------------------------- paired comparisons
def test_wilcoxon_paired_effect_sizes_on_known_example() -> None:
    level_a = np.array([1.0, 2.0, 3.0, -4.0, 0.5, 6.0, 2.5])
    level_b = np.array([0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0])  # one zero difference (dropped)
    result = stats.wilcoxon_paired(level_a, level_b)
    differences = level_a - level_b
    # non-zero |d| = 1, 2, 3, 4, 6, 2.5 -> ranks 1, 2, 4, 5, 6, 3; T- = 5 (the -4), T+ = 16.
    assert result.rank_biserial == pytest.approx((16 - 5) / 21)
    assert result.mean_difference == pytest.approx(differences.mean())
    assert result.cohens_dz == pytest.approx(differences.mean() / differences.std(ddof=1))
    expected = scipy.stats.wilcoxon(level_a, level_b)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.n_pairs == 7 and result.n_nonzero == 6
    assert result.p_floor == pytest.approx(2.0**-5) and result.note == ""


def test_wilcoxon_paired_few_subjects_says_p_has_a_floor() -> None:
    five = stats.wilcoxon_paired(np.arange(1.0, 6.0), np.zeros(5))
    assert five.p_value == pytest.approx(0.0625) and five.p_floor == pytest.approx(0.0625)
    assert "cannot give p below 0.0625" in five.note and "sign_flip_test" in five.note
    six = stats.wilcoxon_paired(np.arange(1.0, 7.0), np.zeros(6))
    assert six.p_value == pytest.approx(0.03125) and six.note == ""
    zeros = stats.wilcoxon_paired(np.ones(4), np.ones(4))
    assert zeros.p_value == 1.0 and np.isnan(zeros.rank_biserial)


def test_wilcoxon_paired_vectorised_rows_equal_single_calls() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 4, 9))
    a[2, 3] = np.nan
    batch = stats.wilcoxon_paired(a, b, alternative="greater")
    for row in range(4):
        single = stats.wilcoxon_paired(a[row], b[row], alternative="greater")
        assert batch.p_value[row] == pytest.approx(single.p_value)
        assert batch.rank_biserial[row] == pytest.approx(single.rank_biserial)
    assert batch.n_pairs[2] == 8
    with pytest.raises(ValueError, match="same shape"):
        stats.wilcoxon_paired(a, b[:, :-1])


def test_sign_flip_exact_equals_enumeration_and_scipy() -> None:
    rng = np.random.default_rng(5)
    differences = rng.standard_normal(11) + 0.4
    result = stats.sign_flip_test(differences, n_permutations=5000)
    assert result.exact and result.n_permutations == 2**11
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=11)))
    null = signs @ differences
    by_hand = np.mean(np.abs(null) >= abs(differences.sum()) - 1e-12)
    assert result.p_value == pytest.approx(by_hand)
    reference = scipy.stats.permutation_test(
        (differences,), np.mean, permutation_type="samples", n_resamples=5000
    )
    assert result.p_value == pytest.approx(reference.pvalue)
    greater = stats.sign_flip_test(differences, n_permutations=5000, alternative="greater")
    assert greater.p_value == pytest.approx(np.mean(null >= differences.sum() - 1e-12))


def test_sign_flip_random_agrees_with_scipy_and_has_plus_one() -> None:
    rng = np.random.default_rng(6)
    differences = rng.standard_normal(60) + 0.25
    ours = stats.sign_flip_test(differences, n_permutations=20000, seed=1)
    reference = scipy.stats.permutation_test(
        (differences,),
        lambda x, axis: x.mean(axis=axis),
        permutation_type="samples",
        n_resamples=20000,
        rng=np.random.default_rng(1),
    )
    assert not ours.exact
    # Both are Monte Carlo estimates of the same p (about 0.05): 4 standard errors apart at most.
    standard_error = np.sqrt(reference.pvalue * (1 - reference.pvalue) / 20000)
    assert abs(ours.p_value - reference.pvalue) < 4 * np.sqrt(2) * standard_error
    huge = stats.sign_flip_test(np.full(40, 1.0) + 0.01 * np.arange(40), n_permutations=9)
    assert huge.p_value == pytest.approx(1 / 10)  # (0 + 1) / (9 + 1)


def test_sign_flip_blocks_and_nan() -> None:
    rng = np.random.default_rng(7)
    differences = rng.standard_normal(30) + 0.3
    blocks = np.repeat([4, 9, 2, 7, 1, 3], 5)
    blocked = stats.sign_flip_test(differences, blocks=blocks, n_permutations=100)
    sums = np.array([differences[blocks == b].sum() for b in np.unique(blocks)])
    on_sums = stats.sign_flip_test(sums, n_permutations=100)
    assert blocked.exact and blocked.n_units == 6
    assert blocked.p_value == pytest.approx(on_sums.p_value)
    assert blocked.mean_difference == pytest.approx(differences.mean())
    each_own = stats.sign_flip_test(differences, blocks=np.arange(30), n_permutations=999)
    plain = stats.sign_flip_test(differences, n_permutations=999)
    assert each_own.p_value == pytest.approx(plain.p_value)
    with_nan = differences.copy()
    with_nan[[0, 5]] = np.nan
    result = stats.sign_flip_test(with_nan, n_permutations=999)
    assert result.n_targets == 28
    assert result.mean_difference == pytest.approx(np.nanmean(with_nan))
    with pytest.raises(ValueError, match="blocks must hold one integer label per target"):
        stats.sign_flip_test(differences, blocks=blocks[:-1])


@pytest.mark.slow
def test_calibration_no_difference_false_positives() -> None:
    # (a) Planted truth: both levels have the same rho in every subject (Wilcoxon path:
    # 10 subjects, subject rho 0.3 + N(0, 0.05), 20 targets, 100 stimuli) and in every target
    # (sign-flip path: 100 targets with rho 0.1..0.5, 200 stimuli). 400 comparisons per path,
    # BH over families of 20 (e.g. ROIs): corrected false-positive rate <= 5%; uncorrected
    # rejection rates within binomial bands (p roughly uniform).
    rng = np.random.default_rng(21)
    score_a, score_b = subject_level_scores(rng, 400, 10, 0.0)
    p_wilcoxon = np.asarray(stats.wilcoxon_paired(score_a, score_b).p_value)
    differences = target_differences(rng, 400, 100, 0.0)
    p_sign_flip = np.asarray(stats.sign_flip_test(differences, n_permutations=999).p_value)
    for name, p in (("wilcoxon", p_wilcoxon), ("sign-flip", p_sign_flip)):
        rejected = np.concatenate([stats.fdr_bh(family).rejected for family in p.reshape(20, 20)])
        rates = {alpha: float(np.mean(p <= alpha)) for alpha in (0.01, 0.05, 0.1, 0.25, 0.5)}
        print(
            f"\n{name}: uncorrected rejection rates {rates}; FDR-corrected false-positive rate "
            f"{rejected.mean():.4f} over 400 null comparisons"
        )
        assert rejected.mean() <= ALPHA
        for alpha, rate in rates.items():
            low, high = binomial_band(400, alpha)
            assert low <= rate <= high, (name, alpha, rate)
    ks = scipy.stats.kstest(p_sign_flip, "uniform")
    print(f"sign-flip p values against uniform: KS p = {ks.pvalue:.3f}")
    assert ks.pvalue > 0.001


@pytest.mark.slow
def test_calibration_planted_difference_is_detected() -> None:
    # (b) Planted truth: level A's rho exceeds level B's by 0.04 in every subject (Wilcoxon,
    # 10 subjects, as above) or by 0.03 in every target (sign flip, 100 targets, as above).
    # Power at alpha 0.05 over 200 comparisons must exceed 80%; in families of 20 mixing 10
    # such comparisons with 10 null ones, BH keeps the mean false discovery proportion <= 5%.
    rng = np.random.default_rng(22)
    effect_a, effect_b = subject_level_scores(rng, 200, 10, 0.04)
    null_a, null_b = subject_level_scores(rng, 200, 10, 0.0)
    p_wilcoxon_effect = np.asarray(stats.wilcoxon_paired(effect_a, effect_b).p_value)
    p_wilcoxon_null = np.asarray(stats.wilcoxon_paired(null_a, null_b).p_value)
    p_sign_flip_effect = np.asarray(
        stats.sign_flip_test(target_differences(rng, 200, 100, 0.03), n_permutations=999).p_value
    )
    p_sign_flip_null = np.asarray(
        stats.sign_flip_test(target_differences(rng, 200, 100, 0.0), n_permutations=999).p_value
    )
    for name, effect, null in (
        ("wilcoxon (rho +0.04, 10 subjects)", p_wilcoxon_effect, p_wilcoxon_null),
        ("sign-flip (rho +0.03, 100 targets)", p_sign_flip_effect, p_sign_flip_null),
    ):
        power = float(np.mean(effect <= ALPHA))
        families = np.concatenate([effect.reshape(20, 10), null.reshape(20, 10)], axis=1)
        is_null = np.arange(20) >= 10
        proportions, corrected_power = [], []
        for family in families:
            rejected = stats.fdr_bh(family).rejected
            proportions.append(rejected[is_null].sum() / max(rejected.sum(), 1))
            corrected_power.append(rejected[~is_null].mean())
        print(
            f"\n{name}: power {power:.3f} uncorrected, {np.mean(corrected_power):.3f} after BH; "
            f"mean false discovery proportion {np.mean(proportions):.4f}"
        )
        assert power > 0.8
        assert np.mean(proportions) <= ALPHA


# ---------------------------------------------------------------------- FDR
def test_fdr_bh_equals_hand_written_and_scipy() -> None:
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    result = stats.fdr_bh(p, alpha=0.05)
    q, rejected = hand_bh(p, 0.05)
    np.testing.assert_allclose(result.q_values, q)
    np.testing.assert_allclose(result.q_values, scipy.stats.false_discovery_control(p))
    np.testing.assert_array_equal(result.rejected, rejected)
    # By hand: p_(k) <= k * 0.05 / 10 holds for k = 1, 2 only (0.039 > 0.015).
    np.testing.assert_array_equal(np.flatnonzero(result.rejected), [0, 1])
    # At alpha 0.1 the largest k with p_(k) <= k / 100 is 6 (0.06 <= 0.06, 0.074 > 0.07): the
    # step-up rejects k = 1..6, including k = 3..5 whose own p_(k) pass as well.
    np.testing.assert_array_equal(np.flatnonzero(stats.fdr_bh(p, alpha=0.1).rejected), range(6))


def test_fdr_bh_table_shape_nan_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    table = rng.uniform(0, 0.2, size=(3, 4))
    table[1, 2] = np.nan  # an untestable comparison leaves the family
    result = stats.fdr_bh(table)
    assert result.q_values.shape == (3, 4) and result.n_tests == 11
    assert np.isnan(result.q_values[1, 2]) and not result.rejected[1, 2]
    finite = np.isfinite(table)
    np.testing.assert_allclose(result.q_values[finite], hand_bh(table[finite], 0.05)[0])
    with pytest.raises(ValueError, match="p values must be in \\[0, 1\\]"):
        stats.fdr_bh([0.1, 1.5])


# ---------------------------------------------------------------------- chance levels
def test_spatial_permutation_exact_equals_enumeration() -> None:
    distances = np.array([0.0, 12.0, 20.0, 31.0, 45.0, 60.0])
    best = np.array([0.0, 0.2, 0.1, 0.6, 0.5, 1.0])
    result = stats.spatial_score_permutation_test(distances, best)
    assert result.exact and result.n_permutations == 720
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert result.observed == pytest.approx(spatial_score(distances, best))
    null = np.array(
        [pearson_r(distances[list(order)], best) for order in itertools.permutations(range(6))]
    )
    assert result.p_value == pytest.approx(np.mean(null >= result.observed - 1e-12))
    assert result.null_95th == pytest.approx(np.percentile(null, 95))


def test_permutation_tests_undefined_scores_are_not_run() -> None:
    result = stats.temporal_score_permutation_test(
        np.linspace(0, 1, 5), np.array([0.1, np.nan, np.nan, np.nan, 0.3])
    )
    assert np.isnan(result.p_value) and "2 finite pairs" in result.note
    constant = stats.spatial_score_permutation_test(np.arange(5.0), np.full(5, 0.5))
    assert np.isnan(constant.observed)


def test_calibration_permutation_chance_levels() -> None:
    # (f) Null: best depths drawn from 12 layer depths independently of 10 ROI distances, and
    # T_max drawn uniformly in 0..0.4 s independently of 12 layer depths: p roughly uniform
    # (rejection rates within binomial bands over 300 repetitions; KS for the continuous
    # T_max). Planted: best depth = distance / 80 + N(0, 0.15) rounded to a layer, and
    # T_max = 0.05 + 0.25 depth + N(0, 0.05): p < 0.05 in at least 90% of repetitions.
    rng = np.random.default_rng(31)
    layer_depths = np.linspace(0, 1, 12)
    distances = np.linspace(0, 80, 10)
    p_spatial, p_temporal, p_spatial_planted, p_temporal_planted = [], [], [], []
    for repetition in range(300):
        random_best = rng.choice(layer_depths, size=10)
        random_peaks = rng.uniform(0, 0.4, size=12)
        noisy = np.clip(distances / 80 + 0.15 * rng.standard_normal(10), 0, 1)
        planted_best = layer_depths[np.abs(noisy[:, None] - layer_depths).argmin(axis=1)]
        planted_peaks = 0.05 + 0.25 * layer_depths + 0.05 * rng.standard_normal(12)
        for target, x, y in (
            (p_spatial, distances, random_best),
            (p_temporal, layer_depths, random_peaks),
            (p_spatial_planted, distances, planted_best),
            (p_temporal_planted, layer_depths, planted_peaks),
        ):
            target.append(
                stats.correlation_permutation_test(
                    x, y, n_permutations=999, seed=repetition
                ).p_value
            )
    for name, p in (("spatial", p_spatial), ("temporal", p_temporal)):
        p = np.asarray(p)
        p = p[np.isfinite(p)]
        rates = {alpha: float(np.mean(p <= alpha)) for alpha in (0.05, 0.1, 0.25, 0.5)}
        print(f"\n{name} permutation p under the null: rejection rates {rates} (n={len(p)})")
        for alpha, rate in rates.items():
            low, high = binomial_band(len(p), alpha)
            assert low <= rate <= high, (name, alpha, rate)
    assert scipy.stats.kstest(p_temporal, "uniform").pvalue > 0.001
    for name, p in (("spatial", p_spatial_planted), ("temporal", p_temporal_planted)):
        detected = float(np.mean(np.asarray(p) < ALPHA))
        print(f"{name} permutation test under the planted hierarchy: p < 0.05 in {detected:.3f}")
        assert detected >= 0.9


# ---------------------------------------------------------------------- trends
def test_trend_single_series_equals_linregress() -> None:
    sizes = np.array([5e6, 2e7, 8e7, 3e8, 1e9])
    scores = np.array([0.10, 0.14, 0.13, 0.2, 0.22])
    result = stats.trend_test(sizes, scores)
    fit = scipy.stats.linregress(np.log10(sizes), scores)
    assert result.slope == pytest.approx(fit.slope) and result.slope_p == pytest.approx(fit.pvalue)
    half_width = scipy.stats.t.ppf(0.975, 3) * fit.stderr
    assert result.slope_low == pytest.approx(fit.slope - half_width)
    assert result.spearman_rho == pytest.approx(0.9)
    assert result.n_subjects == 1 and np.isnan(result.slope_p_wilcoxon)


def test_trend_across_subjects_uses_per_subject_slopes() -> None:
    # Planted truth: score = subject offset (spread 0.2) + 0.03 per tenfold size + N(0, 0.005).
    rng = np.random.default_rng(8)
    sizes = np.tile([1e6, 1e7, 1e8, 1e9], 8)
    subjects = np.repeat([f"s{i}" for i in range(8)], 4)
    offsets = np.repeat(0.2 * rng.standard_normal(8), 4)
    scores = offsets + 0.03 * np.log10(sizes) + 0.005 * rng.standard_normal(32)
    result = stats.trend_test(sizes, scores, subjects=subjects)
    assert result.n_subjects == 8 and result.n_levels == 4 and result.n_points == 32
    assert result.slope_low < 0.03 < result.slope_high and result.slope_p < 0.001
    slopes = [
        scipy.stats.linregress(np.log10(sizes[:4]), scores[subjects == s]).slope
        for s in dict.fromkeys(subjects)
    ]
    np.testing.assert_allclose(result.subject_slopes, slopes)
    assert result.slope_p_wilcoxon == pytest.approx(scipy.stats.wilcoxon(slopes).pvalue)
    assert result.spearman_rho == pytest.approx(1.0)
    # Pooling the 32 points would hide the trend under the subject offsets; the per-subject
    # test does not.
    assert scipy.stats.pearsonr(np.log10(sizes), scores).pvalue > result.slope_p
    with pytest.raises(ValueError, match="levels must be positive"):
        stats.trend_test(np.array([0.0, 1.0, 2.0]), np.ones(3))
