"""Bootstrap over stimuli of held-out predictions: group-mean R per replicate, and intervals.

A probe's cross-validated ridge predicts every stimulus once (each stimulus is in exactly one
test fold). The bootstrap resamples those stimuli with replacement and recomputes, without
refitting, R per target (Pearson of observed vs predicted over the resampled stimuli) and its
mean over each group of targets (ROI, MEG time sample, window, ``all``). The probe reports R
per outer fold averaged over folds (``EncodingResult.r``); given the folds' test indices
(``folds=``), stimuli are resampled within their fold and R is averaged over folds the same way,
so the bootstrap estimates the very number the probe reports. Without folds, R is one Pearson
correlation over all held-out predictions.

Resample ``b`` is a row of counts ``W[b, i]`` (how often stimulus ``i`` was drawn), so every
sum over a resample is a matrix product: for a batch of targets, the five sums ``W @ y``,
``W @ p``, ``W @ y**2``, ``W @ p**2``, ``W @ (y * p)`` give R for all resamples at once, and
R is reduced to group means straight away. Memory is about
``8 * (n_boot * n_stimuli + 7 * n_stimuli * target_batch + 10 * n_boot * target_batch)``
bytes (~250 MB at 1,000 resamples x 10,000 stimuli with the default batch; the first term
twice with folds), whatever the number of targets: ``(n_boot, n_stimuli, n_targets)`` is never
formed.

The resamples depend only on ``(n_stimuli, n_boot, seed, folds)``: every layer, checkpoint and model
probed on the same stimuli (rows in the same order) gets the same resamples, so replicate ``b``
of every layer and ROI comes from the same stimuli and derived scores (best depth, spatial
score, half time) can be bootstrapped jointly (:mod:`brainalign.probe.bootstrap_scores`).

Run::

    counts = resample_counts(n_stimuli, n_boot=1000, seed=0)
    boot = np.stack([bootstrap_group_r(y, p, roi_of_target, weights=counts)
                     for p in predictions_by_layer], axis=1)  # (n_boot, n_layers, n_rois)
    low, high, n_nan, _ = percentile_interval(boot, level=0.95)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

import numpy as np
import scipy.sparse

from brainalign.probe.scores import pearson_r
from brainalign.utils.checks import check_count

__all__ = [
    "Folds",
    "GroupRAccumulator",
    "GroupSpec",
    "PercentileInterval",
    "bootstrap_group_r",
    "bootstrap_group_r_loop",
    "check_folds",
    "group_index_sets",
    "percentile_interval",
    "resample_counts",
    "resample_indices",
]

#: Targets grouped either by one integer label each (0..n_groups-1) or by index sets that
#: may overlap (a MEG target in its time sample and in its window).
GroupSpec = np.ndarray | Sequence[np.ndarray] | Sequence[int]

#: Default number of targets whose sufficient statistics are formed at once.
DEFAULT_TARGET_BATCH = 256


# ---------------------------------------------------------------------- resamples
Folds = Sequence[np.ndarray] | None


def check_folds(folds: Folds, n_stimuli: int) -> list[np.ndarray]:
    """The outer folds' test indices as a partition of the stimuli (one fold when None).

    Parameters
    ----------
    folds : sequence of ndarray of int, or None
        Stimulus rows held out in each outer fold (``EncodingResult.test_indices``); every
        stimulus in exactly one fold, at least 2 per fold.
    n_stimuli : int

    Returns
    -------
    folds : list of ndarray of int64
    """
    check_count("n_stimuli", n_stimuli, minimum=2)
    if folds is None:
        return [np.arange(n_stimuli)]
    folds = [np.asarray(fold) for fold in folds]
    if not folds or any(f.ndim != 1 or not np.issubdtype(f.dtype, np.integer) for f in folds):
        raise ValueError("folds must be a non-empty list of 1-D integer arrays of stimulus rows")
    small = [k for k, fold in enumerate(folds) if len(fold) < 2]
    if small:
        raise ValueError(f"folds {small} hold fewer than 2 stimuli; R needs at least 2")
    joined = np.sort(np.concatenate(folds))
    if len(joined) != n_stimuli or not np.array_equal(joined, np.arange(n_stimuli)):
        raise ValueError(
            f"folds must hold every stimulus row 0..{n_stimuli - 1} exactly once (the outer "
            f"folds' test indices); they hold {len(joined)} rows, "
            f"{len(joined) - len(np.unique(joined))} repeated"
        )
    return [fold.astype(np.int64) for fold in folds]


def _index_rows(
    n_stimuli: int, n_boot: int, seed: int, folds: Folds = None
) -> Iterator[np.ndarray]:
    """Resampled stimulus indices, one resample (row) at a time, from ``default_rng(seed)``.

    Each fold's stimuli are drawn from that fold (as many as it holds), folds in order.
    """
    folds = check_folds(folds, n_stimuli)
    check_count("n_boot", n_boot)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([fold[rng.integers(0, len(fold), size=len(fold))] for fold in folds])


def resample_indices(
    n_stimuli: int, n_boot: int = 1000, seed: int = 0, folds: Folds = None
) -> np.ndarray:
    """Stimulus indices of each bootstrap resample (drawn with replacement).

    Parameters
    ----------
    n_stimuli : int
    n_boot : int, default=1000
    seed : int, default=0
    folds : sequence of ndarray of int, optional
        Outer folds' test indices: resample within each fold (see :func:`check_folds`).

    Returns
    -------
    indices : ndarray of shape (n_boot, n_stimuli), int64
        Row ``b`` lists the stimuli of resample ``b`` (fold by fold, in fold order); the same
        draws as :func:`resample_counts` with the same arguments.
    """
    return np.stack(list(_index_rows(n_stimuli, n_boot, seed, folds)))


def resample_counts(
    n_stimuli: int, n_boot: int = 1000, seed: int = 0, folds: Folds = None
) -> np.ndarray:
    """How often each stimulus is drawn in each bootstrap resample.

    Parameters
    ----------
    n_stimuli, n_boot, seed, folds
        As :func:`resample_indices`.

    Returns
    -------
    counts : ndarray of shape (n_boot, n_stimuli), float64
        ``counts[b, i]``: occurrences of stimulus ``i`` in resample ``b`` (each fold's
        columns sum to its size); the indices of :func:`resample_indices`, counted.
    """
    counts = np.empty((n_boot, n_stimuli), dtype=np.float64)
    for row, indices in enumerate(_index_rows(n_stimuli, n_boot, seed, folds)):
        counts[row] = np.bincount(indices, minlength=n_stimuli)
    return counts


# ---------------------------------------------------------------------- groups
def group_index_sets(groups: GroupSpec, n_targets: int) -> list[np.ndarray]:
    """Normalise a group specification to one sorted index array per group.

    Parameters
    ----------
    groups : ndarray of shape (n_targets,) of int, or sequence of index arrays / boolean masks
        Integer labels ``0..n_groups-1`` (group ``g`` is label ``g``), or one array per group
        (indices into the targets, or a boolean mask of length ``n_targets``); sets may
        overlap.
    n_targets : int

    Returns
    -------
    index_sets : list of ndarray of int64
        One non-empty array per group, in group order.
    """
    if isinstance(groups, np.ndarray) or all(np.ndim(item) == 0 for item in groups):
        labels = np.asarray(groups)
        if labels.shape != (n_targets,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"groups: expected one integer label per target, shape ({n_targets},), got "
                f"dtype {labels.dtype} and shape {labels.shape}; or pass a list of index arrays"
            )
        if labels.size and labels.min() < 0:
            raise ValueError(f"groups: labels must be 0..n_groups-1, got {labels.min()}")
        n_groups = int(labels.max()) + 1 if labels.size else 0
        index_sets = [np.flatnonzero(labels == g) for g in range(n_groups)]
    else:
        index_sets = []
        for g, item in enumerate(groups):
            item = np.asarray(item)
            if item.dtype == bool:
                if item.shape != (n_targets,):
                    raise ValueError(
                        f"groups[{g}]: a boolean mask needs {n_targets} values, got {item.shape}"
                    )
                item = np.flatnonzero(item)
            if item.ndim != 1 or (item.size and not np.issubdtype(item.dtype, np.integer)):
                raise ValueError(f"groups[{g}]: expected a 1-D array of target indices")
            if item.size and (item.min() < 0 or item.max() >= n_targets):
                raise ValueError(
                    f"groups[{g}]: target indices must be in 0..{n_targets - 1}, got "
                    f"{item.min()}..{item.max()}"
                )
            index_sets.append(np.unique(item.astype(np.int64)))
    if not index_sets:
        raise ValueError("groups: no group given")
    empty = [g for g, index in enumerate(index_sets) if index.size == 0]
    if empty:
        raise ValueError(f"groups {empty} have no targets; drop them or fix the labels")
    return index_sets


def _membership(index_sets: list[np.ndarray], n_targets: int) -> scipy.sparse.csr_array:
    """Sparse (n_targets, n_groups) 0/1 matrix: target t belongs to group g."""
    rows = np.concatenate(index_sets)
    cols = np.repeat(np.arange(len(index_sets)), [len(index) for index in index_sets])
    data = np.ones(len(rows), dtype=np.float64)
    return scipy.sparse.csr_array((data, (rows, cols)), shape=(n_targets, len(index_sets)))


def _check_pair(observed: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    observed = np.asarray(observed, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if observed.ndim != 2 or observed.shape != predicted.shape:
        raise ValueError(
            "observed and predicted must both have shape (n_stimuli, n_targets), got "
            f"{observed.shape} and {predicted.shape}"
        )
    for name, values in (("observed", observed), ("predicted", predicted)):
        if not np.isfinite(values).all():
            raise ValueError(
                f"{name} has {int((~np.isfinite(values)).sum())} non-finite values; drop those "
                "targets or stimuli before the bootstrap"
            )
    return observed, predicted


# ---------------------------------------------------------------------- group R
def bootstrap_group_r(
    observed: np.ndarray,
    predicted: np.ndarray,
    groups: GroupSpec,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    target_batch: int = DEFAULT_TARGET_BATCH,
    weights: np.ndarray | None = None,
    folds: Folds = None,
    dtype: type[np.floating] = np.float64,
) -> np.ndarray:
    """Mean R over each group of targets, per bootstrap resample of the stimuli (no refit).

    Parameters
    ----------
    observed : ndarray of shape (n_stimuli, n_targets)
        Brain responses.
    predicted : ndarray of shape (n_stimuli, n_targets)
        Held-out predictions of the same stimuli (rows in the same order).
    groups : ndarray of shape (n_targets,) of int, or sequence of index arrays
        See :func:`group_index_sets`.
    n_boot : int, default=1000
        Number of resamples (ignored when ``weights`` is given).
    seed : int, default=0
        Seed of the resamples (ignored when ``weights`` is given); the same seed and number of
        stimuli give the same resamples in every call.
    target_batch : int, default=256
        Targets whose sums are formed at once (bounds memory, see the module docstring).
    weights : ndarray of shape (n_boot, n_stimuli), optional
        Resample weights, e.g. :func:`resample_counts` computed once and reused for every
        layer; any non-negative weights work (R is then the weighted Pearson correlation).
        With ``folds``, pass ``resample_counts(..., folds=folds)``.
    folds : sequence of ndarray of int, optional
        The outer folds' test indices (``EncodingResult.test_indices``). Given, R of a target
        is the mean over folds of its Pearson R within each fold, as the probe reports it,
        and stimuli are resampled within their fold; otherwise R is one Pearson over all
        stimuli.
    dtype : numpy float type, default=numpy.float64
        Precision of the resample sums. ``float32`` halves the memory of the sums and the
        cost of the matrix products (which dominate when ``n_boot x n_stimuli`` is large);
        R then differs from float64 by ~1e-7 (``benchmarks/study_stats.py`` measures both).

    Returns
    -------
    boot_r : ndarray of shape (n_boot, n_groups)
        Mean over each group's targets of R in each resample. Targets whose R is undefined in
        a resample (constant observed or predicted values over the drawn stimuli, of any
        fold) are left out of that resample's mean, as ``np.nanmean`` does in the probe;
        NaN if all are.
    """
    observed, predicted = _check_pair(observed, predicted)
    n_stimuli, n_targets = observed.shape
    check_count("target_batch", target_batch)
    membership = _membership(group_index_sets(groups, n_targets), n_targets)
    folds = check_folds(folds, n_stimuli)
    if weights is None:
        weights = resample_counts(n_stimuli, n_boot, seed, folds)
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != n_stimuli:
        raise ValueError(
            f"weights must have shape (n_boot, {n_stimuli}) (one column per stimulus), got "
            f"{weights.shape}"
        )
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise ValueError("weights must be finite and non-negative (resample counts)")
    accumulator = GroupRAccumulator(weights, folds, membership, dtype=dtype)
    for start in range(0, n_targets, target_batch):
        batch = slice(start, min(start + target_batch, n_targets))
        for index, fold in enumerate(accumulator.folds):
            accumulator.add(index, fold, batch, predicted[fold, batch], observed[fold, batch])
    return accumulator.result()


class GroupRAccumulator:
    """Group-mean R (or R2) per resample, accumulated from held-out predictions as they come.

    The ridge solver hands its predictions over one (outer fold, target batch) at a time
    (``prediction_sink`` of :func:`brainalign.probe.ridge.fit_encoding`); once every fold of a
    target batch has been added, that batch's R (mean over folds) is reduced into the group
    sums, so no more than one batch of predictions is ever kept. With ``score="r2"`` the value
    is R2 of each fold instead, the ``r2_score`` that banded ridge reports
    (:func:`brainalign.probe.metrics.variance_partitioning.fit_banded_ridge`), with the
    observed spread of a resample corrected for its repeated stimuli (:func:`_resampled_r2`);
    a target is then left out of a resample's mean only when its observed values are constant
    there.

    Parameters
    ----------
    weights : ndarray of shape (n_boot, n_stimuli)
        Resample counts (:func:`resample_counts` with the same ``folds``).
    folds : list of ndarray of int
        The outer folds' test indices, as :func:`check_folds` returns them.
    membership : sparse matrix of shape (n_targets, n_groups), or GroupSpec
        Which targets belong to which group (a group specification is converted with
        :func:`group_index_sets`; give ``n_targets`` then).
    n_targets : int, optional
        Needed when ``membership`` is a group specification.
    dtype : numpy float type
        Precision of the resample sums.
    score : {"r", "r2"}, default="r"
        Pearson R of observed and predicted, or the coefficient of determination R2.
    """

    def __init__(
        self,
        weights: np.ndarray,
        folds: Sequence[np.ndarray],
        membership: scipy.sparse.csr_array | GroupSpec,
        *,
        n_targets: int | None = None,
        dtype: type[np.floating] = np.float64,
        score: Literal["r", "r2"] = "r",
    ) -> None:
        if score not in ("r", "r2"):
            raise ValueError(f"score must be 'r' or 'r2'; got {score!r}")
        self._resampled = _resampled_r if score == "r" else _resampled_r2
        if not scipy.sparse.issparse(membership):
            if n_targets is None:
                raise ValueError("n_targets is needed to read a group specification")
            membership = _membership(group_index_sets(membership, n_targets), n_targets)
        self.membership = membership
        self.folds = [np.asarray(fold, dtype=np.int64) for fold in folds]
        weights = np.asarray(weights).astype(dtype, copy=False)
        self._fold_weights = [weights[:, fold] for fold in self.folds]  # (n_boot, n_fold) each
        self._totals = [w.sum(axis=1, dtype=np.float64)[:, None] for w in self._fold_weights]
        self._tolerance = 1000 * np.finfo(dtype).eps  # relative: a variance below this is zero
        n_boot, n_groups = weights.shape[0], membership.shape[1]
        self._sums = np.zeros((n_boot, n_groups))
        self._counts = np.zeros((n_boot, n_groups))
        self._pending: dict[tuple[int, int], list] = {}  # batch -> [r sum, valid, n folds]

    def add(
        self,
        fold_index: int,
        test_rows: np.ndarray,
        targets: slice,
        predicted: np.ndarray,
        observed: np.ndarray,
    ) -> None:
        """Add the predictions of one fold for a batch of targets.

        Parameters
        ----------
        fold_index : int
        test_rows : ndarray of shape (n_test,)
            Must be the fold's test rows, in the fold's order.
        targets : slice
            The batch's target columns.
        predicted, observed : ndarray of shape (n_test, n_batch)
        """
        if not np.array_equal(np.asarray(test_rows), self.folds[fold_index]):
            raise ValueError(
                f"fold {fold_index}: the predictions' test rows are not the fold's (the "
                "resamples were drawn for other folds)"
            )
        observed, predicted = _check_pair(observed, predicted)
        r_fold, ratio = self._resampled(
            observed, predicted, self._fold_weights[fold_index], self._totals[fold_index]
        )  # (n_boot, n_batch) each
        key = (targets.start or 0, targets.stop)
        entry = self._pending.setdefault(key, [0.0, True, 0])
        entry[0] = entry[0] + r_fold / len(self.folds)
        entry[1] = entry[1] & (ratio > self._tolerance)
        entry[2] += 1
        if entry[2] == len(self.folds):
            del self._pending[key]
            r = np.where(entry[1], entry[0], 0.0)
            group_of = self.membership[targets]  # (n_batch, n_groups)
            self._sums += (group_of.T @ r.T).T
            self._counts += (group_of.T @ np.asarray(entry[1], dtype=np.float64).T).T

    def result(self) -> np.ndarray:
        """Mean R of each group's targets per resample, shape (n_boot, n_groups)."""
        if self._pending:
            raise RuntimeError(f"{len(self._pending)} target batches lack some folds")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self._counts > 0, self._sums / self._counts, np.nan)


def _resampled_r(
    observed: np.ndarray, predicted: np.ndarray, weights: np.ndarray, total_weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """R per resample and target from weighted sums, and each R's smaller relative variance.

    Returns
    -------
    r : ndarray of shape (n_boot, n_batch)
        NaN-free but meaningless where the returned variance ratio is ~0.
    variance_ratio : ndarray of shape (n_boot, n_batch)
        ``min(var_y / mean(y**2), var_p / mean(p**2))`` within the resample: ~0 when either
        side is constant over the drawn stimuli.
    """
    # Standardise over all stimuli first (R is unchanged): the sums then have no large means
    # to cancel, which keeps float64 agreement with a direct computation at ~1e-13.
    n_stimuli, n_batch = observed.shape
    stacked = np.empty((n_stimuli, 5 * n_batch), dtype=weights.dtype)  # [y, p, yy, pp, yp]
    y, p, yy, pp, yp = (stacked[:, k * n_batch : (k + 1) * n_batch] for k in range(5))
    y[...] = _standardise(observed)
    p[...] = _standardise(predicted)
    np.multiply(y, y, out=yy)
    np.multiply(p, p, out=pp)
    np.multiply(y, p, out=yp)
    sums = (weights @ stacked).astype(np.float64, copy=False)  # (n_boot, 5 * n_batch)
    sum_y, sum_p, sum_yy, sum_pp, sum_yp = (
        sums[:, k * n_batch : (k + 1) * n_batch] for k in range(5)
    )
    covariance = sum_yp - sum_y * sum_p / total_weight
    variance_y = sum_yy - sum_y**2 / total_weight
    variance_p = sum_pp - sum_p**2 / total_weight
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.minimum(variance_y / sum_yy, variance_p / sum_pp)
        r = covariance / np.sqrt(np.maximum(variance_y * variance_p, 0.0))
    return r, np.nan_to_num(ratio, nan=0.0)


def _resampled_r2(
    observed: np.ndarray, predicted: np.ndarray, weights: np.ndarray, total_weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """R2 per resample and target from weighted sums, and the observed side's relative variance.

    ``1 - SS_res / (SS_tot * n / (n - 1))`` over the resampled stimuli, with
    ``SS_res = sum w (y - p)**2`` and ``SS_tot = sum w y**2 - (sum w y)**2 / n`` (``n = sum w``).
    The factor ``n / (n - 1)``: drawing with replacement shrinks the spread of the observed
    values by ``(n - 1) / n`` on average (repeated stimuli), not the residuals, so scikit-learn's
    ``r2_score`` of a resample sits ``(1 - R2) / n`` below the estimate on average, and on test
    folds of ~100 stimuli the point estimate falls outside its own percentile interval where R2
    is near 0. With it, the resamples are centred on the estimate. Returns (n_boot, n_batch)
    R2 (meaningless where the ratio is ~0) and ``var_y / mean(y**2)`` within the resample.
    """
    # R2 is unchanged when y and p are shifted and scaled together: standardise both by y's
    # mean and scale over all stimuli, as _resampled_r does for R.
    n_stimuli, n_batch = observed.shape
    centre = observed.mean(axis=0)
    scale = np.sqrt(((observed - centre) ** 2).mean(axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    stacked = np.empty((n_stimuli, 3 * n_batch), dtype=weights.dtype)  # [y, yy, residual**2]
    y, yy, residual = (stacked[:, k * n_batch : (k + 1) * n_batch] for k in range(3))
    y[...] = (observed - centre) / scale
    np.multiply(y, y, out=yy)
    np.square((observed - predicted) / scale, out=residual)
    sums = (weights @ stacked).astype(np.float64, copy=False)  # (n_boot, 3 * n_batch)
    sum_y, sum_yy, sum_residual = (sums[:, k * n_batch : (k + 1) * n_batch] for k in range(3))
    variance_y = sum_yy - sum_y**2 / total_weight
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - sum_residual * (total_weight - 1.0) / (variance_y * total_weight)
        ratio = variance_y / sum_yy
    return np.nan_to_num(r2, nan=0.0, posinf=0.0, neginf=0.0), np.nan_to_num(ratio, nan=0.0)


def _standardise(values: np.ndarray) -> np.ndarray:
    """Columns minus their mean, divided by their standard deviation (constant columns: 0)."""
    centred = values - values.mean(axis=0)
    scale = np.sqrt((centred**2).mean(axis=0))
    return centred / np.where(scale > 0, scale, 1.0)


def bootstrap_group_r_loop(
    observed: np.ndarray,
    predicted: np.ndarray,
    groups: GroupSpec,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    folds: Folds = None,
) -> np.ndarray:
    """The plain-loop reference of :func:`bootstrap_group_r` (slow; for tests and benchmarks).

    Each resample takes the rows of :func:`resample_indices`, recomputes R per target with
    :func:`brainalign.probe.scores.pearson_r` (per fold, then averaged over folds, when
    ``folds`` is given) and averages it over each group's targets with ``np.nanmean``. Same
    arguments and result as :func:`bootstrap_group_r`.
    """
    observed, predicted = _check_pair(observed, predicted)
    index_sets = group_index_sets(groups, observed.shape[1])
    fold_ends = np.cumsum([len(fold) for fold in check_folds(folds, observed.shape[0])])[:-1]
    result = np.empty((n_boot, len(index_sets)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # groups whose R are all NaN
        for b, rows in enumerate(_index_rows(observed.shape[0], n_boot, seed, folds)):
            per_fold = [
                pearson_r(observed[part], predicted[part]) for part in np.split(rows, fold_ends)
            ]
            r = np.mean(per_fold, axis=0)  # (n_targets,)
            result[b] = [np.nanmean(r[index]) for index in index_sets]
    return result


# ---------------------------------------------------------------------- intervals
class PercentileInterval(NamedTuple):
    """Percentile bootstrap interval, computed over the finite replicates only.

    Attributes
    ----------
    low, high : ndarray or float
        Interval bounds (NaN where no replicate is finite), shape of one replicate.
    n_nan : ndarray or int
        Replicates that were NaN (left out), same shape.
    n_replicates : int
        Replicates given (finite or not).
    """

    low: np.ndarray | float
    high: np.ndarray | float
    n_nan: np.ndarray | int
    n_replicates: int


def percentile_interval(
    replicates: np.ndarray, level: float = 0.95, axis: int = 0
) -> PercentileInterval:
    """Percentile interval of bootstrap replicates, ignoring NaN replicates.

    Parameters
    ----------
    replicates : ndarray of shape (n_boot, ...)
        One value per replicate along ``axis`` (e.g. from :func:`bootstrap_group_r`).
    level : float, default=0.95
        Coverage; the bounds are the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
        (linear interpolation, ``np.nanpercentile``'s default).
    axis : int, default=0
        Axis of the replicates.

    Returns
    -------
    PercentileInterval
        ``low, high, n_nan, n_replicates``; 0-d results are returned as Python scalars.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    replicates = np.asarray(replicates, dtype=np.float64)
    if replicates.ndim == 0 or replicates.shape[axis] == 0:
        raise ValueError(f"percentile_interval needs replicates, got shape {replicates.shape}")
    finite = np.isfinite(replicates)
    n_nan = (~finite).sum(axis=axis)
    quantiles = [50 * (1 - level), 50 * (1 + level)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN bounds
        low, high = np.nanpercentile(np.where(finite, replicates, np.nan), quantiles, axis=axis)
    if low.ndim == 0:
        return PercentileInterval(float(low), float(high), int(n_nan), replicates.shape[axis])
    return PercentileInterval(low, high, n_nan, replicates.shape[axis])
