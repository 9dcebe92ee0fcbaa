"""Score one set of layer features against one subject's brain data.

This is step 2-3 of the probing pipeline (ridge per layer, then scores), shared by the offline
``brainalign probe`` command and the training callback. The result is the long table of
DESIGN.md (one row per layer x group x metric) plus a per-subject summary.

Groups: ``all`` (every target), one per fMRI ROI, one per MEG time sample (``time`` column set)
and one per MEG window (``80-130ms``...). Metrics: ``r`` (mean held-out Pearson R over the
group's targets), ``r_normalised`` (``r`` divided by its maximum over layers, per group) and,
when the data carry a noise ceiling, ``r_ceiling_normalised`` (extra rows, never folded into
``r``). Summary rows have ``layer = -1`` and hold ``encoding_score``, ``spatial_score``,
``temporal_score``, ``best_depth`` (per ROI) and ``t_max`` (per layer, as ``group``).

Direction ``decoding`` (brain -> features, Study C) fits one decoder per fMRI ROI (its voxels ->
the layer's features) and one per MEG time sample (all channels at that time -> the layer's
features); ``r`` is then the held-out R averaged over feature dimensions, and best depths, T_max,
spatial and temporal scores follow from those per-ROI and per-time values as in encoding.
Noise-ceiling rows are written for encoding only.

Gradient features (Study B) also get ``spatial_score_backward_order`` and
``temporal_score_backward_order``: the same scores with layers ordered as the backward pass
computes them (last layer first), i.e. with relative depth ``1 - depth``. A positive value there
means that gradients follow the brain's hierarchy in backward order (they invert it in forward
order); it is the negation of the forward-order score, reported so tables can be read either way.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainalign.probe.brain_data import BrainData
from brainalign.probe.ridge import DEFAULT_ALPHAS, fit_mapping
from brainalign.probe.rois import distance_from_v1
from brainalign.probe.scores import best_layer_depths, spatial_score, t_max, temporal_score

#: MEG windows of Study A's chronology (seconds).
DEFAULT_MEG_WINDOWS: tuple[tuple[float, float], ...] = ((0.08, 0.13), (0.13, 0.18), (0.5, 0.55))

COLUMNS = [
    "subject",
    "modality",
    "feature_kind",
    "layer",
    "depth",
    "group",
    "time",
    "metric",
    "value",
]


@dataclass
class EncodingConfig:
    """How features are mapped to brain data (see :func:`brainalign.probe.ridge.fit_encoding`).

    Parameters
    ----------
    alphas : sequence of float
        Ridge penalties (10 log-spaced values 1e0..1e8 by default, as in Study A).
    n_folds : int
        Outer folds for held-out scores.
    inner : "loo" or int
        Per-target alpha selection inside each training part: efficient leave-one-out
        (Study A's RidgeCV) or inner K-fold.
    backend : {"auto", "numpy", "torch", "torch_cuda"}
        "auto" uses ``torch_cuda`` when a GPU is there.
    target_batch_size : int, optional
        Targets fitted at once (bounds memory).
    direction : {"encoding", "decoding"}
        model -> brain (default) or brain -> model (Study C).
    seed : int
    """

    alphas: list[float] = field(default_factory=lambda: [float(a) for a in DEFAULT_ALPHAS])
    n_folds: int = 5
    inner: Literal["loo"] | int = "loo"
    backend: Literal["auto", "numpy", "torch", "torch_cuda"] = "auto"
    target_batch_size: int | None = None
    direction: Literal["encoding", "decoding"] = "encoding"
    seed: int = 0


@dataclass
class ProbeScores:
    """Scores of one feature kind against one subject and modality.

    Attributes
    ----------
    table : DataFrame
        Long format with :data:`COLUMNS`.
    summary : dict
        ``encoding_score``, ``spatial_score`` / ``temporal_score`` (NaN when not computable),
        ``best_layer`` and per-ROI or per-layer details.
    """

    table: pd.DataFrame
    summary: dict[str, Any]


def window_label(window: tuple[float, float]) -> str:
    """``(0.08, 0.13)`` -> ``"80-130ms"``."""
    return f"{round(window[0] * 1000)}-{round(window[1] * 1000)}ms"


def _ceiling_fraction(noise_ceiling: np.ndarray) -> np.ndarray:
    """Noise ceiling as a fraction of explainable variance (percent values are divided by 100)."""
    ceiling = np.asarray(noise_ceiling, dtype=np.float64).reshape(-1)
    if np.nanmax(ceiling) > 1.0:
        ceiling = ceiling / 100.0
    return np.where(ceiling > 0, ceiling, np.nan)


def score_layers(
    features: Mapping[int, np.ndarray],
    depths: Mapping[int, float],
    brain: BrainData,
    *,
    config: EncodingConfig | None = None,
    feature_kind: str = "activation",
    meg_windows: Sequence[tuple[float, float]] = DEFAULT_MEG_WINDOWS,
    progress: bool = False,
    stimulus_ids: Sequence[str] | None = None,
) -> ProbeScores:
    """Fit a ridge per layer and compute every score of DESIGN.md for one subject.

    Parameters
    ----------
    features : mapping of int to ndarray of shape (n_stimuli, n_features)
        Layer index -> pooled features, rows in ``brain.stimulus_ids`` order.
    depths : mapping of int to float
        Layer index -> relative depth in [0, 1].
    brain : BrainData
        Already aligned to the stimuli (see :meth:`BrainData.align`).
    config : EncodingConfig
    feature_kind : str
        ``activation`` or ``gradient``; copied into the table.
    meg_windows : sequence of (start, end) in seconds
    progress : bool
        Show a progress bar over layers.
    stimulus_ids : sequence of str, optional
        Ids of the feature rows; when given they must equal ``brain.stimulus_ids`` (a guard
        against features extracted in another order).

    Returns
    -------
    ProbeScores
    """
    config = config or EncodingConfig()
    layers = sorted(features)
    if not layers:
        raise ValueError("no layers to score: features is empty")
    missing_depth = [layer for layer in layers if layer not in depths]
    if missing_depth:
        raise ValueError(f"no relative depth given for layers {missing_depth}")
    if stimulus_ids is not None and list(stimulus_ids) != list(brain.stimulus_ids):
        raise ValueError(
            f"feature rows follow another stimulus order than {brain.subject}/{brain.modality}; "
            "extract features from the StimulusSet returned by BrainData.align"
        )
    targets = brain.targets_matrix()  # (n_stimuli, n_targets)
    for layer in layers:
        if features[layer].shape[0] != brain.n_stimuli:
            raise ValueError(
                f"layer {layer} has features for {features[layer].shape[0]} stimuli but "
                f"{brain.subject}/{brain.modality} has {brain.n_stimuli}; "
                "align brain data and stimuli first"
            )
    ceiling = None if brain.noise_ceiling is None else _ceiling_fraction(brain.noise_ceiling)

    rows: list[tuple] = []
    per_layer_r: dict[int, np.ndarray] = {}
    iterator = tqdm(layers, desc=f"ridge {brain.subject}/{brain.modality}", disable=not progress)
    for layer in iterator:
        result = fit_mapping(
            features[layer],
            targets,
            direction=config.direction,
            alphas=np.asarray(config.alphas, dtype=np.float64),
            n_folds=config.n_folds,
            inner=config.inner,
            backend=config.backend,
            target_batch_size=config.target_batch_size,
            seed=config.seed,
        )
        per_layer_r[layer] = np.asarray(result.r, dtype=np.float64)

    base = (brain.subject, brain.modality, feature_kind)
    summary: dict[str, Any] = {
        "subject": brain.subject,
        "modality": brain.modality,
        "feature_kind": feature_kind,
        "direction": config.direction,
        "n_stimuli": brain.n_stimuli,
        "n_targets": int(targets.shape[1]),
        "layers": layers,
        "depths": [float(depths[layer]) for layer in layers],
    }
    layer_means = {layer: float(np.nanmean(r)) for layer, r in per_layer_r.items()}
    for layer in layers:
        rows.append((*base, layer, depths[layer], "all", math.nan, "r", layer_means[layer]))
        if ceiling is not None and config.direction == "encoding":
            value = float(np.nanmean(per_layer_r[layer] / np.sqrt(ceiling)))
            rows.append(
                (*base, layer, depths[layer], "all", math.nan, "r_ceiling_normalised", value)
            )
    best_layer = max(layers, key=lambda layer: layer_means[layer])
    summary["encoding_score"] = layer_means[best_layer]
    summary["best_layer"] = best_layer
    summary["best_depth"] = float(depths[best_layer])
    summary["encoding_by_layer"] = [layer_means[layer] for layer in layers]

    if brain.modality == "fmri":
        roi_of_target = brain.targets["roi"].astype(str).to_numpy()
        roi_names = list(dict.fromkeys(roi_of_target))
        if config.direction == "encoding":
            r_by_roi = _roi_means(per_layer_r, layers, roi_of_target, roi_names)
        else:
            r_by_roi = _decode_per_group(
                features, layers, [targets[:, roi_of_target == roi] for roi in roi_names], config
            )
        _fmri_rows(rows, summary, base, r_by_roi, roi_names, depths, layers, brain.rois)
        if ceiling is not None and config.direction == "encoding":
            _ceiling_rows(rows, base, per_layer_r, depths, layers, roi_of_target, ceiling)
    else:
        if config.direction == "encoding":
            courses = np.stack(
                [np.nanmean(brain.unflatten(per_layer_r[layer]), axis=0) for layer in layers]
            )  # (n_layers, n_times): mean R over channels
        else:  # one decoder per time sample, from all channels at that time
            samples = [brain.data[:, :, index] for index in range(brain.data.shape[2])]
            courses = _decode_per_group(features, layers, samples, config, progress)
        _meg_rows(rows, summary, base, courses, depths, layers, brain.times, meg_windows)

    table = pd.DataFrame.from_records(rows, columns=COLUMNS)
    table = _add_normalised(table)
    return ProbeScores(table=table, summary=summary)


def _roi_means(
    per_layer_r: Mapping[int, np.ndarray],
    layers: list[int],
    roi_of_target: np.ndarray,
    roi_names: list[str],
) -> np.ndarray:
    """Mean R over each ROI's targets, shape (n_layers, n_rois)."""
    r_by_roi = np.full((len(layers), len(roi_names)), np.nan)
    for i, layer in enumerate(layers):
        for j, roi in enumerate(roi_names):
            selected = roi_of_target == roi
            if np.any(selected):
                r_by_roi[i, j] = float(np.nanmean(per_layer_r[layer][selected]))
    return r_by_roi


def _decode_per_group(
    features: Mapping[int, np.ndarray],
    layers: list[int],
    groups: Sequence[np.ndarray],
    config: EncodingConfig,
    progress: bool = False,
) -> np.ndarray:
    """Decoding score of every layer from every group of brain targets.

    Parameters
    ----------
    groups : sequence of ndarray of shape (n_stimuli, n_group_targets)
        Predictors of each decoder: one ROI's voxels, or all MEG channels at one time.

    Returns
    -------
    ndarray of shape (n_layers, n_groups)
        Held-out R of brain -> features, averaged over the feature dimensions.
    """
    scores = np.full((len(layers), len(groups)), np.nan)
    iterator = tqdm(
        [(i, j) for i in range(len(layers)) for j in range(len(groups))],
        desc="decoders",
        disable=not progress,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant feature dimensions: NaN
        for i, j in iterator:
            result = fit_mapping(
                features[layers[i]],
                groups[j],
                direction="decoding",
                alphas=np.asarray(config.alphas, dtype=np.float64),
                n_folds=config.n_folds,
                inner=config.inner,
                backend=config.backend,
                target_batch_size=config.target_batch_size,
                seed=config.seed,
            )
            scores[i, j] = float(np.nanmean(result.r))
    return scores


def _ceiling_rows(
    rows: list[tuple],
    base: tuple,
    per_layer_r: Mapping[int, np.ndarray],
    depths: Mapping[int, float],
    layers: list[int],
    roi_of_target: np.ndarray,
    ceiling: np.ndarray,
) -> None:
    """``r_ceiling_normalised`` per layer and ROI (extra rows; encoding direction only)."""
    for layer in layers:
        for roi in dict.fromkeys(roi_of_target):
            selected = roi_of_target == roi
            value = float(np.nanmean(per_layer_r[layer][selected] / np.sqrt(ceiling[selected])))
            rows.append((*base, layer, depths[layer], roi, math.nan, "r_ceiling_normalised", value))


def _fmri_rows(
    rows: list[tuple],
    summary: dict[str, Any],
    base: tuple,
    r_by_roi: np.ndarray,
    roi_names: list[str],
    depths: Mapping[int, float],
    layers: list[int],
    rois: pd.DataFrame | None,
) -> None:
    """Per-ROI rows, best depth per ROI and the spatial score, from (n_layers, n_rois) R."""
    for i, layer in enumerate(layers):
        for j, roi in enumerate(roi_names):
            rows.append((*base, layer, depths[layer], roi, math.nan, "r", r_by_roi[i, j]))
    depth_array = np.array([depths[layer] for layer in layers], dtype=np.float64)
    best = best_layer_depths(r_by_roi, depth_array)  # (n_rois,)
    for roi, value in zip(roi_names, best):
        rows.append((*base, -1, math.nan, roi, math.nan, "best_depth", float(value)))
    summary["roi_best_depth"] = dict(zip(roi_names, map(float, best)))
    summary["roi_encoding"] = dict(zip(roi_names, map(float, np.nanmax(r_by_roi, axis=0))))
    summary["spatial_score"] = math.nan
    if rois is None or rois.empty or "V1" not in set(rois["roi"].astype(str)):
        summary["spatial_score_note"] = "not computed: the ROI table has no V1"
    elif len(roi_names) < 3:
        summary["spatial_score_note"] = "not computed: fewer than 3 ROIs"
    else:
        distance = distance_from_v1(rois).reindex(roi_names).to_numpy(dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            summary["spatial_score"] = float(spatial_score(distance, best))
            if base[2] == "gradient":  # backward order: relative depth 1 - depth
                backward = best_layer_depths(r_by_roi, 1.0 - depth_array)
                summary["spatial_score_backward_order"] = float(spatial_score(distance, backward))
        summary["roi_distance_from_v1"] = dict(zip(roi_names, map(float, distance)))
    rows.append((*base, -1, math.nan, "all", math.nan, "spatial_score", summary["spatial_score"]))
    if base[2] == "gradient":
        value = summary.setdefault("spatial_score_backward_order", math.nan)
        rows.append((*base, -1, math.nan, "all", math.nan, "spatial_score_backward_order", value))
    rows.append((*base, -1, math.nan, "all", math.nan, "encoding_score", summary["encoding_score"]))


def _meg_rows(
    rows: list[tuple],
    summary: dict[str, Any],
    base: tuple,
    courses: np.ndarray,
    depths: Mapping[int, float],
    layers: list[int],
    times: np.ndarray,
    meg_windows: Sequence[tuple[float, float]],
) -> None:
    """Time courses, window means, T_max per layer and the temporal score.

    ``courses`` (n_layers, n_times): mean R over channels (encoding) or the decoding score of
    each time sample (decoding).
    """
    times = np.asarray(times, dtype=np.float64)
    for i, layer in enumerate(layers):
        for t, value in zip(times, courses[i]):
            rows.append((*base, layer, depths[layer], "time", float(t), "r", float(value)))
        for window in meg_windows:
            inside = (times >= window[0]) & (times <= window[1])
            value = float(np.nanmean(courses[i, inside])) if np.any(inside) else math.nan
            rows.append((*base, layer, depths[layer], window_label(window), math.nan, "r", value))
    depth_array = np.array([depths[layer] for layer in layers], dtype=np.float64)
    peak_times = t_max(courses, times)  # (n_layers,)
    for layer, value in zip(layers, peak_times):
        rows.append((*base, -1, math.nan, f"layer_{layer}", math.nan, "t_max", float(value)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        score = float(temporal_score(depth_array, peak_times)) if len(layers) >= 3 else math.nan
        if base[2] == "gradient":  # backward order: relative depth 1 - depth
            backward = (
                float(temporal_score(1.0 - depth_array, peak_times))
                if len(layers) >= 3
                else math.nan
            )
            summary["temporal_score_backward_order"] = backward
            rows.append(
                (*base, -1, math.nan, "all", math.nan, "temporal_score_backward_order", backward)
            )
    summary["temporal_score"] = score
    summary["t_max"] = [float(value) for value in peak_times]
    summary["times"] = times.tolist()
    rows.append((*base, -1, math.nan, "all", math.nan, "temporal_score", score))
    rows.append((*base, -1, math.nan, "all", math.nan, "encoding_score", summary["encoding_score"]))


def _add_normalised(table: pd.DataFrame) -> pd.DataFrame:
    """Append ``r_normalised`` rows: ``r`` divided by its maximum over layers, per group/time."""
    r_rows = table[(table["metric"] == "r") & (table["layer"] >= 0)]
    if r_rows.empty:
        return table
    keys = ["subject", "modality", "feature_kind", "group", "time"]
    maximum = r_rows.groupby(keys, dropna=False)["value"].transform("max")
    normalised = r_rows.assign(metric="r_normalised", value=r_rows["value"] / maximum)
    return pd.concat([table, normalised], ignore_index=True)
