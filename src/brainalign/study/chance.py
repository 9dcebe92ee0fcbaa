"""Chance levels of the hierarchy scores by permutation.

- Spatial score, r(ROI distance from V1, best-layer depth): the null permutes ROI labels, i.e.
  which distance goes with which best depth (:func:`spatial_score_permutation_test`).
- Temporal score, r(layer depth, T_max): the null permutes the layer order, i.e. which depth
  goes with which peak time (:func:`temporal_score_permutation_test`).

Both run ``scipy.stats.permutation_test`` with ``permutation_type="pairings"`` (exact over all
``n!`` orders when that fits in ``n_permutations``, otherwise random with the +1 correction) and
return the null distribution's 95th percentile beside the p value: the score a model must
exceed to be above chance at 5%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.stats

from brainalign.probe.scores import MIN_PAIRS, rowwise_pearson
from brainalign.utils.checks import check_count, paired_vectors

__all__ = [
    "PermutationTest",
    "correlation_permutation_test",
    "spatial_score_permutation_test",
    "temporal_score_permutation_test",
]


@dataclass(frozen=True)
class PermutationTest:
    """A correlation and its permutation null.

    Attributes
    ----------
    observed : float
        The score (Pearson r over the finite pairs).
    p_value : float
        NaN when the score is undefined (fewer than 3 finite pairs or a constant side).
    null_95th : float
        95th percentile of the null distribution.
    null_distribution : ndarray of shape (n_permutations,)
    n_pairs : int
        Finite pairs used (ROIs or layers).
    n_permutations : int
        Orders in the null (``n_pairs!`` when exact).
    exact : bool
    note : str
        Why the test was not run, or empty.
    """

    observed: float
    p_value: float
    null_95th: float
    null_distribution: np.ndarray
    n_pairs: int
    n_permutations: int
    exact: bool
    note: str = ""


def correlation_permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_permutations: int = 9999,
    seed: int = 0,
    alternative: Literal["greater", "two-sided", "less"] = "greater",
) -> PermutationTest:
    """Permutation test of Pearson r(x, y): the null shuffles which x goes with which y.

    Parameters
    ----------
    x, y : ndarray of shape (n,)
        Paired values; pairs with a non-finite value are dropped first.
    n_permutations : int, default=9999
        Random orders; all ``n!`` are enumerated when ``n! <= n_permutations``.
    seed : int, default=0
    alternative : {"greater", "two-sided", "less"}, default="greater"
        ``greater``: the hierarchy runs the expected way (positive r).

    Returns
    -------
    PermutationTest
    """
    x, y = paired_vectors(x, y)
    check_count("n_permutations", n_permutations)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    observed = float(rowwise_pearson(x, y))
    if not np.isfinite(observed):
        note = (
            f"not tested: {len(x)} finite pairs (need {MIN_PAIRS}) or a constant side, so "
            "the correlation is undefined"
        )
        return PermutationTest(math.nan, math.nan, math.nan, np.empty(0), len(x), 0, False, note)
    test = scipy.stats.permutation_test(
        (x,),
        lambda x_permuted, axis: rowwise_pearson(np.moveaxis(x_permuted, axis, -1), y),
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n_permutations,
        alternative=alternative,
        rng=np.random.default_rng(seed),
    )
    null = np.asarray(test.null_distribution, dtype=np.float64)
    return PermutationTest(
        observed=observed,
        p_value=float(test.pvalue),
        null_95th=float(np.percentile(null, 95)),
        null_distribution=null,
        n_pairs=len(x),
        n_permutations=len(null),
        exact=math.factorial(len(x)) <= n_permutations,
    )


def spatial_score_permutation_test(
    distances: np.ndarray,
    best_depths: np.ndarray,
    *,
    n_permutations: int = 9999,
    seed: int = 0,
    alternative: Literal["greater", "two-sided", "less"] = "greater",
) -> PermutationTest:
    """Chance level of the spatial score: permute ROI labels.

    Parameters
    ----------
    distances : ndarray of shape (n_rois,)
        Distance of each ROI from V1.
    best_depths : ndarray of shape (n_rois,)
        Relative depth of each ROI's best layer (same ROI order); NaN ROIs are dropped.
    n_permutations, seed, alternative
        See :func:`correlation_permutation_test`.

    Returns
    -------
    PermutationTest
        ``observed`` equals :func:`brainalign.probe.scores.spatial_score`.
    """
    return correlation_permutation_test(
        distances, best_depths, n_permutations=n_permutations, seed=seed, alternative=alternative
    )


def temporal_score_permutation_test(
    depths: np.ndarray,
    t_max_values: np.ndarray,
    *,
    n_permutations: int = 9999,
    seed: int = 0,
    alternative: Literal["greater", "two-sided", "less"] = "greater",
) -> PermutationTest:
    """Chance level of the temporal score: permute the layer order.

    Parameters
    ----------
    depths : ndarray of shape (n_layers,)
        Relative depth of each layer.
    t_max_values : ndarray of shape (n_layers,)
        Peak time of each layer's MEG course (same layer order); NaN layers are dropped.
    n_permutations, seed, alternative
        See :func:`correlation_permutation_test`.

    Returns
    -------
    PermutationTest
        ``observed`` equals :func:`brainalign.probe.scores.temporal_score`.
    """
    return correlation_permutation_test(
        depths, t_max_values, n_permutations=n_permutations, seed=seed, alternative=alternative
    )
