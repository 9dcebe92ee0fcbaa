"""Comparing two factor levels: across subjects, within one subject, and over a family.

- :func:`wilcoxon_paired`: one score per subject at each level; Wilcoxon signed-rank test of
  the paired differences (``scipy.stats.wilcoxon``), with the mean difference, the
  matched-pairs rank-biserial correlation and Cohen's d_z beside the p value. With few
  subjects the exact test has a p floor (``2 ** (1 - n)`` two-sided: 0.0625 at 5 subjects),
  which the result states.
- :func:`sign_flip_test`: one subject, per-target paired differences (e.g. R of level A minus
  R of level B for every voxel); statistic the mean difference, null by flipping signs (in
  batches of patterns; exact when ``2 ** n`` patterns fit in ``n_permutations``, otherwise
  random with the +1 correction).
- :func:`fdr_bh`: Benjamini-Hochberg q values and rejections over a family of p values
  (``scipy.stats.false_discovery_control``).

Every function is vectorised over leading axes, so a whole table of ROIs x metrics is tested
in one call.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy
import scipy.stats

from brainalign.utils.checks import check_count

__all__ = [
    "FDRResult",
    "PairedComparison",
    "SignFlipResult",
    "fdr_bh",
    "sign_flip_test",
    "wilcoxon_paired",
]

Alternative = Literal["two-sided", "greater", "less"]
_ALTERNATIVES = ("two-sided", "greater", "less")
#: Elements (permutations x data) formed per batch of the sign-flip null (~32 MB of float64).
_SIGN_FLIP_BATCH_ELEMENTS = 2**22


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")


def _scalar_or_array(values: np.ndarray) -> np.ndarray | float:
    values = np.asarray(values)
    return float(values) if values.ndim == 0 else values


def _cohens_dz(differences: np.ndarray) -> np.ndarray:
    """Mean over standard deviation (ddof=1) of the finite differences along the last axis."""
    n = np.isfinite(differences).sum(axis=-1)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # fewer than 2 values: NaN
        mean = np.nanmean(differences, axis=-1)
        spread = np.nanstd(differences, axis=-1, ddof=1)
        return np.where((n >= 2) & (spread > 0), mean / spread, np.nan)


# ---------------------------------------------------------------------- across subjects
@dataclass(frozen=True)
class PairedComparison:
    """Wilcoxon signed-rank comparison of two levels across subjects.

    Every array has the input's shape without its last (subject) axis; floats for 1-D input.

    Attributes
    ----------
    mean_difference : ndarray
        Mean of ``level_a - level_b`` over subjects.
    statistic : ndarray
        Wilcoxon statistic as ``scipy.stats.wilcoxon`` gives it.
    p_value : ndarray
        1.0 where every difference is zero (no evidence either way).
    rank_biserial : ndarray
        Matched-pairs rank-biserial correlation ``(T+ - T-) / (T+ + T-)`` (ranks of the
        non-zero ``|d|``): +1 when every subject is higher at level A.
    cohens_dz : ndarray
        Mean difference over its standard deviation (ddof=1).
    n_pairs : ndarray
        Subjects with both values finite.
    n_nonzero : ndarray
        Of those, subjects whose difference is not zero (zeros are dropped, ``"wilcox"``).
    p_floor : ndarray
        Smallest p the exact test can give with ``n_nonzero`` pairs: ``2 ** (1 - n)``
        two-sided, ``2 ** -n`` one-sided.
    note : str
        Empty, or a sentence saying that some comparisons cannot reach p < 0.05 at all.
    """

    mean_difference: np.ndarray | float
    statistic: np.ndarray | float
    p_value: np.ndarray | float
    rank_biserial: np.ndarray | float
    cohens_dz: np.ndarray | float
    n_pairs: np.ndarray | float
    n_nonzero: np.ndarray | float
    p_floor: np.ndarray | float
    note: str


def wilcoxon_paired(
    level_a: np.ndarray, level_b: np.ndarray, *, alternative: Alternative = "two-sided"
) -> PairedComparison:
    """Paired comparison of two levels across subjects (Wilcoxon signed-rank).

    Parameters
    ----------
    level_a, level_b : ndarray of shape (..., n_subjects)
        One score per subject at each level (same subject order); NaN pairs are left out.
        Leading axes (ROIs, metrics, fractions of training) are tested separately.
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
        ``greater``: level A scores higher.

    Returns
    -------
    PairedComparison
    """
    _check_alternative(alternative)
    a = np.asarray(level_a, dtype=np.float64)
    b = np.asarray(level_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim == 0:
        raise ValueError(
            "level_a and level_b must have the same shape (..., n_subjects), got "
            f"{a.shape} and {b.shape}"
        )
    differences = a - b  # (..., n_subjects)
    finite = np.isfinite(differences)
    nonzero = finite & (differences != 0)
    n_pairs = finite.sum(axis=-1)
    n_nonzero = nonzero.sum(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-zero or all-NaN slices
        test = scipy.stats.wilcoxon(
            differences, alternative=alternative, nan_policy="omit", axis=-1
        )
        ranks = scipy.stats.rankdata(
            np.where(nonzero, np.abs(differences), np.nan), axis=-1, nan_policy="omit"
        )
        mean_difference = np.nanmean(differences, axis=-1)
    positive = np.where(nonzero & (differences > 0), ranks, 0.0).sum(axis=-1)
    negative = np.where(nonzero & (differences < 0), ranks, 0.0).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rank_biserial = np.where(
            n_nonzero > 0, (positive - negative) / (positive + negative), np.nan
        )
    p_value = np.where(n_nonzero > 0, test.pvalue, 1.0)
    exponent = n_nonzero - 1 if alternative == "two-sided" else n_nonzero
    p_floor = np.minimum(1.0, 2.0 ** -exponent.astype(np.float64))
    note = ""
    if np.any(p_floor > 0.05):
        note = (
            f"with {int(n_nonzero.min())} non-zero paired difference(s) the exact Wilcoxon test "
            f"cannot give p below {float(np.max(p_floor)):.4g} (p < 0.05 two-sided needs at "
            "least 6 subjects); compare within subject with sign_flip_test"
        )
    return PairedComparison(
        mean_difference=_scalar_or_array(mean_difference),
        statistic=_scalar_or_array(test.statistic),
        p_value=_scalar_or_array(p_value),
        rank_biserial=_scalar_or_array(rank_biserial),
        cohens_dz=_scalar_or_array(_cohens_dz(differences)),
        n_pairs=_scalar_or_array(n_pairs),
        n_nonzero=_scalar_or_array(n_nonzero),
        p_floor=_scalar_or_array(p_floor),
        note=note,
    )


# ---------------------------------------------------------------------- within a subject
@dataclass(frozen=True)
class SignFlipResult:
    """Sign-flip permutation test of per-target paired differences within one subject.

    Arrays have the input's shape without its last (target) axis; floats for 1-D input.

    Attributes
    ----------
    mean_difference : ndarray
        Mean of the finite per-target differences (the test statistic).
    p_value : ndarray
    cohens_dz : ndarray
        Mean difference over its standard deviation across targets (ddof=1).
    n_targets : ndarray
        Finite differences used.
    n_units : int
        Independently flipped units: targets, or blocks when ``blocks`` was given.
    n_permutations : int
        Sign patterns in the null (``2 ** n_units`` when exact).
    exact : bool
        Whether every sign pattern was enumerated.
    """

    mean_difference: np.ndarray | float
    p_value: np.ndarray | float
    cohens_dz: np.ndarray | float
    n_targets: np.ndarray | float
    n_units: int
    n_permutations: int
    exact: bool


def sign_flip_test(
    differences: np.ndarray,
    *,
    n_permutations: int = 9999,
    seed: int = 0,
    blocks: np.ndarray | None = None,
    alternative: Alternative = "two-sided",
) -> SignFlipResult:
    """Sign-flip permutation test that the mean per-target difference is zero.

    Under the null hypothesis each target's difference is symmetric about zero and the
    targets (or blocks) are independent, so flipping their signs leaves the distribution of
    the mean unchanged. Neighbouring voxels or sensors share noise: pass ``blocks`` (e.g. one
    label per ROI, parcel or sensor) to flip whole blocks together, otherwise the test is
    liberal for spatially correlated targets.

    The null is a product of sign matrices with the differences, in batches of patterns.
    Hand-written rather than ``scipy.stats.permutation_test(permutation_type="samples")``,
    which permutes and gathers index arrays per pattern and is an order of magnitude slower
    at 40,000 targets (``benchmarks/study_stats.py`` times both); the tests check that both
    give the same p values.

    Parameters
    ----------
    differences : ndarray of shape (..., n_targets)
        Per-target paired differences, e.g. ``r_level_a - r_level_b`` of one subject; NaN
        targets are left out. Leading axes are tested separately (with the same sign patterns).
    n_permutations : int, default=9999
        Random sign patterns; when ``2 ** n_units <= n_permutations`` all patterns are
        enumerated and the p value is exact. Otherwise
        ``p = (1 + #{patterns at least as extreme}) / (1 + n_permutations)``.
    seed : int, default=0
    blocks : ndarray of shape (n_targets,) of int, optional
        Block label per target; targets of a block share one sign.
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
        Two-sided counts patterns whose ``|mean|`` reaches the observed ``|mean|``.

    Returns
    -------
    SignFlipResult
    """
    _check_alternative(alternative)
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim == 0 or d.shape[-1] == 0:
        raise ValueError(f"differences must have shape (..., n_targets), got {d.shape}")
    check_count("n_permutations", n_permutations)
    units = np.nan_to_num(d, nan=0.0)  # a NaN target contributes 0 whatever its sign
    if blocks is not None:
        units = units @ _block_matrix(blocks, d.shape[-1])  # (..., n_blocks): block sums
    # The mean of the unit sums is the mean over finite targets times a constant per row,
    # so its p value is that of the mean difference.
    rows = units.reshape(-1, units.shape[-1]).T  # (n_units, n_rows)
    n_units = rows.shape[0]
    observed = rows.sum(axis=0)  # (n_rows,)
    exact = n_units < 63 and 2**n_units <= n_permutations
    if exact:
        patterns = _all_sign_patterns(n_units)
    else:
        patterns = _random_sign_patterns(n_units, n_permutations, seed)
    tolerance = 100 * np.finfo(np.float64).eps * np.abs(observed)  # as scipy: ties count
    as_extreme = np.zeros(observed.shape, dtype=np.int64)
    n_null = 0
    for signs in patterns:  # (batch, n_units)
        null = signs @ rows  # (batch, n_rows)
        n_null += null.shape[0]
        if alternative == "two-sided":
            as_extreme += (np.abs(null) >= np.abs(observed) - tolerance).sum(axis=0)
        elif alternative == "greater":
            as_extreme += (null >= observed - tolerance).sum(axis=0)
        else:
            as_extreme += (null <= observed + tolerance).sum(axis=0)
    correction = 0 if exact else 1
    p_value = (as_extreme + correction) / (n_null + correction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        mean_difference = np.nanmean(d, axis=-1)
    return SignFlipResult(
        mean_difference=_scalar_or_array(mean_difference),
        p_value=_scalar_or_array(p_value.reshape(d.shape[:-1])),
        cohens_dz=_scalar_or_array(_cohens_dz(d)),
        n_targets=_scalar_or_array(np.isfinite(d).sum(axis=-1)),
        n_units=n_units,
        n_permutations=n_null,
        exact=exact,
    )


def _block_matrix(blocks: np.ndarray, n_targets: int) -> np.ndarray:
    """(n_targets, n_blocks) one-hot matrix of the block labels."""
    labels = np.asarray(blocks)
    if labels.shape != (n_targets,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"blocks must hold one integer label per target ({n_targets}), got dtype "
            f"{labels.dtype} and shape {labels.shape}"
        )
    _, block_of = np.unique(labels, return_inverse=True)
    one_hot = np.zeros((n_targets, int(block_of.max()) + 1))
    one_hot[np.arange(n_targets), block_of] = 1.0
    return one_hot


def _all_sign_patterns(n_units: int) -> Iterator[np.ndarray]:
    """Every +-1 pattern of ``n_units`` signs (the identity included), in batches."""
    batch = max(1, _SIGN_FLIP_BATCH_ELEMENTS // n_units)
    bits = np.arange(n_units)
    for start in range(0, 2**n_units, batch):
        codes = np.arange(start, min(start + batch, 2**n_units))[:, None]
        yield ((codes >> bits) & 1) * 2.0 - 1.0  # (batch, n_units)


def _random_sign_patterns(n_units: int, n_patterns: int, seed: int) -> Iterator[np.ndarray]:
    """``n_patterns`` random +-1 patterns from ``default_rng(seed)``, in batches."""
    rng = np.random.default_rng(seed)
    batch = max(1, _SIGN_FLIP_BATCH_ELEMENTS // n_units)
    for start in range(0, n_patterns, batch):
        size = (min(batch, n_patterns - start), n_units)
        yield rng.integers(0, 2, size=size, dtype=np.int8) * 2.0 - 1.0


# ---------------------------------------------------------------------- families
@dataclass(frozen=True)
class FDRResult:
    """Benjamini-Hochberg correction of one family of p values.

    Attributes
    ----------
    q_values : ndarray
        Same shape as the p values; NaN where the p value was NaN (left out of the family).
    rejected : ndarray of bool
        ``q_values <= alpha``.
    alpha : float
    n_tests : int
        Finite p values in the family.
    """

    q_values: np.ndarray
    rejected: np.ndarray
    alpha: float
    n_tests: int


def fdr_bh(p_values: np.ndarray, alpha: float = 0.05) -> FDRResult:
    """Benjamini-Hochberg false discovery rate over one family (ROIs, windows, metrics).

    Parameters
    ----------
    p_values : array-like of any shape
        One family; NaN entries (untestable comparisons) are left out of it.
    alpha : float, default=0.05
        False discovery rate controlled.

    Returns
    -------
    FDRResult
    """
    if not hasattr(scipy.stats, "false_discovery_control"):
        raise ImportError(
            f"fdr_bh needs scipy >= 1.11 (scipy.stats.false_discovery_control), found "
            f"{scipy.__version__}; upgrade scipy"
        )
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    p = np.asarray(p_values, dtype=np.float64)
    finite = np.isfinite(p)
    outside = finite & ((p < 0) | (p > 1))
    if outside.any():
        raise ValueError(f"p values must be in [0, 1], got {p[outside][:5].tolist()}")
    if np.isinf(p).any():
        raise ValueError("p values must be finite or NaN, got infinity")
    q = np.full(p.shape, np.nan)
    if finite.any():
        q[finite] = scipy.stats.false_discovery_control(p[finite], method="bh")
    rejected = np.where(finite, q <= alpha, False)
    return FDRResult(q_values=q, rejected=rejected, alpha=float(alpha), n_tests=int(finite.sum()))
