"""The rows of the long score table: one named row at a time, for encoding and every metric.

:class:`ScoreRows` builds the rows of one (subject, modality, feature kind) table;
:func:`fmri_rows` and :func:`meg_rows` add a metric's per-layer rows over the groups, its best
depths and its spatial or temporal score. Encoding and the other metrics share them, with the
row names of :class:`MetricNames`: encoding keeps its historical names (``r``,
``encoding_score``, ``best_depth``...), metric ``m`` gets ``m`` and ``<name>_m``
(``best_depth_rsa``), so readers of encoding rows see the same rows whatever else is asked.
Used by :func:`brainalign.probe.pipeline.summarise_fits`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from brainalign.probe.bootstrap import percentile_interval
from brainalign.probe.bootstrap_scores import (
    best_depth_replicates,
    bootstrap_encoding_score,
    bootstrap_spatial_score,
    bootstrap_temporal_score,
    t_max_replicates,
)
from brainalign.probe.brain_data import BrainData
from brainalign.probe.fitting import LayerFit, group_names
from brainalign.probe.metric_names import ENCODING, MetricNames
from brainalign.probe.rois import distance_from_v1
from brainalign.probe.scores import best_layer_depths, spatial_score, t_max, temporal_score

__all__ = [
    "COLUMNS",
    "ENCODING",
    "INTERVAL_COLUMNS",
    "REPLICATE_COLUMNS",
    "MetricNames",
    "Replicates",
    "ScoreRows",
    "fmri_rows",
    "group_value_rows",
    "meg_rows",
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


def window_label(window: tuple[float, float]) -> str:
    """``(0.08, 0.13)`` -> ``"80-130ms"``."""
    return f"{round(window[0] * 1000)}-{round(window[1] * 1000)}ms"


@dataclass
class ScoreRows:
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
        feature_kind: str | None = None,
        space: str | None = None,
    ) -> None:
        """One row; ``replicates`` (n_boot,) of the value give its ``ci_low``/``ci_high``.

        ``feature_kind`` overrides the table's (variance partitioning of two kinds);
        ``space`` fills the ``space`` column (variance partitioning rows only).
        """
        low = high = math.nan
        if replicates is not None:
            interval = percentile_interval(replicates, self.level)
            low, high = float(interval.low), float(interval.high)
        row = {
            "subject": self.subject,
            "modality": self.modality,
            "feature_kind": self.feature_kind if feature_kind is None else feature_kind,
            "layer": int(layer),
            "depth": float(depth),
            "group": group,
            "time": float(time),
            "metric": metric,
            "value": float(value),
            "ci_low": low,
            "ci_high": high,
        }
        if space is not None:
            row["space"] = space
        self.rows.append(row)

    def add_curve(
        self, curve: str, replicates: np.ndarray | None, *, feature_kind: str | None = None
    ) -> None:
        """Keep the resamples of one chronology curve's value (for half-time intervals).

        ``feature_kind`` overrides the table's, as in :meth:`add`.
        """
        if replicates is None:
            return
        for index, value in enumerate(np.asarray(replicates, dtype=np.float64)):
            self.curves.append(
                {
                    "subject": self.subject,
                    "modality": self.modality,
                    "feature_kind": self.feature_kind if feature_kind is None else feature_kind,
                    "curve": curve,
                    "replicate": index,
                    "value": value,
                }
            )

    def replicate_table(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.curves, columns=REPLICATE_COLUMNS)

    def table(self) -> pd.DataFrame:
        """:data:`COLUMNS` (+ intervals with a bootstrap, + ``space`` with partition rows)."""
        columns = COLUMNS + INTERVAL_COLUMNS if self.with_intervals else list(COLUMNS)
        if any("space" in row for row in self.rows):
            columns = [*columns, "space"]
        return pd.DataFrame.from_records(self.rows, columns=columns)


@dataclass(frozen=True)
class Replicates:
    """The bootstrap resamples of every layer's fit, stacked (or nothing without a bootstrap)."""

    overall_r: np.ndarray | None  # (n_boot, n_layers)
    group_r: np.ndarray | None  # (n_boot, n_layers, n_groups)

    @classmethod
    def of(cls, fits: Sequence[LayerFit]) -> Replicates:
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


#: No resamples (metrics other than encoding have no bootstrap).
NO_REPLICATES = Replicates(None, None)


def group_value_rows(
    rows: ScoreRows,
    metric: str,
    overall: float,
    per_group: np.ndarray,
    brain: BrainData,
    meg_windows: Sequence[tuple[float, float]],
    *,
    replicates: np.ndarray | None = None,
    curve: Callable[[str], str] | None = None,
    **keywords: Any,
) -> None:
    """Rows of one value per group: ``all``, each ROI, or each MEG time sample and window.

    ``per_group`` (n_groups,) is in :func:`~brainalign.probe.fitting.group_names` order; an
    MEG window's value is the mean over its time samples. ``replicates`` (n_boot, 1 + n_groups),
    the ``all`` value then each group's in every bootstrap resample, give the rows' intervals
    (a window's: the mean over its time samples in each resample); with ``curve`` (group label
    -> curve name) they are also kept as the resamples of the ``all``, ROI and window curves.
    ``keywords`` go to :meth:`ScoreRows.add` (layer, depth, feature_kind, space).
    """

    def add(value: float, resamples: np.ndarray | None, **where: Any) -> None:
        rows.add(metric, value, replicates=resamples, **where, **keywords)
        group = where.get("group", "all")
        if curve is not None and group != "time":
            rows.add_curve(curve(group), resamples, feature_kind=keywords.get("feature_kind"))

    def replicates_of(column: int | np.ndarray) -> np.ndarray | None:
        if replicates is None:
            return None
        if np.ndim(column) == 0:
            return replicates[:, column]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window stays NaN
            return np.nanmean(replicates[:, column], axis=1)

    add(overall, replicates_of(0))
    if brain.modality == "fmri":
        for index, (roi, value) in enumerate(zip(group_names(brain), per_group)):
            add(value, replicates_of(1 + index), group=roi)
        return
    times = np.asarray(brain.times, dtype=np.float64)
    for index, (t, value) in enumerate(zip(times, per_group)):
        add(value, replicates_of(1 + index), group="time", time=t)
    for window in meg_windows:
        mask = (times >= window[0]) & (times <= window[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window stays NaN
            value = float(np.nanmean(per_group[mask])) if np.any(mask) else math.nan
        window_replicates = replicates_of(1 + np.flatnonzero(mask)) if np.any(mask) else None
        add(value, window_replicates, group=window_label(window))


def fmri_rows(
    rows: ScoreRows,
    summary: dict[str, Any],
    r_by_roi: np.ndarray,
    boot: Replicates,
    depths: Mapping[int, float],
    layers: list[int],
    brain: BrainData,
    names: MetricNames = ENCODING,
) -> None:
    """Per-ROI rows, best depth per ROI and the spatial score, from (n_layers, n_rois) values."""
    roi_names = group_names(brain)
    for i, layer in enumerate(layers):
        for j, roi in enumerate(roi_names):
            replicates = boot.group(i, j)
            rows.add(
                names.layer,
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
            names.of("best_depth"),
            value,
            group=roi,
            replicates=None if boot_best is None else boot_best[:, j],
        )
        if boot.group_r is not None:  # the ROI's curve: its best layer's R
            rows.add_curve(names.curve(f"roi/{roi}"), np.nanmax(boot.group_r[:, :, j], axis=1))
    summary["roi_best_depth"] = dict(zip(roi_names, map(float, best)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN ROI stays NaN
        summary[names.roi_key] = dict(zip(roi_names, map(float, np.nanmax(r_by_roi, axis=0))))
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
    rows.add(names.of("spatial_score"), summary["spatial_score"], replicates=spatial_replicates)
    rows.add_curve(names.curve("spatial_score"), spatial_replicates)
    if gradient:
        value = summary.setdefault("spatial_score_backward_order", math.nan)
        rows.add(names.of("spatial_score_backward_order"), value)


def meg_rows(
    rows: ScoreRows,
    summary: dict[str, Any],
    courses: np.ndarray,
    boot: Replicates,
    depths: Mapping[int, float],
    layers: list[int],
    times: np.ndarray,
    meg_windows: Sequence[tuple[float, float]],
    names: MetricNames = ENCODING,
) -> None:
    """Time courses, window means, T_max per layer and the temporal score.

    ``courses`` (n_layers, n_times): mean R over channels (encoding), the decoding score of
    each time sample (decoding), or another metric with the channels at each time as the set.
    """
    times = np.asarray(times, dtype=np.float64)
    inside = {window: (times >= window[0]) & (times <= window[1]) for window in meg_windows}
    for i, layer in enumerate(layers):
        for index, (t, value) in enumerate(zip(times, courses[i])):
            rows.add(
                names.layer, value, layer=layer, depth=depths[layer], group="time", time=t,
                replicates=boot.group(i, index),
            )  # fmt: skip
        for window, mask in inside.items():
            value = float(np.nanmean(courses[i, mask])) if np.any(mask) else math.nan
            replicates = boot.group(i, np.flatnonzero(mask)) if np.any(mask) else None
            label = window_label(window)
            rows.add(
                names.layer,
                value,
                layer=layer,
                depth=depths[layer],
                group=label,
                replicates=replicates,
            )
    if boot.group_r is not None:  # each window's curve: its best layer's mean R in the window
        for window, mask in inside.items():
            if np.any(mask):
                in_window = np.nanmean(boot.group_r[:, :, mask], axis=2)  # (n_boot, n_layers)
                curve = names.curve(f"window/{window_label(window)}")
                rows.add_curve(curve, np.nanmax(in_window, axis=1))
    depth_array = np.array([depths[layer] for layer in layers], dtype=np.float64)
    peak_times = t_max(courses, times)  # (n_layers,)
    boot_peaks = None if boot.group_r is None else t_max_replicates(boot.group_r, times)
    for i, (layer, value) in enumerate(zip(layers, peak_times)):
        replicates = None if boot_peaks is None else boot_peaks[:, i]
        rows.add(names.of("t_max"), value, group=f"layer_{layer}", replicates=replicates)
    enough = len(layers) >= 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        score = float(temporal_score(depth_array, peak_times)) if enough else math.nan
        if rows.feature_kind == "gradient":  # backward order: relative depth 1 - depth
            backward = float(temporal_score(1.0 - depth_array, peak_times)) if enough else math.nan
            summary["temporal_score_backward_order"] = backward
            rows.add(names.of("temporal_score_backward_order"), backward)
    temporal_replicates = None
    if boot.group_r is not None and enough:
        temporal_replicates = bootstrap_temporal_score(boot.group_r, depth_array, times)
    summary["temporal_score"] = score
    summary["t_max"] = [float(value) for value in peak_times]
    summary["times"] = times.tolist()
    rows.add(names.of("temporal_score"), score, replicates=temporal_replicates)
    rows.add_curve(names.curve("temporal_score"), temporal_replicates)
