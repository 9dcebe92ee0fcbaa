"""Step 3 of a probe: per-layer fits of one subject -> the long score table and a summary.

:func:`score_layers` fits every layer (:func:`brainalign.probe.fitting.fit_layer`) and
summarises; :func:`summarise_fits` does the second half for fits made elsewhere (the training
callback fits a share of the layers on each DDP rank). Every score comes from
:mod:`brainalign.probe.scores`: encoding scores, best depths, spatial and temporal scores,
``T_max``, normalised R.

Groups: ``all`` (every target), one per fMRI ROI, one per MEG time sample (``time`` column set)
and one per MEG window (``80-130ms``...). Metrics: ``r`` (mean held-out Pearson R over the
group's targets; for decoding, the held-out R of that group's decoder averaged over feature
dimensions), ``r_normalised`` (``r`` divided by its maximum over layers, per group; NaN where
that maximum is not positive) and, when the data carry a noise ceiling, ``r_ceiling_normalised``
(extra rows, never folded into ``r``; encoding only). Summary rows have ``layer = -1`` and hold
``encoding_score``, ``spatial_score``, ``temporal_score``, ``best_depth`` (per ROI) and
``t_max`` (per layer, as ``group``).

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
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainalign.probe.bootstrap import percentile_interval
from brainalign.probe.bootstrap_scores import (
    best_depth_replicates,
    bootstrap_encoding_score,
    bootstrap_spatial_score,
    bootstrap_temporal_score,
    t_max_replicates,
)
from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import DEFAULT_MEG_WINDOWS, EncodingConfig
from brainalign.probe.fitting import LayerFit, fit_layer, group_names
from brainalign.probe.rois import distance_from_v1
from brainalign.probe.scores import (
    best_layer_depths,
    normalised_r,
    spatial_score,
    t_max,
    temporal_score,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_MEG_WINDOWS",
    "INTERVAL_COLUMNS",
    "EncodingConfig",
    "ProbeScores",
    "score_layers",
    "summarise_fits",
    "window_label",
]

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

#: Added to :data:`COLUMNS` when the probe has a bootstrap: the percentile interval of a row.
INTERVAL_COLUMNS = ["ci_low", "ci_high"]

#: Columns of the bootstrap replicates of chronology curves (``ProbeScores.replicates``).
REPLICATE_COLUMNS = ["subject", "modality", "feature_kind", "curve", "replicate", "value"]


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
    replicates : DataFrame
        With a bootstrap: the value of every chronology curve (``encoding``,
        ``spatial_score``, ``temporal_score``, ``roi/<ROI>``, ``window/<label>``) in every
        resample (:data:`REPLICATE_COLUMNS`); empty otherwise.
    """

    table: pd.DataFrame
    summary: dict[str, Any]
    replicates: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=REPLICATE_COLUMNS)
    )


def window_label(window: tuple[float, float]) -> str:
    """``(0.08, 0.13)`` -> ``"80-130ms"``."""
    return f"{round(window[0] * 1000)}-{round(window[1] * 1000)}ms"


def _ceiling_fraction(noise_ceiling: np.ndarray) -> np.ndarray:
    """Noise ceiling as a fraction of explainable variance (percent values are divided by 100)."""
    ceiling = np.asarray(noise_ceiling, dtype=np.float64).reshape(-1)
    if np.nanmax(ceiling) > 1.0:
        ceiling = ceiling / 100.0
    return np.where(ceiling > 0, ceiling, np.nan)


@dataclass
class _Rows:
    """Builds the rows of one (subject, modality, feature kind) table, one named row at a time."""

    subject: str
    modality: str
    feature_kind: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    level: float = 0.95
    with_intervals: bool = False
    curves: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        metric: str,
        value: float,
        *,
        layer: int = -1,
        depth: float = math.nan,
        group: str = "all",
        time: float = math.nan,
        replicates: np.ndarray | None = None,
    ) -> None:
        """One row; ``replicates`` (n_boot,) of the value give its ``ci_low``/``ci_high``."""
        low = high = math.nan
        if replicates is not None:
            interval = percentile_interval(replicates, self.level)
            low, high = float(interval.low), float(interval.high)
        self.rows.append(
            {
                "subject": self.subject,
                "modality": self.modality,
                "feature_kind": self.feature_kind,
                "layer": int(layer),
                "depth": float(depth),
                "group": group,
                "time": float(time),
                "metric": metric,
                "value": float(value),
                "ci_low": low,
                "ci_high": high,
            }
        )

    def add_curve(self, curve: str, replicates: np.ndarray | None) -> None:
        """Keep the resamples of one chronology curve's value (for half-time intervals)."""
        if replicates is None:
            return
        for index, value in enumerate(np.asarray(replicates, dtype=np.float64)):
            self.curves.append(
                {
                    "subject": self.subject,
                    "modality": self.modality,
                    "feature_kind": self.feature_kind,
                    "curve": curve,
                    "replicate": index,
                    "value": value,
                }
            )

    def replicate_table(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.curves, columns=REPLICATE_COLUMNS)

    def table(self) -> pd.DataFrame:
        columns = COLUMNS + INTERVAL_COLUMNS if self.with_intervals else COLUMNS
        return pd.DataFrame.from_records(self.rows, columns=columns)


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
    if stimulus_ids is not None and list(stimulus_ids) != list(brain.stimulus_ids):
        raise ValueError(
            f"feature rows follow another stimulus order than {brain.subject}/{brain.modality}; "
            "extract features from the StimulusSet returned by BrainData.align"
        )
    _check_depths(layers, depths)
    iterator = tqdm(layers, desc=f"ridge {brain.subject}/{brain.modality}", disable=not progress)
    fits = [fit_layer(layer, features[layer], brain, config) for layer in iterator]
    return summarise_fits(
        fits, depths, brain, config=config, feature_kind=feature_kind, meg_windows=meg_windows
    )


def _check_depths(layers: Sequence[int], depths: Mapping[int, float]) -> None:
    missing = [layer for layer in layers if layer not in depths]
    if missing:
        raise ValueError(f"no relative depth given for layers {missing}")


def summarise_fits(
    fits: Sequence[LayerFit],
    depths: Mapping[int, float],
    brain: BrainData,
    *,
    config: EncodingConfig,
    feature_kind: str = "activation",
    meg_windows: Sequence[tuple[float, float]] = DEFAULT_MEG_WINDOWS,
    level: float = 0.95,
) -> ProbeScores:
    """The score table and summary of one subject from its per-layer fits.

    Parameters
    ----------
    fits : sequence of LayerFit
        One per layer, any order (sorted by layer here). When they carry bootstrap
        resamples, every row gets ``ci_low``/``ci_high`` and the chronology curves' resamples
        are kept in ``replicates``.
    depths : mapping of int to float
    brain : BrainData
    config : EncodingConfig
        Its ``direction`` says how the fits were made.
    feature_kind : str
    meg_windows : sequence of (start, end) in seconds
    level : float
        Coverage of the bootstrap intervals.
    """
    fits = sorted(fits, key=lambda fit: fit.layer)
    layers = [fit.layer for fit in fits]
    if not layers:
        raise ValueError("no layers to score: fits is empty")
    _check_depths(layers, depths)
    boot = _Replicates.of(fits)
    rows = _Rows(
        brain.subject,
        brain.modality,
        feature_kind,
        level=level,
        with_intervals=boot.overall_r is not None,
    )
    overall = {fit.layer: fit.overall_r for fit in fits}
    best_layer = max(layers, key=lambda layer: overall[layer])
    summary: dict[str, Any] = {
        "subject": brain.subject,
        "modality": brain.modality,
        "feature_kind": feature_kind,
        "direction": config.direction,
        "n_stimuli": brain.n_stimuli,
        "n_targets": int(brain.n_targets),
        "layers": layers,
        "depths": [float(depths[layer]) for layer in layers],
        "encoding_score": overall[best_layer],
        "best_layer": best_layer,
        "best_depth": float(depths[best_layer]),
        "encoding_by_layer": [overall[layer] for layer in layers],
    }
    ceiling = None
    if brain.noise_ceiling is not None and config.direction == "encoding":
        ceiling = _ceiling_fraction(brain.noise_ceiling)
    for index, fit in enumerate(fits):
        rows.add(
            "r",
            overall[fit.layer],
            layer=fit.layer,
            depth=depths[fit.layer],
            replicates=boot.overall(index),
        )
        if ceiling is not None:
            value = float(np.nanmean(fit.target_r / np.sqrt(ceiling)))
            rows.add("r_ceiling_normalised", value, layer=fit.layer, depth=depths[fit.layer])
    by_group = np.stack([fit.group_r for fit in fits])  # (n_layers, n_groups)
    if brain.modality == "fmri":
        _fmri_rows(rows, summary, by_group, boot, depths, layers, brain)
        if ceiling is not None:
            _ceiling_rows(rows, fits, depths, brain, ceiling)
    else:
        _meg_rows(rows, summary, by_group, boot, depths, layers, brain.times, meg_windows)
    encoding_replicates = boot.encoding_score()
    rows.add("encoding_score", summary["encoding_score"], replicates=encoding_replicates)
    rows.add_curve("encoding", encoding_replicates)
    return ProbeScores(
        table=_add_normalised(rows.table()), summary=summary, replicates=rows.replicate_table()
    )


@dataclass(frozen=True)
class _Replicates:
    """The bootstrap resamples of every layer's fit, stacked (or nothing without a bootstrap)."""

    overall_r: np.ndarray | None  # (n_boot, n_layers)
    group_r: np.ndarray | None  # (n_boot, n_layers, n_groups)

    @classmethod
    def of(cls, fits: Sequence[LayerFit]) -> _Replicates:
        if any(fit.boot_overall_r is None or fit.boot_group_r is None for fit in fits):
            return cls(None, None)
        overall = np.stack([fit.boot_overall_r for fit in fits], axis=1)
        return cls(overall, np.stack([fit.boot_group_r for fit in fits], axis=1))

    def overall(self, layer_index: int) -> np.ndarray | None:
        return None if self.overall_r is None else self.overall_r[:, layer_index]

    def group(self, layer_index: int, group_index: int | np.ndarray) -> np.ndarray | None:
        if self.group_r is None:
            return None
        values = self.group_r[:, layer_index, group_index]
        return values if np.ndim(group_index) == 0 else np.nanmean(values, axis=-1)

    def encoding_score(self) -> np.ndarray | None:
        if self.overall_r is None:
            return None
        return bootstrap_encoding_score(self.overall_r)


def _ceiling_rows(
    rows: _Rows,
    fits: Sequence[LayerFit],
    depths: Mapping[int, float],
    brain: BrainData,
    ceiling: np.ndarray,
) -> None:
    """``r_ceiling_normalised`` per layer and ROI (extra rows; encoding direction only)."""
    roi_of_target = brain.targets["roi"].astype(str).to_numpy()
    for fit in fits:
        for roi in group_names(brain):
            selected = roi_of_target == roi
            value = float(np.nanmean(fit.target_r[selected] / np.sqrt(ceiling[selected])))
            rows.add(
                "r_ceiling_normalised",
                value,
                layer=fit.layer,
                depth=depths[fit.layer],
                group=roi,
            )


def _fmri_rows(
    rows: _Rows,
    summary: dict[str, Any],
    r_by_roi: np.ndarray,
    boot: _Replicates,
    depths: Mapping[int, float],
    layers: list[int],
    brain: BrainData,
) -> None:
    """Per-ROI rows, best depth per ROI and the spatial score, from (n_layers, n_rois) R."""
    roi_names = group_names(brain)
    for i, layer in enumerate(layers):
        for j, roi in enumerate(roi_names):
            replicates = boot.group(i, j)
            rows.add(
                "r",
                r_by_roi[i, j],
                layer=layer,
                depth=depths[layer],
                group=roi,
                replicates=replicates,
            )
    depth_array = np.array([depths[layer] for layer in layers], dtype=np.float64)
    best = best_layer_depths(r_by_roi, depth_array)  # (n_rois,)
    boot_best = None if boot.group_r is None else best_depth_replicates(boot.group_r, depth_array)
    for j, (roi, value) in enumerate(zip(roi_names, best)):
        rows.add(
            "best_depth",
            value,
            group=roi,
            replicates=None if boot_best is None else boot_best[:, j],
        )
        if boot.group_r is not None:  # the ROI's curve: its best layer's R
            rows.add_curve(f"roi/{roi}", np.nanmax(boot.group_r[:, :, j], axis=1))
    summary["roi_best_depth"] = dict(zip(roi_names, map(float, best)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN ROI stays NaN
        summary["roi_encoding"] = dict(zip(roi_names, map(float, np.nanmax(r_by_roi, axis=0))))
    summary["spatial_score"] = math.nan
    gradient = rows.feature_kind == "gradient"
    rois = brain.rois
    spatial_replicates = None
    if rois is None or rois.empty or "V1" not in set(rois["roi"].astype(str)):
        summary["spatial_score_note"] = "not computed: the ROI table has no V1"
    elif len(roi_names) < 3:
        summary["spatial_score_note"] = "not computed: fewer than 3 ROIs"
    else:
        distance = distance_from_v1(rois).reindex(roi_names).to_numpy(dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            summary["spatial_score"] = float(spatial_score(distance, best))
            if gradient:  # backward order: relative depth 1 - depth
                backward = best_layer_depths(r_by_roi, 1.0 - depth_array)
                summary["spatial_score_backward_order"] = float(spatial_score(distance, backward))
        if boot.group_r is not None:
            spatial_replicates = bootstrap_spatial_score(boot.group_r, depth_array, distance)
        summary["roi_distance_from_v1"] = dict(zip(roi_names, map(float, distance)))
    rows.add("spatial_score", summary["spatial_score"], replicates=spatial_replicates)
    rows.add_curve("spatial_score", spatial_replicates)
    if gradient:
        value = summary.setdefault("spatial_score_backward_order", math.nan)
        rows.add("spatial_score_backward_order", value)


def _meg_rows(
    rows: _Rows,
    summary: dict[str, Any],
    courses: np.ndarray,
    boot: _Replicates,
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
    inside = {window: (times >= window[0]) & (times <= window[1]) for window in meg_windows}
    for i, layer in enumerate(layers):
        for index, (t, value) in enumerate(zip(times, courses[i])):
            rows.add(
                "r", value, layer=layer, depth=depths[layer], group="time", time=t,
                replicates=boot.group(i, index),
            )  # fmt: skip
        for window, mask in inside.items():
            value = float(np.nanmean(courses[i, mask])) if np.any(mask) else math.nan
            replicates = boot.group(i, np.flatnonzero(mask)) if np.any(mask) else None
            label = window_label(window)
            rows.add(
                "r", value, layer=layer, depth=depths[layer], group=label, replicates=replicates
            )
    if boot.group_r is not None:  # each window's curve: its best layer's mean R in the window
        for window, mask in inside.items():
            if np.any(mask):
                in_window = np.nanmean(boot.group_r[:, :, mask], axis=2)  # (n_boot, n_layers)
                rows.add_curve(f"window/{window_label(window)}", np.nanmax(in_window, axis=1))
    depth_array = np.array([depths[layer] for layer in layers], dtype=np.float64)
    peak_times = t_max(courses, times)  # (n_layers,)
    boot_peaks = None if boot.group_r is None else t_max_replicates(boot.group_r, times)
    for i, (layer, value) in enumerate(zip(layers, peak_times)):
        replicates = None if boot_peaks is None else boot_peaks[:, i]
        rows.add("t_max", value, group=f"layer_{layer}", replicates=replicates)
    enough = len(layers) >= 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        score = float(temporal_score(depth_array, peak_times)) if enough else math.nan
        if rows.feature_kind == "gradient":  # backward order: relative depth 1 - depth
            backward = float(temporal_score(1.0 - depth_array, peak_times)) if enough else math.nan
            summary["temporal_score_backward_order"] = backward
            rows.add("temporal_score_backward_order", backward)
    temporal_replicates = None
    if boot.group_r is not None and enough:
        temporal_replicates = bootstrap_temporal_score(boot.group_r, depth_array, times)
    summary["temporal_score"] = score
    summary["t_max"] = [float(value) for value in peak_times]
    summary["times"] = times.tolist()
    rows.add("temporal_score", score, replicates=temporal_replicates)
    rows.add_curve("temporal_score", temporal_replicates)


def _add_normalised(table: pd.DataFrame) -> pd.DataFrame:
    """Append ``r_normalised`` rows: ``r`` divided by its maximum over layers, per group/time.

    Computed with :func:`brainalign.probe.scores.normalised_r` (NaN where the maximum is not
    positive: a ratio to a negative best score means nothing).
    """
    r_rows = table[(table["metric"] == "r") & (table["layer"] >= 0)]
    if r_rows.empty:
        return table
    keys = ["subject", "modality", "feature_kind", "group", "time"]
    normalised = r_rows.copy()
    normalised["metric"] = "r_normalised"
    if "ci_low" in normalised:  # intervals are those of r, not of the ratio
        normalised[INTERVAL_COLUMNS] = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # reported as NaN rows
        normalised["value"] = r_rows.groupby(keys, dropna=False)["value"].transform(
            lambda values: normalised_r(values.to_numpy())
        )
    return pd.concat([table, normalised], ignore_index=True)
