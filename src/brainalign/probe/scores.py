"""Alignment scores computed from per-target encoding correlations.

Everything here is plain numpy/pandas (``pearson_r`` also accepts torch tensors so the ridge code
can stay on the GPU). The scores follow Study A of PAPERS.md:

- encoding score: mean Pearson R over targets (:func:`encoding_score`, :func:`roi_scores`);
- spatial score: Pearson r between each ROI's distance from V1 and the relative depth of its
  best-predicting layer (:func:`distance_from_v1`, :func:`best_layer_depths`,
  :func:`spatial_score`);
- temporal score: Pearson r between layer depth and the time at which each layer's MEG score
  peaks (:func:`t_max`, :func:`temporal_score`).

Noise ceilings (:func:`noise_ceiling_from_ncsnr`, :func:`noise_ceiling_split_half`) are reported
as extra columns only; no score here divides by them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MIN_PAIRS",
    "best_layer_depths",
    "distance_from_v1",
    "encoding_score",
    "noise_ceiling_from_ncsnr",
    "noise_ceiling_split_half",
    "normalised_r",
    "pearson_r",
    "roi_scores",
    "rowwise_pearson",
    "spatial_score",
    "t_max",
    "temporal_score",
]


def _is_torch_tensor(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("torch")


def pearson_r(a: Any, b: Any, axis: int = 0) -> Any:
    """Pearson correlation between ``a`` and ``b`` along ``axis``, vectorised over the rest.

    Parameters
    ----------
    a, b : ndarray or torch.Tensor of the same shape, e.g. (n_samples, n_targets)
        Paired observations. Both numpy or both torch (then the result stays on their device
        and dtype; numpy inputs are computed in float64).
    axis : int, default=0
        Axis holding the paired samples.

    Returns
    -------
    r : ndarray or torch.Tensor of shape ``a.shape`` without ``axis``
        Correlation per remaining index. NaN where either input is constant along ``axis``
        (zero variance); no warning is emitted for those.
    """
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"pearson_r needs two arrays of the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if _is_torch_tensor(a) or _is_torch_tensor(b):
        return _pearson_r_torch(a, b, axis)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a_centred = a - a.mean(axis=axis, keepdims=True)
    b_centred = b - b.mean(axis=axis, keepdims=True)
    covariance = (a_centred * b_centred).sum(axis=axis)
    norm_product = np.sqrt((a_centred**2).sum(axis=axis) * (b_centred**2).sum(axis=axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = covariance / norm_product
    return np.where(norm_product > 0, r, np.nan)


def _pearson_r_torch(a: Any, b: Any, axis: int) -> Any:
    import torch

    a_centred = a - a.mean(dim=axis, keepdim=True)
    b_centred = b - b.mean(dim=axis, keepdim=True)
    covariance = (a_centred * b_centred).sum(dim=axis)
    norm_product = torch.sqrt((a_centred * a_centred).sum(dim=axis)) * torch.sqrt(
        (b_centred * b_centred).sum(dim=axis)
    )
    nan = torch.full_like(covariance, float("nan"))
    return torch.where(norm_product > 0, covariance / norm_product, nan)


#: Fewest finite pairs a correlation is computed from (spatial and temporal scores).
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


def _correlation_across(x: np.ndarray, y: np.ndarray, what: str) -> float:
    """Pearson r between two 1-D vectors, NaN (with a warning) when it is undefined.

    Pairs where either value is NaN are dropped first. Undefined means fewer than three
    remaining pairs or zero variance in either vector.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"{what}: expected two 1-D arrays of the same length, got shapes {x.shape} and "
            f"{y.shape}"
        )
    finite = np.isfinite(x) & np.isfinite(y)
    n_pairs = int(finite.sum())
    if n_pairs < 3:
        warnings.warn(
            f"{what} is undefined with {n_pairs} usable pairs (need at least 3); returning NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        return float("nan")
    x, y = x[finite], y[finite]
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        warnings.warn(
            f"{what} is undefined because one of its inputs has zero variance; returning NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(rowwise_pearson(x, y))


def normalised_r(r: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Normalised score ``r / max(r)`` (Study A).

    Parameters
    ----------
    r : ndarray of any shape, e.g. (n_layers, n_targets)
        Encoding correlations.
    axis : int or None, default=None
        Axis over which the maximum is taken (NaN ignored). None divides by the single largest
        value of the whole array, so relative differences between layers or ROIs are kept;
        ``axis=0`` on (n_layers, n_targets) normalises each target by its best layer.

    Returns
    -------
    normalised : ndarray of the same shape as ``r``
        NaN wherever the maximum it is divided by is not positive (a warning says how many
        such maxima there were), since dividing by a zero or negative best score is
        meaningless.
    """
    r = np.asarray(r, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN maxima
        maximum = np.nanmax(r, axis=axis, keepdims=True)
    bad = ~(maximum > 0)
    if bad.any():
        warnings.warn(
            f"normalised_r: {int(bad.sum())} maximum value(s) not positive; their normalised "
            "scores are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bad, np.nan, r / maximum)


def noise_ceiling_from_ncsnr(ncsnr: np.ndarray, n_repeats: int | np.ndarray) -> np.ndarray:
    """NSD noise ceiling in percent of variance: ``100 * ncsnr**2 / (ncsnr**2 + mean_i(1 / k_i))``.

    With the same number of repeats ``k`` for every stimulus this is NSD's
    ``100 * ncsnr**2 / (ncsnr**2 + 1 / k)``; with ``k_i`` repeats averaged for stimulus ``i``
    the noise variance of the means is the average of ``1 / k_i`` (the NSD data paper, Allen
    et al. 2022, Methods "Noise ceiling"). The one formula of brainalign; loaders call it.

    Parameters
    ----------
    ncsnr : ndarray of shape (n_targets,)
        Noise-ceiling signal-to-noise ratio per voxel or vertex (NSD ``ncsnr`` files).
    n_repeats : int, or ndarray of int of shape (n_stimuli,)
        Number of repeats ``k`` averaged per stimulus in the responses being predicted, one
        for all stimuli or one per stimulus.

    Returns
    -------
    noise_ceiling : ndarray of shape (n_targets,)
        Percent (0..100) of the variance of the k-repeat mean that is explainable. To compare
        with a Pearson R, use ``sqrt(noise_ceiling / 100)``. Reported as an extra column only.
    """
    counts = np.atleast_1d(np.asarray(n_repeats))
    if (
        isinstance(n_repeats, bool)
        or counts.ndim != 1
        or not np.issubdtype(counts.dtype, np.integer)
    ):
        raise TypeError(f"n_repeats must be an integer or integers per stimulus, got {n_repeats!r}")
    if counts.size == 0 or counts.min() < 1:
        raise ValueError(f"n_repeats must be at least 1 for every stimulus, got {n_repeats}")
    signal = np.asarray(ncsnr, dtype=np.float64) ** 2
    return 100.0 * signal / (signal + np.mean(1.0 / counts))


def noise_ceiling_split_half(repeats: np.ndarray) -> np.ndarray:
    """Spearman-Brown corrected split-half reliability per target.

    The repeats are split into even (0, 2, 4, ...) and odd (1, 3, ...) positions, each half is
    averaged, the two half means are correlated across stimuli per target, and the correlation
    is stepped up to the full number of repeats with Spearman-Brown: ``2 r / (1 + r)``.

    Parameters
    ----------
    repeats : ndarray of shape (n_repeats, n_stimuli, n_targets)
        Single-trial responses, ``n_repeats >= 2``.

    Returns
    -------
    reliability : ndarray of shape (n_targets,)
        Reliability of the all-repeat mean as a fraction (not percent: multiply by 100 to set
        it beside :func:`noise_ceiling_from_ncsnr`); its square root bounds the Pearson R a
        model can reach. NaN for targets that are constant across stimuli. Extra column only.
    """
    repeats = np.asarray(repeats, dtype=np.float64)
    if repeats.ndim != 3:
        raise ValueError(
            "repeats must have shape (n_repeats, n_stimuli, n_targets), got "
            f"{repeats.ndim} dimensions {repeats.shape}"
        )
    n_repeats, n_stimuli, _ = repeats.shape
    if n_repeats < 2:
        raise ValueError(f"split-half reliability needs at least 2 repeats, got {n_repeats}")
    if n_stimuli < 3:
        raise ValueError(f"split-half reliability needs at least 3 stimuli, got {n_stimuli}")
    half_a = repeats[0::2].mean(axis=0)  # (n_stimuli, n_targets)
    half_b = repeats[1::2].mean(axis=0)  # (n_stimuli, n_targets)
    r_half = pearson_r(half_a, half_b, axis=0)  # (n_targets,)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * r_half / (1.0 + r_half)


def encoding_score(r: np.ndarray) -> float:
    """Encoding score: mean Pearson R over targets, ignoring NaN (constant targets).

    Parameters
    ----------
    r : ndarray of shape (n_targets,)
        Per-target correlations, e.g. ``EncodingResult.r``.

    Returns
    -------
    score : float
        Mean over finite targets; NaN (with a warning) if there are none.
    """
    r = np.asarray(r, dtype=np.float64).ravel()
    finite = np.isfinite(r)
    if not finite.any():
        warnings.warn(
            "encoding_score: no finite R values; returning NaN", RuntimeWarning, stacklevel=2
        )
        return float("nan")
    return float(r[finite].mean())


def roi_scores(r: np.ndarray, roi_labels: Sequence[str] | np.ndarray) -> pd.Series:
    """Mean R per ROI (NaN targets ignored).

    Parameters
    ----------
    r : ndarray of shape (n_targets,)
        Per-target correlations.
    roi_labels : sequence of shape (n_targets,)
        ROI name of each target.

    Returns
    -------
    scores : pandas.Series
        Indexed by ROI name in order of first appearance, named ``"r"``.
    """
    r = np.asarray(r, dtype=np.float64)
    labels = np.asarray(roi_labels)
    if r.ndim != 1 or labels.shape != r.shape:
        raise ValueError(
            f"roi_scores needs one ROI label per target: r has shape {r.shape}, roi_labels "
            f"has shape {labels.shape}"
        )
    frame = pd.DataFrame({"roi": labels, "r": r})
    scores = frame.groupby("roi", sort=False)["r"].mean()
    scores.name = "r"
    return scores


def best_layer_depths(r_by_layer: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """Relative depth of the best-predicting layer for each ROI.

    Parameters
    ----------
    r_by_layer : ndarray of shape (n_layers, n_rois)
        Score of each layer in each ROI (e.g. mean R per ROI).
    depths : ndarray of shape (n_layers,)
        Relative depth of each layer in [0, 1].

    Returns
    -------
    best_depths : ndarray of shape (n_rois,)
        ``depths[argmax over layers]``, ignoring NaN; ties go to the shallower (earlier) layer;
        NaN for an ROI whose scores are all NaN.
    """
    r_by_layer = np.asarray(r_by_layer, dtype=np.float64)
    depths = np.asarray(depths, dtype=np.float64)
    if r_by_layer.ndim != 2:
        raise ValueError(
            f"r_by_layer must have shape (n_layers, n_rois), got shape {r_by_layer.shape}"
        )
    if depths.shape != (r_by_layer.shape[0],):
        raise ValueError(
            f"depths must have one value per layer ({r_by_layer.shape[0]}), got shape "
            f"{depths.shape}"
        )
    all_nan = np.isnan(r_by_layer).all(axis=0)
    filled = np.where(np.isnan(r_by_layer), -np.inf, r_by_layer)
    best = depths[np.argmax(filled, axis=0)]  # (n_rois,)
    return np.where(all_nan, np.nan, best)


def spatial_score(roi_distance_from_v1: np.ndarray, best_depths: np.ndarray) -> float:
    """Spatial score: Pearson r between ROI distance from V1 and best-layer depth.

    Parameters
    ----------
    roi_distance_from_v1 : ndarray of shape (n_rois,)
        Euclidean distance of each ROI from V1 (mm), see :func:`distance_from_v1`.
    best_depths : ndarray of shape (n_rois,)
        Relative depth of each ROI's best layer, see :func:`best_layer_depths`, same ROI order.

    Returns
    -------
    score : float
        Pearson r over ROIs with finite values; NaN with a RuntimeWarning when fewer than three
        ROIs remain or either input has zero variance.
    """
    return _correlation_across(roi_distance_from_v1, best_depths, "spatial_score")


def t_max(time_course: np.ndarray, times: np.ndarray, threshold: float = 0.95) -> np.ndarray:
    """Peak time of each layer's score time course.

    Each layer's course is divided by its own maximum (NaN ignored); ``T_max`` is the mean of
    the times where the normalised course is ``>= threshold``.

    Parameters
    ----------
    time_course : ndarray of shape (n_layers, n_times)
        Score (e.g. mean R over sensors) of each layer at each time point.
    times : ndarray of shape (n_times,)
        Time of each sample (any unit; the result has the same unit).
    threshold : float, default=0.95
        Fraction of the maximum that counts as "at the peak", in (0, 1].

    Returns
    -------
    t_max_values : ndarray of shape (n_layers,)
        NaN, with one RuntimeWarning naming the layers, for a layer whose maximum is not
        positive (zero, negative or all NaN): dividing by such a maximum would flip the course
        or is undefined, so there is no meaningful peak.
    """
    time_course = np.asarray(time_course, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if time_course.ndim != 2:
        raise ValueError(
            f"time_course must have shape (n_layers, n_times), got shape {time_course.shape}"
        )
    if times.shape != (time_course.shape[1],):
        raise ValueError(
            f"times must have one value per time point ({time_course.shape[1]}), got shape "
            f"{times.shape}"
        )
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN layers
        maxima = np.nanmax(time_course, axis=1)  # (n_layers,)
    usable = maxima > 0
    if not usable.all():
        bad_layers = np.flatnonzero(~usable).tolist()
        warnings.warn(
            f"t_max: layer(s) {bad_layers} have no positive maximum; their T_max is NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    result = np.full(time_course.shape[0], np.nan)
    for layer in np.flatnonzero(usable):
        at_peak = time_course[layer] / maxima[layer] >= threshold  # NaN compares False
        result[layer] = times[at_peak].mean()
    return result


def temporal_score(depths: np.ndarray, t_max_values: np.ndarray) -> float:
    """Temporal score: Pearson r between layer depth and its ``T_max``.

    Parameters
    ----------
    depths : ndarray of shape (n_layers,)
        Relative depth of each layer.
    t_max_values : ndarray of shape (n_layers,)
        Output of :func:`t_max`, same layer order.

    Returns
    -------
    score : float
        Pearson r over layers with finite values; NaN with a RuntimeWarning when fewer than
        three layers remain or either input has zero variance.
    """
    return _correlation_across(depths, t_max_values, "temporal_score")


def distance_from_v1(centroids: pd.DataFrame, reference: str = "V1") -> pd.Series:
    """Euclidean distance (mm) of each ROI centroid from the reference ROI's centroid.

    Parameters
    ----------
    centroids : pandas.DataFrame
        One row per ROI with columns ``roi`` (unique names) and ``x``, ``y``, ``z`` (MNI mm).
    reference : str, default="V1"
        Name of the ROI distances are measured from.

    Returns
    -------
    distances : pandas.Series
        Indexed by ROI name (input order), named ``f"distance_from_{reference}_mm"``; the
        reference itself is 0.
    """
    required = ["roi", "x", "y", "z"]
    missing = [column for column in required if column not in centroids.columns]
    if missing:
        raise ValueError(
            f"centroids table lacks column(s) {missing}; it needs {required} "
            f"(has {list(centroids.columns)})"
        )
    names = centroids["roi"].astype(str)
    duplicated = sorted(set(names[names.duplicated()]))
    if duplicated:
        raise ValueError(f"centroids table lists ROI(s) more than once: {duplicated}")
    if reference not in set(names):
        raise ValueError(
            f"reference ROI {reference!r} is not in the centroids table (ROIs: "
            f"{sorted(names)}); add its centroid or pass reference= naming the earliest visual "
            "ROI you have"
        )
    coordinates = centroids[["x", "y", "z"]].to_numpy(dtype=np.float64)  # (n_rois, 3)
    origin = coordinates[np.flatnonzero(names.to_numpy() == reference)[0]]  # (3,)
    distances = np.linalg.norm(coordinates - origin, axis=1)  # (n_rois,)
    return pd.Series(distances, index=names.to_numpy(), name=f"distance_from_{reference}_mm")
