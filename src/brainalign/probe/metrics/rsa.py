"""Representational similarity analysis: RDMs of many sets at once, and their comparisons.

An RDM is stored as its upper triangle, row by row (``np.triu_indices(n, 1)`` order, the order
of rsatoolbox and of ``scipy.spatial.distance.squareform``), so a stack of RDMs is an array of
shape (n_sets, n_pairs) with ``n_pairs = n_stimuli * (n_stimuli - 1) / 2``.

Dissimilarities (the conventions of rsatoolbox's ``calc_rdm``):

- ``"correlation"``: ``1 - r``, r the Pearson correlation between two stimuli's patterns;
- ``"euclidean"``: squared Euclidean distance divided by the number of features;
- ``"crossnobis"``: cross-validated squared Euclidean distance divided by the number of features,
  from repeats (identity noise precision; prewhiten the data first for a Mahalanobis version).
  The leave-one-repeat-out estimate of rsatoolbox's ``calc_rdm_crossnobis`` averages
  ``(a_i - a_j) . (b_i - b_j)`` over folds, where ``b`` is the held-out repeat and ``a`` the mean
  of the others. It is linear in the fold kernels ``A B^T``, so it is computed in closed form:
  ``K = (S S^T - sum_r X_r X_r^T) / (R (R - 1))`` with ``S`` the sum of the R repeats, then
  ``d_ij = K_ii + K_jj - K_ij - K_ji``. It is unbiased: independent noise adds nothing to its
  expectation (Walther et al. 2016, NeuroImage 137:188).

Comparisons of two RDM stacks, all pairs: ``"pearson"`` and ``"spearman"`` (Pearson of average
ranks) as one matrix product of standardised rows, and ``"kendall_tau_a"`` through rsatoolbox
(tau-a is the comparison to use when a model RDM has ties, Nili et al. 2014, PLoS Comput Biol
10:e1003553).

Why not rsatoolbox's ``calc_rdm`` and ``compare`` for every step: rsatoolbox computes the
correlation RDM's Gram matrix and the Pearson/Spearman comparisons with ``np.einsum`` (no BLAS),
and the crossnobis RDM with a loop over folds on copies of the dataset; here each RDM is one BLAS
(or CUDA) matrix product. ``python benchmarks/metrics.py`` prints the ratio against rsatoolbox on
12 layers x 10 ROIs x 1,000 stimuli; the tests check equality with rsatoolbox to float tolerance.

Example::

    layer_rdms = rdms(layers, "correlation")          # (12, n_pairs)
    roi_rdms = rdms(rois, "correlation")              # (10, n_pairs)
    scores = compare_rdms(layer_rdms, roi_rdms, "spearman")  # (12, 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.stats
import torch

from brainalign.probe.metrics._sets import (
    DType,
    as_sets,
    check_option,
    check_same_stimuli,
    resolve_torch,
    to_tensor,
)

__all__ = [
    "COMPARISONS",
    "RDM_METRICS",
    "average_ranks",
    "compare_rdms",
    "n_pairs",
    "rdms",
    "representational_similarity",
]

RDMMetric = Literal["correlation", "euclidean", "crossnobis"]
Comparison = Literal["spearman", "pearson", "kendall_tau_a"]
RDM_METRICS: tuple[str, ...] = ("correlation", "euclidean", "crossnobis")
COMPARISONS: tuple[str, ...] = ("spearman", "pearson", "kendall_tau_a")
_RSATOOLBOX_COMPARISON = {"spearman": "spearman", "pearson": "corr", "kendall_tau_a": "tau-a"}


def n_pairs(n_stimuli: int) -> int:
    """Number of stimulus pairs, ``n_stimuli * (n_stimuli - 1) / 2``: the length of one RDM."""
    return n_stimuli * (n_stimuli - 1) // 2


def _kernel(item: torch.Tensor, metric: str) -> torch.Tensor:
    """The (n, n) inner-product matrix whose distances the metric reads.

    ``item`` is (n_stimuli, n_features), or (n_repeats, n_stimuli, n_features) for crossnobis.
    """
    if metric == "crossnobis":
        centred = item - item.mean(dim=1, keepdim=True)  # translation leaves distances alone
        n_repeats = centred.shape[0]
        total = centred.sum(dim=0)  # (n, p)
        stacked = centred.permute(1, 0, 2).reshape(centred.shape[1], -1)  # (n, R * p)
        cross = total @ total.T - stacked @ stacked.T  # (n, n), sum over pairs of repeats
        return cross / (n_repeats * (n_repeats - 1))
    if metric == "correlation":
        patterns = item - item.mean(dim=1, keepdim=True)  # each stimulus's pattern, centred
        norms = torch.linalg.vector_norm(patterns, dim=1, keepdim=True)
        patterns = patterns / norms  # constant pattern: NaN row, NaN distances
        return patterns @ patterns.T
    centred = item - item.mean(dim=0, keepdim=True)  # translation leaves distances alone
    return centred @ centred.T


def rdms(
    data: np.ndarray | Sequence[np.ndarray],
    metric: RDMMetric = "correlation",
    *,
    device: str | torch.device = "cpu",
    dtype: DType = "float64",
) -> np.ndarray:
    """Upper-triangle RDMs of many sets of patterns of the same stimuli.

    Parameters
    ----------
    data : ndarray of shape (n_sets, n_stimuli, n_features), or sequence of n_sets arrays of
        shape (n_stimuli, n_features_i)
        One set per layer, ROI or MEG time sample (MEG ``(n_stimuli, n_channels, n_times)``
        becomes ``data.transpose(2, 0, 1)``). For ``"crossnobis"``: (n_sets, n_repeats,
        n_stimuli, n_features) or a sequence of (n_repeats_i, n_stimuli, n_features_i), at
        least 2 repeats each.
    metric : {"correlation", "euclidean", "crossnobis"}, default="correlation"
        See the module docstring; the values equal rsatoolbox's ``calc_rdm`` methods
        "correlation", "euclidean" and "crossnobis" (leave-one-repeat-out, identity noise).
    device : str or torch.device, default="cpu"
        Where the matrix products run ("cuda", "auto").
    dtype : {"float64", "float32"}, default="float64"
        Working and output precision.

    Returns
    -------
    rdms : ndarray of shape (n_sets, n_pairs)
        Dissimilarities of the pairs ``np.triu_indices(n_stimuli, 1)``. With ``"correlation"``
        a stimulus whose pattern is constant has NaN dissimilarities. Memory: n_sets x n_pairs
        values (100 MEG time samples of 1,000 stimuli: 400 MB in float64, half in float32).

    Raises
    ------
    ValueError
        Unknown metric; data without repeats for ``"crossnobis"``; sets with different numbers
        of stimuli; fewer than 3 stimuli; NaN or infinite values.
    """
    check_option(metric, RDM_METRICS, "metric")
    sets = as_sets(data, name="data", repeats=metric == "crossnobis")
    torch_device, torch_dtype = resolve_torch(device, dtype)
    n_stimuli = sets[0].shape[-2]
    rows, columns = torch.triu_indices(n_stimuli, n_stimuli, 1, device=torch_device)
    result = np.empty((len(sets), n_pairs(n_stimuli)), dtype=np.dtype(dtype))
    for index, item in enumerate(sets):
        kernel = _kernel(to_tensor(item, torch_device, torch_dtype), metric)  # (n, n)
        if metric == "correlation":
            upper = 1.0 - kernel[rows, columns]
        else:
            diagonal = torch.diagonal(kernel)  # the kernel is symmetric
            upper = (diagonal[rows] + diagonal[columns] - 2.0 * kernel[rows, columns]) / item.shape[
                -1
            ]
        result[index] = upper.cpu().numpy()
    return result


def _as_rdm_stack(rdm_stack: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(rdm_stack, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a stack of upper-triangle RDMs of shape (n_rdms, n_pairs); got "
            f"shape {array.shape} (one RDM: {name}[None])"
        )
    if array.shape[1] < 3:
        raise ValueError(f"{name} RDMs have {array.shape[1]} pairs; a comparison needs at least 3")
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"{name} rows {bad_rows[:5].tolist()} hold NaN or infinite dissimilarities (a "
            "stimulus with a constant pattern under the correlation distance?); drop those "
            "stimuli before computing the RDMs"
        )
    return array


def _standardised_rows(array: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm; constant rows become NaN."""
    centred = array - array.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, centred / norms, np.nan)


def average_ranks(rows: np.ndarray) -> np.ndarray:
    """Ranks 1..n of each row, ties given their average rank (``scipy.stats.rankdata``).

    Rows without ties (the usual case for measured RDMs) are ranked by one quicksort and a
    scatter, about 6x faster than ``rankdata``'s stable sort; rows with ties go to ``rankdata``.
    """
    order = np.argsort(rows, axis=1)
    ordered = np.take_along_axis(rows, order, axis=1)
    ranks = np.empty(rows.shape)
    np.put_along_axis(ranks, order, np.arange(1.0, rows.shape[1] + 1.0)[None], axis=1)
    tied = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    if tied.any():
        ranks[tied] = scipy.stats.rankdata(rows[tied], axis=1)
    return ranks


def compare_rdms(a: np.ndarray, b: np.ndarray, method: Comparison = "spearman") -> np.ndarray:
    """Similarity of every RDM in ``a`` with every RDM in ``b``.

    Parameters
    ----------
    a : ndarray of shape (n_a, n_pairs)
    b : ndarray of shape (n_b, n_pairs)
        Upper-triangle RDMs of the same stimuli in the same order (e.g. from :func:`rdms`).
    method : {"spearman", "pearson", "kendall_tau_a"}, default="spearman"
        Spearman's rho (average ranks for ties), Pearson's r, or Kendall's tau-a (no tie
        correction; through rsatoolbox, one pair at a time, O(n_pairs log n_pairs) each).

    Returns
    -------
    similarity : ndarray of shape (n_a, n_b)
        NaN where an RDM is constant (Pearson/Spearman undefined).

    Raises
    ------
    ValueError
        Unknown method, RDMs of different lengths, NaN dissimilarities.
    """
    check_option(method, COMPARISONS, "method")
    a = _as_rdm_stack(a, "a")
    b = _as_rdm_stack(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"RDMs of different lengths: a has {a.shape[1]} pairs and b has {b.shape[1]}; "
            "both must describe the same stimuli"
        )
    if method == "kendall_tau_a":
        from rsatoolbox.rdm.compare import compare

        return compare(a, b, method="tau-a")
    if method == "spearman":
        a, b = average_ranks(a), average_ranks(b)
    return _standardised_rows(a) @ _standardised_rows(b).T


def representational_similarity(
    model: np.ndarray | Sequence[np.ndarray],
    brain: np.ndarray | Sequence[np.ndarray],
    *,
    model_metric: RDMMetric = "correlation",
    brain_metric: RDMMetric = "correlation",
    method: Comparison = "spearman",
    device: str | torch.device = "cpu",
    dtype: DType = "float64",
) -> np.ndarray:
    """RSA score of every model set (layer) against every brain set (ROI, MEG time sample).

    Each set's RDM is computed once (:func:`rdms`) and all pairs are compared at once
    (:func:`compare_rdms`).

    Parameters
    ----------
    model : sets of shape (n_stimuli, n_features_i), see :func:`rdms`
    brain : sets of shape (n_stimuli, n_targets_j), or with repeats (n_repeats, n_stimuli,
        n_targets_j) when ``brain_metric="crossnobis"``
    model_metric, brain_metric : {"correlation", "euclidean", "crossnobis"}
    method : {"spearman", "pearson", "kendall_tau_a"}
    device, dtype
        As in :func:`rdms`.

    Returns
    -------
    scores : ndarray of shape (n_model_sets, n_brain_sets)
    """
    check_option(method, COMPARISONS, "method")
    check_option(model_metric, RDM_METRICS, "model_metric")
    check_option(brain_metric, RDM_METRICS, "brain_metric")
    check_same_stimuli(
        as_sets(model, name="model", repeats=model_metric == "crossnobis"),
        as_sets(brain, name="brain", repeats=brain_metric == "crossnobis"),
        "model and brain sets",
    )
    model_rdms = rdms(model, model_metric, device=device, dtype=dtype)
    brain_rdms = rdms(brain, brain_metric, device=device, dtype=dtype)
    return compare_rdms(model_rdms, brain_rdms, method)
