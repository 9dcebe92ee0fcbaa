"""Bootstrap over stimuli of linear CKA, from Gram matrices computed once (none per resample).

A resample draws stimulus ``u`` ``c_u`` times. Its Gram matrix holds the full one's entry
``K_uv`` for every two drawn copies of ``u`` and ``v``, so each HSIC term of the resample is a
sum over the full Gram matrices weighted by the counts: ``c' (K o L) c``, ``c' K c`` and
``sum_u c_u (K c)_u (L c)_u`` (``o`` the elementwise product). Per resample that is a product
of the counts with an n x n matrix, not an n x n matrix per resample.

- **biased** CKA: the resample's HSIC_0 exactly (its centring weighted by the counts), equal
  to resampling the features and computing :func:`~brainalign.probe.metrics.cka.linear_cka`.
- **unbiased** CKA: HSIC_1 leaves out the Gram diagonal, a stimulus's similarity with itself.
  Two copies of one stimulus in a resample are such a pair; they are left out too (their
  similarity is the stimulus's own, not a measured one between two stimuli: the same rule as
  the RSA bootstrap, :mod:`brainalign.probe.metrics.rsa_bootstrap`). That is, ``K~`` is zero
  wherever both copies come from one stimulus, and HSIC_1's formula is applied to the
  resample of n stimuli. Since that rule reads the features only through their Gram matrix,
  the features are centred once over all stimuli first.
- **cross-validated** CKA: the same weighted HSIC_1 of the mean with the layers, and of the
  even-repeat mean with the odd-repeat mean
  (:func:`~brainalign.probe.metrics.cka.cross_validated_cka`).

Written by hand (no package bootstraps a batched, unbiased CKA); checked against a plain
loop that resamples the features, zeroes the copies' Gram entries and applies the formula.
Cost: one (n_boot x n) @ (n x n) product per layer x set pair, and about four n x n matrices
in memory; the model sets' Gram matrices are computed once and held when they fit in
``_GRAM_BUDGET_BYTES`` (1 GiB), else computed again for each brain set.
``python benchmarks/metrics.py --only cka_bootstrap`` prints the ratio against the loop.

Example::

    counts = resample_counts(n_stimuli, n_boot=1000, seed=0)
    boot = bootstrap_linear_cka(layers, rois, counts)  # (1000, n_layers, n_rois)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from brainalign.probe.metrics._sets import (
    DType,
    as_sets,
    check_same_stimuli,
    resolve_torch,
    to_tensor,
)
from brainalign.probe.metrics.cka import hsic_ratio

__all__ = ["bootstrap_cross_validated_cka", "bootstrap_linear_cka"]

_GRAM_BUDGET_BYTES = 2**30  # the model sets' Gram matrices are held when they fit in 1 GiB
Gram = tuple[torch.Tensor, torch.Tensor]  # a Gram matrix (n, n) and the counts times it (n_boot, n)


class _WeightedHSIC:
    """HSIC of Gram matrices in every resample given by ``counts`` (n_boot, n)."""

    def __init__(self, counts: torch.Tensor, unbiased: bool) -> None:
        self.counts = counts
        self.unbiased = unbiased
        self.n = counts.shape[1]  # each resample draws as many stimuli as there are

    def gram(self, features: torch.Tensor) -> Gram:
        """The Gram matrix of centred features (diagonal zeroed if unbiased) and ``C K``."""
        centred = features - features.mean(dim=0, keepdim=True)
        gram = centred @ centred.T
        if self.unbiased:
            gram.fill_diagonal_(0.0)
        return gram, self.counts @ gram  # (n, n), (n_boot, n)

    def between(self, first: Gram, second: Gram) -> torch.Tensor:
        """HSIC of two Grams (as returned by :meth:`gram`) in each resample: (n_boot,)."""
        (k, k_counts), (l_, l_counts) = first, second
        c, n = self.counts, self.n
        trace = ((c @ (k * l_)) * c).sum(dim=1)  # c' (K o L) c
        k_total, l_total = (k_counts * c).sum(dim=1), (l_counts * c).sum(dim=1)
        paths = (c * k_counts * l_counts).sum(dim=1)  # sum_u c_u (K c)_u (L c)_u
        if self.unbiased:
            scaled = trace + k_total * l_total / ((n - 1) * (n - 2)) - 2.0 * paths / (n - 2)
            return scaled / (n * (n - 3))
        return (trace - 2.0 * paths / n + k_total * l_total / n**2) / (n - 1) ** 2


def _check_counts(counts: np.ndarray, n_stimuli: int) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != n_stimuli:
        raise ValueError(
            f"resample counts of shape {counts.shape} do not match {n_stimuli} stimuli; pass "
            "brainalign.probe.bootstrap.resample_counts(n_stimuli, n_boot, seed)"
        )
    if counts.shape[0] and not np.all(counts.sum(axis=1) == n_stimuli):
        raise ValueError(f"each resample's counts must sum to the {n_stimuli} stimuli")
    return counts


def _bootstrap(
    sets_a: list[np.ndarray],
    sets_b: list[np.ndarray],
    counts: np.ndarray,
    *,
    unbiased: bool,
    device: str | torch.device,
    dtype: DType,
    brain_side: Callable[[_WeightedHSIC, torch.Tensor], tuple[Gram, torch.Tensor]],
) -> np.ndarray:
    """CKA of each a-set with each b-set per resample; ``brain_side`` gives a b-set's Gram
    for the numerator and the HSIC of its denominator."""
    check_same_stimuli(sets_a, sets_b, "a and b")
    n = sets_a[0].shape[0]
    torch_device, torch_dtype = resolve_torch(device, dtype)
    hsic = _WeightedHSIC(to_tensor(_check_counts(counts, n), torch_device, torch_dtype), unbiased)

    def model_gram(index: int) -> Gram:
        return hsic.gram(to_tensor(sets_a[index], torch_device, torch_dtype))

    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    held = len(sets_a) * n * n * itemsize <= _GRAM_BUDGET_BYTES
    grams = [model_gram(i) for i in range(len(sets_a))] if held else None
    selves = [
        hsic.between(gram, gram)
        for gram in (grams if grams is not None else map(model_gram, range(len(sets_a))))
    ]
    boot = np.full((hsic.counts.shape[0], len(sets_a), len(sets_b)), np.nan)
    for j, item in enumerate(sets_b):
        other, own = brain_side(hsic, to_tensor(item, torch_device, torch_dtype))
        for i in range(len(sets_a)):
            gram = grams[i] if grams is not None else model_gram(i)
            boot[:, i, j] = hsic_ratio(hsic.between(gram, other), selves[i], own)
    return boot


def _one_set(hsic: _WeightedHSIC, features: torch.Tensor) -> tuple[Gram, torch.Tensor]:
    gram = hsic.gram(features)
    return gram, hsic.between(gram, gram)


def _split_halves(hsic: _WeightedHSIC, repeats: torch.Tensor) -> tuple[Gram, torch.Tensor]:
    even, odd = hsic.gram(repeats[0::2].mean(dim=0)), hsic.gram(repeats[1::2].mean(dim=0))
    return hsic.gram(repeats.mean(dim=0)), hsic.between(even, odd)


def bootstrap_linear_cka(
    a: np.ndarray | Sequence[np.ndarray],
    b: np.ndarray | Sequence[np.ndarray],
    counts: np.ndarray,
    *,
    unbiased: bool = True,
    device: str | torch.device = "cpu",
    dtype: DType = "float64",
) -> np.ndarray:
    """Linear CKA of every set in ``a`` with every set in ``b`` in every resample.

    Parameters
    ----------
    a, b : as in :func:`brainalign.probe.metrics.cka.linear_cka`
    counts : ndarray of shape (n_boot, n_stimuli)
        How often each stimulus is drawn in each resample
        (:func:`brainalign.probe.bootstrap.resample_counts`).
    unbiased, device, dtype : as in :func:`~brainalign.probe.metrics.cka.linear_cka`

    Returns
    -------
    boot : ndarray of shape (n_boot, n_a, n_b)
        NaN where a resample's self-similarity of a set is not positive.

    Raises
    ------
    ValueError
        Counts that do not match the stimuli, or the errors of
        :func:`~brainalign.probe.metrics.cka.linear_cka`.
    """
    sets_a = as_sets(a, name="a", min_stimuli=4)
    sets_b = as_sets(b, name="b", min_stimuli=4)
    return _bootstrap(
        sets_a, sets_b, counts, unbiased=unbiased, device=device, dtype=dtype, brain_side=_one_set
    )


def bootstrap_cross_validated_cka(
    a: np.ndarray | Sequence[np.ndarray],
    b_repeats: np.ndarray | Sequence[np.ndarray],
    counts: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    dtype: DType = "float64",
) -> np.ndarray:
    """Split-half cross-validated CKA of every pair in every resample: (n_boot, n_a, n_b).

    Parameters as in :func:`brainalign.probe.metrics.cka.cross_validated_cka`, with the
    ``counts`` of :func:`bootstrap_linear_cka`.
    """
    sets_a = as_sets(a, name="a", min_stimuli=4)
    sets_b = as_sets(b_repeats, name="b_repeats", repeats=True, min_stimuli=4)
    return _bootstrap(
        sets_a, sets_b, counts, unbiased=True, device=device, dtype=dtype, brain_side=_split_halves
    )
