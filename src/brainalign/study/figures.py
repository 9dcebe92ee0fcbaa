"""Figures of a study report, in the style of Study A.

- :func:`score_by_factor`: each final score against one factor's levels, one line per level of
  another factor, the bootstrap interval as a band;
- :func:`score_by_value`: the same against a numeric factor's values on a log axis (model
  parameters, context length), every subject's points, and the trend test in each title;
- :func:`curves_by_level`: chronology curves of every run on a log axis of training fraction,
  coloured by one factor's level;
- :func:`half_time_scatter`: ROI half time against distance from V1 and each ROI property, with
  Pearson r and p;
- :func:`level_heatmap`: final score over two factors' levels.

Every function returns a matplotlib Figure (the Agg backend; nothing is shown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.stats
from matplotlib.figure import Figure

__all__ = [
    "curves_by_level",
    "half_time_scatter",
    "level_heatmap",
    "score_by_factor",
    "score_by_value",
]


def _levels(frame: pd.DataFrame, factor: str) -> list[str]:
    return list(dict.fromkeys(frame[factor].astype(str)))


def score_by_factor(
    final: pd.DataFrame, factor: str, curves: Sequence[str], *, lines: str | None = None
) -> Figure:
    """Final scores against the levels of ``factor``; one line per level of ``lines``.

    Parameters
    ----------
    final : DataFrame
        ``summarise_final`` rows: factor columns, subject, curve, value, ci_low, ci_high.
    factor : str
    curves : sequence of str
        One panel each (e.g. encoding, spatial_score, temporal_score).
    lines : str, optional
        Another factor drawn as separate lines.
    """
    figure, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    levels = _levels(final, factor)
    positions = np.arange(len(levels))
    for axis, curve in zip(axes[0], curves):
        rows = final[final["curve"] == curve]
        groups = [("all", rows)] if lines is None else list(rows.groupby(lines, sort=False))
        for label, group in groups:
            means = group.groupby(group[factor].astype(str))[["value", "ci_low", "ci_high"]].mean()
            means = means.reindex(levels)
            axis.plot(
                positions, means["value"], marker="o", label=f"{lines}={label}" if lines else None
            )
            if means[["ci_low", "ci_high"]].notna().all().all():
                axis.fill_between(positions, means["ci_low"], means["ci_high"], alpha=0.2)
        axis.set_xticks(positions, levels)
        axis.set_xlabel(factor)
        axis.set_title(curve)
        axis.axhline(0.0, color="grey", linewidth=0.5)
        if lines is not None:
            axis.legend(fontsize=7)
    axes[0][0].set_ylabel("final value (95% CI)")
    figure.tight_layout()
    return figure


def score_by_value(
    final: pd.DataFrame,
    factor: str,
    values: Mapping[str, float],
    curves: Sequence[str],
    *,
    label: str,
    lines: str | None = None,
    titles: Mapping[str, str] | None = None,
) -> Figure:
    """Final scores against the numbers of ``factor``'s levels, on a log axis.

    Parameters
    ----------
    final : DataFrame
        ``summarise_final`` rows: factor columns, subject, curve, value, ci_low, ci_high.
    factor : str
    values : dict of level to float
        The positive number of each level (:class:`brainalign.study.compare.NumericLevels`).
    curves : sequence of str
        One panel each.
    label : str
        The x axis (e.g. ``parameters``, ``context words + 1``).
    lines : str, optional
        Another factor drawn as separate lines (the mean over subjects of each level).
    titles : dict of curve to str, optional
        The trend test of each panel (slope and p), shown under the curve's name.
    """
    figure, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.8), squeeze=False)
    for axis, curve in zip(axes[0], curves):
        rows = final[final["curve"] == curve]
        rows = rows.assign(level_value=rows[factor].astype(str).map(values)).dropna(
            subset=["level_value"]
        )
        axis.scatter(rows["level_value"], rows["value"], s=10, color="grey", alpha=0.5)
        groups = [("all", rows)] if lines is None else list(rows.groupby(lines, sort=False))
        for name, group in groups:
            means = group.groupby("level_value")[["value", "ci_low", "ci_high"]].mean()
            axis.plot(
                means.index,
                means["value"],
                marker="o",
                label=f"{lines}={name}" if lines else "mean over subjects",
            )
            if means[["ci_low", "ci_high"]].notna().all().all():
                axis.fill_between(means.index, means["ci_low"], means["ci_high"], alpha=0.2)
        axis.set_xscale("log")
        axis.set_xlabel(f"{label} (log axis; {factor})")
        trend = (titles or {}).get(curve)
        axis.set_title(f"{curve}\n{trend}" if trend else curve, fontsize=9)
        axis.axhline(0.0, color="grey", linewidth=0.5)
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("final value (points: subjects)")
    figure.tight_layout()
    return figure


def curves_by_level(curves: pd.DataFrame, factor: str, curve: str) -> Figure:
    """One chronology curve of every run against training fraction (log axis)."""
    figure, axis = plt.subplots(figsize=(5, 3.2))
    rows = curves[curves["curve"] == curve]
    colours = dict(zip(_levels(rows, factor), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    positive = rows["train_fraction"][rows["train_fraction"] > 0]
    floor = float(positive.min()) / 2 if len(positive) else 1e-3
    for _, group in rows.groupby(["run", "subject"], sort=False):
        group = group.sort_values("train_fraction")
        level = str(group[factor].iloc[0])
        x = group["train_fraction"].clip(lower=floor)
        axis.plot(x, group["value"], color=colours.get(level), alpha=0.8, label=f"{factor}={level}")
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axis.legend(unique.values(), unique.keys(), fontsize=7)
    axis.set_xscale("log")
    axis.set_xlabel("fraction of training (step 0 drawn at the left edge)")
    axis.set_title(curve)
    figure.tight_layout()
    return figure


def half_time_scatter(times: pd.DataFrame, rois: pd.DataFrame, *, title: str = "") -> Figure:
    """ROI half times against distance from V1 and each numeric ROI property, with r and p."""
    roi_times = times[times["curve"].str.startswith("roi/")].assign(
        roi=lambda frame: frame["curve"].str.removeprefix("roi/")
    )
    merged = roi_times.merge(rois.assign(roi=rois["roi"].astype(str)), on="roi", how="inner")
    skip = {"roi", "x", "y", "z", "hemi", "n_targets"}
    columns = [
        column
        for column in rois.columns
        if column not in skip and pd.api.types.is_numeric_dtype(rois[column])
    ]
    columns = sorted(columns, key=lambda name: name != "distance_from_v1")
    figure, axes = plt.subplots(
        1, max(len(columns), 1), figsize=(3.6 * max(len(columns), 1), 3.2), squeeze=False
    )
    for axis, column in zip(axes[0], columns):
        x = merged[column].to_numpy(dtype=np.float64)
        y = merged["half_time"].to_numpy(dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        axis.scatter(x[keep], y[keep])
        for label, xi, yi in zip(merged["roi"][keep], x[keep], y[keep]):
            axis.annotate(label, (xi, yi), fontsize=6)
        text = "n < 3"
        if keep.sum() >= 3 and np.ptp(x[keep]) > 0 and np.ptp(y[keep]) > 0:
            r, p = scipy.stats.pearsonr(x[keep], y[keep])
            text = f"r = {r:+.2f}, p = {p:.3g}"
        axis.set_title(text, fontsize=8)
        axis.set_xlabel(column)
    axes[0][0].set_ylabel("ROI half time (fraction of training)")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def level_heatmap(final: pd.DataFrame, rows: str, columns: str, curve: str) -> Figure:
    """The final value of ``curve`` (mean over subjects and seeds) over two factors' levels."""
    values = final[final["curve"] == curve]
    grid = values.pivot_table(index=rows, columns=columns, values="value", aggfunc="mean")
    grid = grid.reindex(index=_levels(values, rows), columns=_levels(values, columns))
    figure, axis = plt.subplots(figsize=(1.2 * grid.shape[1] + 2.5, 0.8 * grid.shape[0] + 1.8))
    image = axis.imshow(grid.to_numpy(dtype=np.float64), cmap="viridis", aspect="auto")
    axis.set_xticks(range(grid.shape[1]), grid.columns)
    axis.set_yticks(range(grid.shape[0]), grid.index)
    axis.set_xlabel(columns)
    axis.set_ylabel(rows)
    for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=np.float64)):
        axis.text(j, i, f"{value:.3f}", ha="center", va="center", color="white", fontsize=8)
    figure.colorbar(image, ax=axis)
    axis.set_title(curve)
    figure.tight_layout()
    return figure
