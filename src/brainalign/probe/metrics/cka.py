"""Linear centred kernel alignment (CKA) of many sets at once, biased, unbiased and cross-validated.

Definitions (``K = X X^T`` and ``L = Y Y^T`` are the linear Gram matrices of two
representations of the same n stimuli; ``H`` the centring matrix):

- biased (Kornblith et al. 2019, ICML, "Similarity of neural network representations
  revisited"): ``CKA = HSIC_0(K, L) / sqrt(HSIC_0(K, K) HSIC_0(L, L))`` with
  ``HSIC_0(K, L) = tr(K H L H) / (n - 1)**2``; for centred features
  ``||Y^T X||_F**2 / (||X^T X||_F ||Y^T Y||_F)``. It is biased upwards in few stimuli and many
  dimensions: two independent random representations get a CKA near 1 when their widths far
  exceed n (Murphy, Zylberberg & Fyshe 2024, "Correcting biased centred kernel alignment
  measures in biological and artificial neural networks").
- unbiased: the same ratio of the unbiased estimator ``HSIC_1`` of Song et al. 2012 (JMLR 13,
  "Feature selection via dependence maximization", eq. 5), as used for CKA by Nguyen, Raghu &
  Kornblith 2021 (ICLR, "Do wide and deep networks learn the same things?"). With ``K~`` and
  ``L~`` the Gram matrices with zeroed diagonals,
  ``HSIC_1 = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))``.
  It equals ``<U(K), U(L)> / (n (n-3))`` with ``U`` the U-centring of Szekely & Rizzo 2014
  (Ann. Stat. 42:2382), which is how it is computed here (one inner product per pair). Its
  expectation for independent representations is 0.
- cross-validated (``cross_validated_cka``): brain data are noisy, and noise that is
  independent across trials inflates ``HSIC_1(L, L)`` (the squared off-diagonal entries of L
  gain the noise variance) while it leaves ``HSIC_1(K, L)`` unbiased (HSIC_1 never reads the
  diagonal, where independent noise adds to its expectation). Split the repeats of each
  stimulus into two halves (even and odd positions) with means ``Y_a`` and ``Y_b`` and replace
  ``HSIC_1(L, L)`` by ``HSIC_1(L_a, L_b)``, whose two factors have independent noise:
  ``CKA_cv = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L_a, L_b))``, with ``L`` from the mean of
  all repeats. It estimates the CKA with the noise-free brain representation: the same
  cross-validation across independent partitions that makes crossnobis distances unbiased
  (Walther et al. 2016, NeuroImage 137:188; Diedrichsen et al. 2021, "Comparing representational
  geometries using whitened unbiased-distance-matrix similarity", NBDT, where CKA is shown to be
  the cosine similarity of centred second-moment matrices and cross-validated second moments are
  recommended for noisy data). It is NaN where ``HSIC_1(L_a, L_b) <= 0`` (no reliable signal).
  This split-half normalisation is brainalign's definition; the literature has no single
  "cross-validated CKA".

Two ways to compute, chosen by cost (``route="auto"``):

- ``"gram"``: every set's centred (or U-centred) Gram matrix, flattened, and one matrix product
  per brain set against the stack of model Gram matrices: n**2 memory per set, the route when
  n_stimuli is at most a few thousand;
- ``"features"``: ``||X^T Y||_F**2`` from the features (Kornblith et al. 2019's feature-space
  form, and its debiased form from their published code), without any n x n matrix: the route
  for many stimuli and few features.

Both run in torch on CPU or CUDA (``device``). Written by hand because no maintained package
offers a batched, unbiased, GPU CKA over many layer x ROI pairs; tested against a plain numpy
implementation of the formulas above. ``python benchmarks/metrics.py`` prints the ratio against
a loop over pairs.

Example::

    scores = linear_cka(layers, rois)                 # (n_layers, n_rois), unbiased
    scores_cv = cross_validated_cka(layers, roi_repeats)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from brainalign.probe.metrics._sets import (
    DType,
    as_sets,
    check_option,
    check_same_stimuli,
    resolve_torch,
    to_tensor,
)

__all__ = ["CKA_ROUTES", "cross_validated_cka", "linear_cka"]

Route = Literal["auto", "gram", "features"]
CKA_ROUTES: tuple[str, ...] = ("auto", "gram", "features")
_GRAM_BUDGET_BYTES = 2**30  # the gram route holds one side's Gram matrices: at most 1 GiB
_PRODUCT_BUDGET_ELEMENTS = 2**25  # feature route: X^T Y blocks of at most 32 Mi elements


# ---------------------------------------------------------------------------- HSIC operands
def _centred_gram(features: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """Flattened ``H K H`` (biased) or U-centred K (unbiased) of (n, p) features: (n * n,)."""
    centred = features - features.mean(dim=0, keepdim=True)
    gram = centred @ centred.T  # (n, n); centred features give H K H directly
    if not unbiased:
        return gram.reshape(-1)
    n = gram.shape[0]
    gram.fill_diagonal_(0.0)
    row_sums = gram.sum(dim=1)  # (n,)
    total = row_sums.sum()
    gram -= row_sums[:, None] / (n - 2)
    gram -= row_sums[None, :] / (n - 2)
    gram += total / ((n - 1) * (n - 2))
    gram.fill_diagonal_(0.0)
    return gram.reshape(-1)


@dataclass
class _FeatureOperand:
    """What the feature route needs of one set: centred features and their row norms."""

    centred: torch.Tensor  # (n, p)
    row_squares: torch.Tensor  # (n,) squared norm of each centred row: diag(K)
    total: torch.Tensor  # () trace(K)


def _feature_operand(features: torch.Tensor) -> _FeatureOperand:
    centred = features - features.mean(dim=0, keepdim=True)
    row_squares = (centred * centred).sum(dim=1)
    return _FeatureOperand(centred, row_squares, row_squares.sum())


def _debias(
    cross: torch.Tensor,
    first_rows: torch.Tensor,
    second_rows: torch.Tensor,
    first_total: torch.Tensor,
    second_total: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """``n (n - 3) HSIC_1`` from ``||X^T Y||_F**2`` and the row norms (Kornblith et al.'s code).

    ``cross`` (m,), ``first_rows`` (m, n) or (n,), ``second_rows`` (n,), totals (m,) or ().
    """
    return (
        cross
        - n / (n - 2) * (first_rows @ second_rows)
        + first_total * second_total / ((n - 1) * (n - 2))
    )


def _squared_cross_norms(
    stacked: torch.Tensor, block_ends: torch.Tensor, other: torch.Tensor
) -> torch.Tensor:
    """``||X_k^T Y||_F**2`` for the column blocks X_k of ``stacked`` (n, sum p_k): (n_blocks,).

    ``block_ends`` holds each block's end column. Y's columns are taken in chunks so that no
    product exceeds the budget.
    """
    chunk = max(1, _PRODUCT_BUDGET_ELEMENTS // stacked.shape[1])
    column_sums = torch.zeros(stacked.shape[1], dtype=stacked.dtype, device=stacked.device)
    for start in range(0, other.shape[1], chunk):
        product = other[:, start : start + chunk].T @ stacked  # (chunk, sum p_k)
        column_sums += (product * product).sum(dim=0)
    cumulative = torch.cumsum(column_sums, dim=0)[block_ends - 1]
    return torch.diff(cumulative, prepend=cumulative.new_zeros(1))


# ---------------------------------------------------------------------------- engines
class _GramEngine:
    """HSIC of one stacked side (the model sets) with one set at a time."""

    def __init__(self, sets: list[torch.Tensor], unbiased: bool) -> None:
        self.unbiased = unbiased
        self.grams = torch.stack([_centred_gram(item, unbiased) for item in sets])  # (m, n*n)
        self.self_terms = (self.grams * self.grams).sum(dim=1)  # (m,)

    def operand(self, features: torch.Tensor) -> torch.Tensor:
        return _centred_gram(features, self.unbiased)

    def with_stack(self, operand: torch.Tensor) -> torch.Tensor:
        return self.grams @ operand  # (m,)

    @staticmethod
    def between(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return first @ second


class _FeatureEngine:
    """The same HSIC values from features, never forming an n x n matrix."""

    def __init__(self, sets: list[torch.Tensor], unbiased: bool) -> None:
        self.unbiased = unbiased
        self.n = sets[0].shape[0]
        operands = [_feature_operand(item) for item in sets]
        self.stacked = torch.cat([operand.centred for operand in operands], dim=1)  # (n, sum p)
        widths = torch.tensor([item.shape[1] for item in sets], device=self.stacked.device)
        self.block_ends = torch.cumsum(widths, dim=0)
        self.row_squares = torch.stack([operand.row_squares for operand in operands])  # (m, n)
        self.totals = torch.stack([operand.total for operand in operands])  # (m,)
        self.self_terms = torch.stack([self.between(operand, operand) for operand in operands])

    def operand(self, features: torch.Tensor) -> _FeatureOperand:
        return _feature_operand(features)

    def with_stack(self, operand: _FeatureOperand) -> torch.Tensor:
        cross = _squared_cross_norms(self.stacked, self.block_ends, operand.centred)  # (m,)
        if not self.unbiased:
            return cross
        return _debias(
            cross, self.row_squares, operand.row_squares, self.totals, operand.total, self.n
        )

    def between(self, first: _FeatureOperand, second: _FeatureOperand) -> torch.Tensor:
        product = first.centred.T @ second.centred  # (p_1, p_2)
        cross = (product * product).sum()
        if not self.unbiased:
            return cross
        return _debias(
            cross, first.row_squares, second.row_squares, first.total, second.total, self.n
        )


def _choose_route(
    route: Route, n_stimuli: int, widths_a: list[int], widths_b: list[int], itemsize: int
) -> str:
    check_option(route, CKA_ROUTES, "route")
    if route != "auto":
        return route
    gram_bytes = (len(widths_a) + 2) * n_stimuli**2 * itemsize
    if gram_bytes > _GRAM_BUDGET_BYTES:
        return "features"
    sum_a, sum_b = sum(widths_a), sum(widths_b)
    gram_flops = n_stimuli**2 * (sum_a + sum_b + len(widths_a) * len(widths_b))
    feature_flops = n_stimuli * (sum_a * sum_b + sum(w * w for w in widths_a + widths_b))
    return "gram" if gram_flops <= feature_flops else "features"


def _prepare(
    a: np.ndarray | Sequence[np.ndarray],
    b: np.ndarray | Sequence[np.ndarray],
    *,
    repeats: bool,
    unbiased: bool,
    route: Route,
    device: str | torch.device,
    dtype: DType,
) -> tuple[list[np.ndarray], _GramEngine | _FeatureEngine, Callable[[np.ndarray], torch.Tensor]]:
    """Check both sides; return b's sets, the engine holding a's sets, and b's tensor maker."""
    sets_a = as_sets(a, name="a", min_stimuli=4)
    name_b = "b_repeats" if repeats else "b"
    sets_b = as_sets(b, name=name_b, repeats=repeats, min_stimuli=4)
    check_same_stimuli(sets_a, sets_b, f"a and {name_b}")
    torch_device, torch_dtype = resolve_torch(device, dtype)
    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    widths_a = [item.shape[-1] for item in sets_a]
    widths_b = [item.shape[-1] for item in sets_b]
    chosen = _choose_route(route, sets_a[0].shape[-2], widths_a, widths_b, itemsize)
    tensors = [to_tensor(item, torch_device, torch_dtype) for item in sets_a]
    engine = (
        _GramEngine(tensors, unbiased) if chosen == "gram" else _FeatureEngine(tensors, unbiased)
    )
    return sets_b, engine, lambda item: to_tensor(item, torch_device, torch_dtype)


def hsic_ratio(numerator: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> np.ndarray:
    """``numerator / sqrt(first * second)``, NaN where the product is not positive."""
    product = first * second
    safe = torch.where(product > 0, product, torch.ones_like(product))
    values = numerator / torch.sqrt(safe)
    return torch.where(product > 0, values, torch.full_like(values, float("nan"))).cpu().numpy()


# ---------------------------------------------------------------------------- public API
def linear_cka(
    a: np.ndarray | Sequence[np.ndarray],
    b: np.ndarray | Sequence[np.ndarray],
    *,
    unbiased: bool = True,
    device: str | torch.device = "cpu",
    dtype: DType = "float64",
    route: Route = "auto",
) -> np.ndarray:
    """Linear CKA of every set in ``a`` with every set in ``b``.

    Parameters
    ----------
    a : ndarray of shape (n_a, n_stimuli, n_features), or sequence of (n_stimuli, n_features_i)
        E.g. one set per layer.
    b : ndarray of shape (n_b, n_stimuli, n_targets), or sequence of (n_stimuli, n_targets_j)
        E.g. one set per ROI, or per MEG time sample (``meg.transpose(2, 0, 1)``).
    unbiased : bool, default=True
        HSIC_1 (Song et al. 2012) instead of the biased HSIC_0; see the module docstring.
    device : str or torch.device, default="cpu"
        "cpu", "cuda" or "auto".
    dtype : {"float64", "float32"}, default="float64"
    route : {"auto", "gram", "features"}, default="auto"
        How to compute (same values); "auto" picks the cheaper one that fits in memory.

    Returns
    -------
    cka : ndarray of shape (n_a, n_b)
        Biased CKA lies in [0, 1]; the unbiased one can be slightly negative. NaN where a
        set's self-similarity is not positive (a constant set, or with ``unbiased`` too few
        stimuli to estimate it).

    Raises
    ------
    ValueError
        Sets with different numbers of stimuli, fewer than 4 stimuli, NaN values, unknown
        route or dtype, CUDA asked for but absent.
    """
    sets_b, engine, to_device = _prepare(
        a, b, repeats=False, unbiased=unbiased, route=route, device=device, dtype=dtype
    )
    result = np.empty((len(engine.self_terms), len(sets_b)))
    for index, item in enumerate(sets_b):
        operand = engine.operand(to_device(item))
        cross = engine.with_stack(operand)  # (n_a,)
        own = engine.between(operand, operand)
        result[:, index] = hsic_ratio(cross, engine.self_terms, own)
    return result


def cross_validated_cka(
    a: np.ndarray | Sequence[np.ndarray],
    b_repeats: np.ndarray | Sequence[np.ndarray],
    *,
    device: str | torch.device = "cpu",
    dtype: DType = "float64",
    route: Route = "auto",
) -> np.ndarray:
    """Split-half cross-validated unbiased CKA of model sets with noisy brain sets.

    ``HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L_even, L_odd))``: see the module docstring for
    the definition and the references.

    Parameters
    ----------
    a : ndarray of shape (n_a, n_stimuli, n_features), or sequence of (n_stimuli, n_features_i)
        Noise-free representations (model layers).
    b_repeats : ndarray of shape (n_b, n_repeats, n_stimuli, n_targets), or sequence of
        (n_repeats_j, n_stimuli, n_targets_j)
        Single-repeat brain responses (``BrainData.repeats``, per ROI or MEG time sample), at
        least 2 repeats; halves are the even and the odd repeat positions.
    device, dtype, route
        As in :func:`linear_cka`.

    Returns
    -------
    cka : ndarray of shape (n_a, n_b)
        NaN for a brain set whose halves share no positive HSIC_1 (no reliable signal).

    Raises
    ------
    ValueError
        Brain data without repeats, sets with different numbers of stimuli, as in
        :func:`linear_cka`.
    """
    sets_b, engine, to_device = _prepare(
        a, b_repeats, repeats=True, unbiased=True, route=route, device=device, dtype=dtype
    )
    result = np.empty((len(engine.self_terms), len(sets_b)))
    for index, item in enumerate(sets_b):
        repeats = to_device(item)  # (R, n, p)
        mean = engine.operand(repeats.mean(dim=0))
        even = engine.operand(repeats[0::2].mean(dim=0))
        odd = engine.operand(repeats[1::2].mean(dim=0))
        cross = engine.with_stack(mean)  # (n_a,)
        result[:, index] = hsic_ratio(cross, engine.self_terms, engine.between(even, odd))
    return result
