"""Derived scores per bootstrap replicate: best depths, spatial and temporal scores, half times.

Inputs are replicates of group-mean R from :func:`brainalign.probe.bootstrap.bootstrap_group_r`
stacked over layers (or checkpoints) with the same resamples, so replicate ``b`` of every layer
comes from the same stimuli. Each function applies the probe's definition
(:mod:`brainalign.probe.scores`, :func:`brainalign.probe.chronology.half_time`) to every
replicate; the vectorised ones are checked against a loop over those functions in the tests.
A replicate where a score is undefined is NaN (no warning), and
:func:`brainalign.probe.bootstrap.percentile_interval` counts those.
"""

from __future__ import annotations

import numpy as np

from brainalign.probe.chronology import HalfTimeDefinition, half_time
from brainalign.probe.scores import rowwise_pearson

__all__ = [
    "best_depth_replicates",
    "bootstrap_encoding_score",
    "bootstrap_half_time",
    "bootstrap_spatial_score",
    "bootstrap_temporal_score",
    "t_max_replicates",
]


def _check_replicates(values: np.ndarray, name: str, axes: str, sizes: dict[int, int]) -> None:
    """One clear error when a replicate array has the wrong number of axes or sizes."""
    expected_ndim = axes.count(",") + 1
    if values.ndim != expected_ndim or any(values.shape[a] != n for a, n in sizes.items()):
        detail = "".join(f", axis {axis} of length {n}" for axis, n in sizes.items())
        raise ValueError(f"{name} must have shape ({axes}){detail}; got {values.shape}")


def best_depth_replicates(boot_r_by_layer_roi: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """Relative depth of each ROI's best layer in each replicate.

    Parameters
    ----------
    boot_r_by_layer_roi : ndarray of shape (n_boot, n_layers, n_rois)
        Mean R per layer and ROI in each replicate.
    depths : ndarray of shape (n_layers,)
        Relative depth of each layer, in layer order.

    Returns
    -------
    best_depths : ndarray of shape (n_boot, n_rois)
        As :func:`brainalign.probe.scores.best_layer_depths` per replicate: NaN ignored, ties
        to the earlier layer, NaN where an ROI's scores are all NaN.
    """
    boot = np.asarray(boot_r_by_layer_roi, dtype=np.float64)
    depths = np.asarray(depths, dtype=np.float64)
    _check_replicates(boot, "boot_r_by_layer_roi", "n_boot, n_layers, n_rois", {})
    _check_replicates(depths, "depths", "n_layers", {0: boot.shape[1]})
    all_nan = np.isnan(boot).all(axis=1)  # (n_boot, n_rois)
    best = depths[np.argmax(np.where(np.isnan(boot), -np.inf, boot), axis=1)]
    return np.where(all_nan, np.nan, best)


def bootstrap_spatial_score(
    boot_r_by_layer_roi: np.ndarray, depths: np.ndarray, distances: np.ndarray
) -> np.ndarray:
    """Spatial score of each replicate: r(ROI distance from V1, best-layer depth).

    Parameters
    ----------
    boot_r_by_layer_roi : ndarray of shape (n_boot, n_layers, n_rois)
    depths : ndarray of shape (n_layers,)
    distances : ndarray of shape (n_rois,)
        Distance of each ROI from V1, same ROI order.

    Returns
    -------
    spatial_scores : ndarray of shape (n_boot,)
        :func:`brainalign.probe.scores.spatial_score` per replicate; NaN where it is
        undefined (fewer than 3 finite ROIs, or every ROI's best layer the same).
    """
    best = best_depth_replicates(boot_r_by_layer_roi, depths)  # (n_boot, n_rois)
    distances = np.asarray(distances, dtype=np.float64)
    _check_replicates(distances, "distances", "n_rois", {0: best.shape[1]})
    return rowwise_pearson(distances, best)


def t_max_replicates(
    boot_courses: np.ndarray, times: np.ndarray, threshold: float = 0.95
) -> np.ndarray:
    """Peak time of each layer's MEG course in each replicate.

    Parameters
    ----------
    boot_courses : ndarray of shape (n_boot, n_layers, n_times)
        Mean R over sensors per layer and time sample in each replicate.
    times : ndarray of shape (n_times,)
    threshold : float, default=0.95
        As in :func:`brainalign.probe.scores.t_max`.

    Returns
    -------
    t_max_values : ndarray of shape (n_boot, n_layers)
        Mean time where the course is at least ``threshold`` of its maximum; NaN where the
        maximum is not positive.
    """
    courses = np.asarray(boot_courses, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    _check_replicates(courses, "boot_courses", "n_boot, n_layers, n_times", {})
    _check_replicates(times, "times", "n_times", {0: courses.shape[2]})
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    maxima = np.where(np.isnan(courses), -np.inf, courses).max(axis=2, keepdims=True)
    usable = maxima[..., 0] > 0  # (n_boot, n_layers)
    with np.errstate(divide="ignore", invalid="ignore"):
        at_peak = courses / maxima >= threshold  # NaN compares False
        peak = (at_peak * times).sum(axis=2) / at_peak.sum(axis=2)
    return np.where(usable, peak, np.nan)


def bootstrap_temporal_score(
    boot_courses: np.ndarray, depths: np.ndarray, times: np.ndarray, threshold: float = 0.95
) -> np.ndarray:
    """Temporal score of each replicate: r(layer depth, T_max).

    Parameters
    ----------
    boot_courses : ndarray of shape (n_boot, n_layers, n_times)
    depths : ndarray of shape (n_layers,)
    times : ndarray of shape (n_times,)
    threshold : float, default=0.95

    Returns
    -------
    temporal_scores : ndarray of shape (n_boot,)
        :func:`brainalign.probe.scores.temporal_score` of :func:`t_max_replicates`; NaN where
        undefined.
    """
    peaks = t_max_replicates(boot_courses, times, threshold)  # (n_boot, n_layers)
    depths = np.asarray(depths, dtype=np.float64)
    _check_replicates(depths, "depths", "n_layers", {0: peaks.shape[1]})
    return rowwise_pearson(depths, peaks)


def bootstrap_encoding_score(boot_r_by_layer: np.ndarray) -> np.ndarray:
    """Encoding score of each replicate: the best layer's mean R over all targets.

    The best layer is chosen again in every replicate, as the probe chooses it on the full
    data, so the interval includes the uncertainty of that choice.

    Parameters
    ----------
    boot_r_by_layer : ndarray of shape (n_boot, n_layers)
        Mean R over all targets (group ``all``) per layer and replicate.

    Returns
    -------
    encoding_scores : ndarray of shape (n_boot,)
        Maximum over layers, NaN ignored; NaN where every layer is NaN.
    """
    boot = np.asarray(boot_r_by_layer, dtype=np.float64)
    _check_replicates(boot, "boot_r_by_layer", "n_boot, n_layers", {})
    best = np.where(np.isnan(boot), -np.inf, boot).max(axis=1)
    return np.where(np.isneginf(best), np.nan, best)


def bootstrap_half_time(
    boot_curves: np.ndarray, fractions: np.ndarray, definition: HalfTimeDefinition = "final"
) -> np.ndarray:
    """Half time of each replicate of a chronology curve.

    Parameters
    ----------
    boot_curves : ndarray of shape (n_boot, n_checkpoints)
        The curve (a score per probed checkpoint) in each replicate; every checkpoint's
        replicates must come from the same resamples (same seed and stimuli).
    fractions : ndarray of shape (n_checkpoints,)
        Training fraction of each checkpoint, strictly increasing.
    definition : {"final", "rise"}, default="final"

    Returns
    -------
    half_times : ndarray of shape (n_boot,)
        :func:`brainalign.probe.chronology.half_time` per replicate (NaN where not reached).
    """
    curves = np.asarray(boot_curves, dtype=np.float64)
    fractions = np.asarray(fractions, dtype=np.float64)
    _check_replicates(curves, "boot_curves", "n_boot, n_checkpoints", {})
    _check_replicates(fractions, "fractions", "n_checkpoints", {0: curves.shape[1]})
    return np.array([half_time(fractions, curve, definition) for curve in curves])
