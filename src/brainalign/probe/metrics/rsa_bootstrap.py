"""Bootstrap over stimuli of RSA comparisons, from RDMs computed once (no RDM per resample).

A bootstrap resample draws stimuli with replacement; its RDM compares every two drawn stimuli,
and pairs of two copies of one stimulus are left out (their dissimilarity is zero by
construction, not measured: rsatoolbox's stimulus bootstrap leaves them out the same way).
Every dissimilarity brainalign computes (:mod:`brainalign.probe.metrics.rsa`: correlation,
euclidean, crossnobis) depends on its two stimuli only, so the resampled RDM is a multiset of
the full RDM's pairs: pair ``(u, v)`` appears ``c_u * c_v`` times when stimulus ``u`` was drawn
``c_u`` times. A comparison of two resampled RDMs is therefore a *weighted* comparison of the
full RDMs with pair weights ``c_u * c_v``:

- Pearson: the weighted correlation of the two RDMs;
- Spearman: the weighted correlation of the weighted average ranks, where a value's rank in
  the multiset is the weight of all smaller values plus ``(w + 1) / 2`` for the ``w`` copies
  of its tie group (``scipy.stats.rankdata``'s average rank of the expanded multiset).

Kendall's tau-a has no such closed form here (O(n_pairs**2) per resample): it gets no interval.
Memory is bounded by a budget of values per chunk of resamples; replicates, RDMs and the counts
of :func:`brainalign.probe.bootstrap.resample_counts` are the only inputs. Checked against a
plain loop that resamples the patterns, recomputes each RDM and compares with scipy.

Example::

    counts = resample_counts(n_stimuli, n_boot=1000, seed=0)
    boot = bootstrap_compare_rdms(layer_rdms, roi_rdms, counts, "spearman")  # (1000, 12, 10)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BOOTSTRAPPED_COMPARISONS", "bootstrap_compare_rdms", "pair_weights"]

#: Comparisons with a bootstrap (Kendall's tau-a has none).
BOOTSTRAPPED_COMPARISONS: tuple[str, ...] = ("pearson", "spearman")
_CHUNK_BUDGET_VALUES = 2**24  # values of (resamples x RDMs x pairs) held at once: 128 MiB


def pair_weights(counts: np.ndarray) -> np.ndarray:
    """How often each stimulus pair occurs in each resampled RDM.

    Parameters
    ----------
    counts : ndarray of shape (n_boot, n_stimuli)
        ``counts[b, i]``: how often stimulus ``i`` was drawn in resample ``b``.

    Returns
    -------
    weights : ndarray of shape (n_boot, n_pairs)
        ``counts[b, u] * counts[b, v]`` for the pairs ``np.triu_indices(n_stimuli, 1)``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    rows, columns = np.triu_indices(counts.shape[1], 1)
    return counts[:, rows] * counts[:, columns]


@dataclass(frozen=True)
class _TieGroups:
    """One RDM's sort order and tie groups (the same in every resample)."""

    order: np.ndarray  # (n_pairs,) pairs in ascending dissimilarity
    starts: np.ndarray  # (n_groups,) first sorted position of each tie group
    group_of: np.ndarray  # (n_pairs,) tie group of each sorted position

    @classmethod
    def of(cls, row: np.ndarray) -> _TieGroups:
        order = np.argsort(row, kind="stable")
        ordered = row[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        group_of = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, row.size]))
        return cls(order, starts, group_of)


def _weighted_ranks(groups: list[_TieGroups], weights: np.ndarray) -> np.ndarray:
    """Average ranks of each RDM in each resample's multiset.

    ``groups`` (one per RDM), ``weights`` (n_chunk, n_pairs) -> (n_chunk, n_rdms, n_pairs).
    Pairs of weight 0 get a rank too; it is never read (their weight is 0).
    """
    ranks = np.empty((weights.shape[0], len(groups), weights.shape[1]))
    for index, tie in enumerate(groups):
        totals = np.add.reduceat(weights[:, tie.order], tie.starts, axis=1)  # (n_chunk, n_groups)
        group_ranks = np.cumsum(totals, axis=1) - totals + (totals + 1.0) / 2.0
        ranks[:, index, tie.order] = group_ranks[:, tie.group_of]
    return ranks


def _weighted_centred(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rows centred on their weighted mean in each resample: (n_chunk, n_rdms, n_pairs).

    ``values`` is (n_rdms, n_pairs), the same in every resample, or (n_chunk, n_rdms, n_pairs).
    """
    totals = weights.sum(axis=1)[:, None, None]  # (n_chunk, 1, 1)
    means = (values * weights[:, None, :]).sum(axis=2, keepdims=True) / totals
    return values - means


def _weighted_correlations(
    first: np.ndarray, second: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Weighted Pearson of every row of ``first`` with every row of ``second`` per resample.

    ``first`` (n_chunk, n_a, n_pairs) and ``second`` (n_chunk, n_b, n_pairs), centred on their
    weighted means; returns (n_chunk, n_a, n_b), NaN where a row has no weighted variance.
    """
    weighted = first * weights[:, None, :]
    cross = weighted @ second.transpose(0, 2, 1)  # (n_chunk, n_a, n_b)
    first_sq = (weighted * first).sum(axis=2)  # (n_chunk, n_a)
    second_sq = (second * second * weights[:, None, :]).sum(axis=2)  # (n_chunk, n_b)
    product = first_sq[:, :, None] * second_sq[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(product > 0, cross / np.sqrt(product), np.nan)


def bootstrap_compare_rdms(
    a: np.ndarray, b: np.ndarray, counts: np.ndarray, method: str = "spearman"
) -> np.ndarray:
    """Every comparison of ``a``'s RDMs with ``b``'s in every bootstrap resample of the stimuli.

    Parameters
    ----------
    a : ndarray of shape (n_a, n_pairs)
    b : ndarray of shape (n_b, n_pairs)
        Upper-triangle RDMs of the same stimuli (:func:`brainalign.probe.metrics.rsa.rdms`),
        finite.
    counts : ndarray of shape (n_boot, n_stimuli)
        Draws per stimulus and resample (:func:`brainalign.probe.bootstrap.resample_counts`).
    method : {"spearman", "pearson"}
        As in :func:`brainalign.probe.metrics.rsa.compare_rdms`.

    Returns
    -------
    replicates : ndarray of shape (n_boot, n_a, n_b)
        NaN where a resampled RDM is constant.

    Raises
    ------
    ValueError
        Another method, RDMs whose length does not match ``counts``, non-finite RDMs.
    """
    if method not in BOOTSTRAPPED_COMPARISONS:
        raise ValueError(
            f"no bootstrap for the {method!r} comparison; use one of {BOOTSTRAPPED_COMPARISONS}"
        )
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    n_stimuli = counts.shape[1]
    expected = n_stimuli * (n_stimuli - 1) // 2
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != expected or b.shape[1] != expected:
        raise ValueError(
            f"RDMs of shapes {a.shape} and {b.shape} do not match {n_stimuli} stimuli "
            f"({expected} pairs each)"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("RDMs hold NaN or infinite dissimilarities: drop those sets first")
    per_chunk = max(1, _CHUNK_BUDGET_VALUES // ((len(a) + len(b)) * expected))
    if method == "spearman":  # sort orders and ties once, ranks per resample
        ties_a, ties_b = [_TieGroups.of(row) for row in a], [_TieGroups.of(row) for row in b]
    result = np.empty((counts.shape[0], len(a), len(b)))
    for start in range(0, counts.shape[0], per_chunk):
        weights = pair_weights(counts[start : start + per_chunk])  # (n_chunk, n_pairs)
        first, second = (a, b) if method == "pearson" else (
            _weighted_ranks(ties_a, weights), _weighted_ranks(ties_b, weights)
        )  # fmt: skip
        result[start : start + per_chunk] = _weighted_correlations(
            _weighted_centred(first, weights), _weighted_centred(second, weights), weights
        )
    return result
