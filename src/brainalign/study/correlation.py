"""Pearson correlation along the last axis, vectorised over replicates or permutations.

:func:`brainalign.probe.scores.spatial_score` and ``temporal_score`` correlate two vectors
once; the study statistics need the same correlation for thousands of bootstrap replicates or
permutations at a time, with each row dropping its own non-finite pairs. Hand-written here
because ``scipy.stats.pearsonr`` has no per-row NaN omission; it follows the probe's rules
(NaN when fewer than three finite pairs remain or either side has zero variance), and the tests
check it against the probe's functions row by row.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_PAIRS", "rowwise_pearson"]

#: Fewest finite pairs a correlation is computed from (as in ``brainalign.probe.scores``).
MIN_PAIRS = 3


def rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r between ``x`` and ``y`` along the last axis, per row, NaN pairs dropped.

    Parameters
    ----------
    x, y : ndarray of shapes broadcastable to (..., n)
        Paired values; e.g. ``x`` of shape (n,) (ROI distances) and ``y`` of shape
        (n_boot, n) (best depths per replicate).

    Returns
    -------
    r : ndarray of shape (...)
        Correlation of each row over its pairs where both values are finite; NaN (no warning)
        where fewer than :data:`MIN_PAIRS` pairs remain or either side is constant over them.
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    usable = np.isfinite(x) & np.isfinite(y)  # (..., n)
    n_pairs = usable.sum(axis=-1)  # (...)
    x_zeroed = np.where(usable, x, 0.0)
    y_zeroed = np.where(usable, y, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_mean = x_zeroed.sum(axis=-1, keepdims=True) / n_pairs[..., None]
        y_mean = y_zeroed.sum(axis=-1, keepdims=True) / n_pairs[..., None]
        x_centred = np.where(usable, x - x_mean, 0.0)
        y_centred = np.where(usable, y - y_mean, 0.0)
        covariance = (x_centred * y_centred).sum(axis=-1)
        norm = np.sqrt((x_centred**2).sum(axis=-1) * (y_centred**2).sum(axis=-1))
        r = covariance / norm
    constant = _is_constant(x, usable) | _is_constant(y, usable)
    return np.where((n_pairs >= MIN_PAIRS) & ~constant & (norm > 0), r, np.nan)


def _is_constant(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """True for rows whose usable values are all equal (``np.ptp == 0``, as the probe checks)."""
    highest = np.where(usable, values, -np.inf).max(axis=-1)
    lowest = np.where(usable, values, np.inf).min(axis=-1)
    return ~(highest > lowest)
