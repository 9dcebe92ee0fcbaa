"""Trend of a score against log model size or log training steps, without pseudo-replication.

One point per subject per level (or per run with a single subject). Points of one subject are
not independent of each other (a good subject scores high at every level), so pooling every
subject's points in one regression would overstate the evidence. The choice made here:

- several subjects: an ordinary least-squares slope of score on ``log10(level)`` per subject;
  the trend is the mean of those slopes, its interval a t interval across subjects, its p
  values a one-sample t test and a Wilcoxon signed-rank test of the slopes against 0
  (n = subjects). Pearson and Spearman correlations are computed over the per-level means
  across subjects (n = levels), each level counted once.
- one subject (or ``subjects=None``): one regression over the points (n = points), its slope
  interval from the slope's standard error with ``n - 2`` degrees of freedom
  (``scipy.stats.linregress``); Pearson and Spearman over the points.

Either way the inference generalises over subjects (or runs), not over model instances: with
one trained model per size, a difference between sizes cannot be told apart from a difference
between two training runs unless seeds are levels of the study too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats

from brainalign.study.comparisons import wilcoxon_paired
from brainalign.utils.checks import paired_vectors

__all__ = ["TrendResult", "trend_test"]


@dataclass(frozen=True)
class TrendResult:
    """Trend of a score against ``log10`` of a factor.

    Attributes
    ----------
    slope : float
        Change of the score per tenfold increase of the factor.
    slope_low, slope_high : float
        Confidence interval of the slope (``level``).
    slope_p : float
        Two-sided p of slope = 0 (t test across subjects' slopes, or the regression's t test).
    slope_p_wilcoxon : float
        Wilcoxon signed-rank p of the subjects' slopes (NaN with one subject).
    pearson_r, pearson_p, spearman_rho, spearman_p : float
        Correlations of score with ``log10(level)`` (see the module docstring for over what).
    n_points, n_levels, n_subjects : int
    subject_slopes : ndarray of shape (n_subjects,)
        Per-subject slopes (one value, the pooled slope, with one subject).
    method : str
        Which of the two designs was used, in words.
    note : str
        Empty, or why ``slope_p_wilcoxon`` cannot be small (too few subjects).
    """

    slope: float
    slope_low: float
    slope_high: float
    slope_p: float
    slope_p_wilcoxon: float
    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    n_points: int
    n_levels: int
    n_subjects: int
    subject_slopes: np.ndarray
    method: str
    note: str = ""


def _correlations(log_levels: np.ndarray, values: np.ndarray) -> tuple[float, ...]:
    """Pearson r, p and Spearman rho, p; NaN when fewer than 3 points or a constant side."""
    if len(values) < 3 or np.ptp(values) == 0 or np.ptp(log_levels) == 0:
        return (math.nan,) * 4
    pearson = scipy.stats.pearsonr(log_levels, values)
    spearman = scipy.stats.spearmanr(log_levels, values)
    return (
        float(pearson.statistic),
        float(pearson.pvalue),
        float(spearman.statistic),
        float(spearman.pvalue),
    )


def _ols_slope(log_levels: np.ndarray, values: np.ndarray) -> float:
    centred = log_levels - log_levels.mean()
    spread = float((centred**2).sum())
    return float((centred * (values - values.mean())).sum() / spread) if spread > 0 else math.nan


def trend_test(
    levels: np.ndarray,
    values: np.ndarray,
    *,
    subjects: np.ndarray | None = None,
    level: float = 0.95,
) -> TrendResult:
    """Test a score's trend against ``log10`` of model size or training steps.

    Parameters
    ----------
    levels : ndarray of shape (n_points,)
        Factor value of each point (parameters, steps), positive.
    values : ndarray of shape (n_points,)
        The score at each point; non-finite points are dropped.
    subjects : ndarray of shape (n_points,), optional
        Subject of each point. With two or more subjects the trend is tested across subjects
        (see the module docstring).
    level : float, default=0.95
        Coverage of the slope interval.

    Returns
    -------
    TrendResult
    """
    levels, values = paired_vectors(levels, values, ("levels", "values"))
    if np.any(~(levels > 0)):
        raise ValueError(
            f"levels must be positive (they are log-transformed), got {levels[~(levels > 0)]}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    labels = np.zeros(len(levels), dtype=np.int64) if subjects is None else np.asarray(subjects)
    if labels.shape != levels.shape:
        raise ValueError(f"subjects must have one label per point, got shape {labels.shape}")
    keep = np.isfinite(values)
    log_levels, values, labels = np.log10(levels[keep]), values[keep], labels[keep]
    subject_names = list(dict.fromkeys(labels.tolist()))
    n_levels = len(np.unique(log_levels))
    if len(subject_names) >= 2:
        return _across_subjects(log_levels, values, labels, subject_names, n_levels, level)
    return _one_series(log_levels, values, n_levels, level)


def _one_series(
    log_levels: np.ndarray, values: np.ndarray, n_levels: int, level: float
) -> TrendResult:
    """One regression over the points of a single subject (or of runs)."""
    slope, low, high, p = math.nan, math.nan, math.nan, math.nan
    if n_levels >= 2:
        fit = scipy.stats.linregress(log_levels, values)
        slope = float(fit.slope)
        if len(values) >= 3:
            half_width = scipy.stats.t.ppf(0.5 + level / 2, len(values) - 2) * fit.stderr
            low, high = float(slope - half_width), float(slope + half_width)
            p = float(fit.pvalue)
    return TrendResult(
        slope,
        low,
        high,
        p,
        math.nan,
        *_correlations(log_levels, values),
        n_points=len(values),
        n_levels=n_levels,
        n_subjects=1,
        subject_slopes=np.array([slope]),
        method="one regression over the points (one subject)",
    )


def _across_subjects(
    log_levels: np.ndarray,
    values: np.ndarray,
    labels: np.ndarray,
    subject_names: list,
    n_levels: int,
    level: float,
) -> TrendResult:
    """Per-subject slopes tested across subjects; correlations over per-level means."""
    slopes = np.array(
        [_ols_slope(log_levels[labels == s], values[labels == s]) for s in subject_names]
    )
    usable = slopes[np.isfinite(slopes)]
    slope, low, high, p, p_wilcoxon = (math.nan,) * 5
    note = ""
    if len(usable) >= 1:
        slope = float(usable.mean())
    if len(usable) >= 2 and np.ptp(usable) > 0:
        test = scipy.stats.ttest_1samp(usable, 0.0)
        interval = test.confidence_interval(level)
        low, high, p = float(interval.low), float(interval.high), float(test.pvalue)
        wilcoxon = wilcoxon_paired(usable, np.zeros_like(usable))
        p_wilcoxon, note = float(wilcoxon.p_value), wilcoxon.note
    unique_levels = np.unique(log_levels)
    level_means = np.array([values[log_levels == x].mean() for x in unique_levels])
    return TrendResult(
        slope,
        low,
        high,
        p,
        p_wilcoxon,
        *_correlations(unique_levels, level_means),
        n_points=len(values),
        n_levels=n_levels,
        n_subjects=len(subject_names),
        subject_slopes=slopes,
        method=(
            f"per-subject slopes tested across {len(usable)} subjects; correlations over "
            f"{n_levels} per-level means"
        ),
        note=note,
    )
