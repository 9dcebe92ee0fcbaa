"""Figures of a probe: layer x ROI heatmaps, MEG time courses per layer, brain maps.

Every function takes the long score table of :mod:`brainalign.probe.pipeline` (one subject,
one modality, one feature kind) and returns a matplotlib Figure, so the same figures go to files
(``brainalign probe``) and to TensorBoard (the training callback): :func:`probe_figures` lists
every figure that applies, by name:

- ``roi_heatmap`` / ``meg_time_courses``: encoding R per layer and ROI / over time;
- ``metric_heatmaps`` / ``metric_time_courses``: the same, one panel per metric (``r``,
  ``rsa``, ``cka``...), when metrics other than encoding are probed;
- ``brain_map``: glass brain of each ROI's best-layer depth (ROI centroids);
- ``surface_map``, ``volume_map``, ``topomap``: per-target best R and best-layer depth on
  fsaverage, on volume slices, or as MEG sensor topomaps at chosen latencies
  (:func:`map_figures`, from the probe's :class:`~brainalign.probe.target_maps.TargetMaps`);
- ``variance_partitioning``: unique and shared variance over layers.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from brainalign.probe.config import METRICS

#: Per-layer row name of each metric (encoding's is ``r``), in the order panels are drawn.
LAYER_ROWS: dict[str, str] = {metric: "r" if metric == "encoding" else metric for metric in METRICS}
_LABELS = {"r": "encoding R", "rsa": "RSA", "cka": "CKA", "cka_cv": "cross-validated CKA"}


def _roi_pivot(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = table[(table["metric"] == metric) & (table["layer"] >= 0) & table["time"].isna()]
    rows = rows[~rows["group"].isin(["all"]) & ~rows["group"].str.endswith("ms")]
    return rows.pivot_table(index="layer", columns="group", values="value", sort=False)


def _draw_heatmap(figure: Figure, axis: Axes, pivot: pd.DataFrame, label: str) -> None:
    image = axis.imshow(pivot.to_numpy(), aspect="auto", cmap="viridis", origin="lower")
    axis.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=60, ha="right")
    axis.set_yticks(range(len(pivot)), pivot.index)
    axis.set_xlabel("ROI")
    axis.set_ylabel("layer")
    figure.colorbar(image, ax=axis, label=label)


def roi_heatmap(table: pd.DataFrame, *, title: str = "", metric: str = "r") -> Figure:
    """Mean R (or ``metric``) per layer (rows) and ROI (columns, in the data's order)."""
    pivot = _roi_pivot(table, metric)
    figure, axis = plt.subplots(
        figsize=(1.0 + 0.5 * max(pivot.shape[1], 2), 1.0 + 0.3 * len(pivot))
    )
    _draw_heatmap(figure, axis, pivot, "R" if metric == "r" else _LABELS.get(metric, metric))
    axis.set_title(title or "encoding R per layer and ROI")
    figure.tight_layout()
    return figure


def _draw_courses(axis: Axes, table: pd.DataFrame, metric: str, label: str) -> None:
    rows = table[(table["metric"] == metric) & (table["group"] == "time") & (table["layer"] >= 0)]
    colours = plt.get_cmap("viridis")
    for layer, course in rows.groupby("layer"):
        depth = float(course["depth"].iloc[0])
        course = course.sort_values("time")
        axis.plot(course["time"] * 1000, course["value"], color=colours(depth), label=f"{layer}")
    axis.axvline(0, color="grey", lw=0.8)
    axis.set_xlabel("time from onset (ms)")
    axis.set_ylabel(label)
    if rows["layer"].nunique() <= 12:
        axis.legend(title="layer", fontsize=7, ncols=2)


def meg_time_courses(table: pd.DataFrame, *, title: str = "", metric: str = "r") -> Figure:
    """Mean R over channels (or ``metric``) against time, one line per layer coloured by depth."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    label = "R (mean over channels)" if metric == "r" else _LABELS.get(metric, metric)
    _draw_courses(axis, table, metric, label)
    axis.set_title(title or "MEG encoding time course per layer")
    figure.tight_layout()
    return figure


def probed_metrics(table: pd.DataFrame) -> list[str]:
    """The per-layer row names of the metrics in ``table`` (``r``, ``rsa``...), in order."""
    present = set(table.loc[table["layer"] >= 0, "metric"])
    return [name for name in LAYER_ROWS.values() if name in present]


def metric_panels(table: pd.DataFrame, *, title: str = "") -> Figure:
    """One panel per metric: layer x ROI heatmaps (fMRI) or time courses per layer (MEG)."""
    metrics = probed_metrics(table)
    modality = str(table["modality"].iloc[0]) if len(table) else "fmri"
    figure, axes = plt.subplots(
        1, max(len(metrics), 1), figsize=(4.2 * max(len(metrics), 1), 3.6), squeeze=False
    )
    for axis, metric in zip(axes[0], metrics):
        label = _LABELS.get(metric, metric)
        if modality == "fmri":
            _draw_heatmap(figure, axis, _roi_pivot(table, metric), label)
        else:
            _draw_courses(axis, table, metric, label)
        axis.set_title(label)
    figure.suptitle(title or "every metric per layer")
    figure.tight_layout()
    return figure


def variance_partition_figure(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Unique and shared variance (all targets) against layer, one panel per pair of spaces."""
    rows = table[
        table["metric"].isin(["unique_variance", "shared_variance"]) & (table["group"] == "all")
    ]
    pairs = list(dict.fromkeys(rows.loc[rows["metric"] == "shared_variance", "space"]))
    figure, axes = plt.subplots(1, max(len(pairs), 1), figsize=(5 * max(len(pairs), 1), 3.4))
    for axis, pair in zip(np.atleast_1d(axes), pairs):
        spaces = pair.split("+")
        parts = rows[rows["space"].isin([*spaces, pair])]
        grid = parts.pivot_table(index="layer", columns="space", values="value", sort=False)
        above, below = np.zeros(len(grid)), np.zeros(len(grid))  # negative shares go below 0
        positions = np.arange(len(grid))
        for space in [*spaces, pair]:
            if space in grid:
                values = np.nan_to_num(grid[space].to_numpy())
                label = f"shared ({pair})" if space == pair else f"unique: {space}"
                bottom = np.where(values >= 0, above, below)
                axis.bar(positions, values, bottom=bottom, label=label)
                above, below = above + np.maximum(values, 0), below + np.minimum(values, 0)
        axis.axhline(0, color="black", lw=0.8)
        axis.set_xticks(positions, [str(layer) if layer >= 0 else "pair" for layer in grid.index])
        axis.set_xlabel("layer")
        axis.set_ylabel("held-out R2 (mean over targets)")
        axis.legend(fontsize=7)
    figure.suptitle(title or "variance partitioning")
    figure.tight_layout()
    return figure


def best_layer_brain_map(table: pd.DataFrame, rois: pd.DataFrame, *, title: str = "") -> Figure:
    """Glass brain (nilearn) with one marker per ROI centroid, coloured by best-layer depth."""
    from nilearn import plotting

    best = table[table["metric"] == "best_depth"].set_index("group")["value"]
    located = rois.dropna(subset=["x", "y", "z"]).set_index("roi")
    located = located[located.index.isin(best.index)]
    figure = plt.figure(figsize=(7, 3))
    if located.empty:
        figure.text(0.5, 0.5, "no ROI coordinates to plot", ha="center")
        return figure
    coordinates = located[["x", "y", "z"]].to_numpy(dtype=float)
    values = best.reindex(located.index).to_numpy(dtype=float)
    plotting.plot_markers(
        values,
        coordinates,
        node_cmap="viridis",
        node_vmin=0.0,
        node_vmax=1.0,
        figure=figure,
        title=title or "relative depth of the best layer per ROI",
        colorbar=True,
    )
    return figure


def map_figures(maps: Any, *, title: str = "") -> list[tuple[str, Figure]]:
    """The brain map of a probe's :class:`~brainalign.probe.target_maps.TargetMaps`.

    Returns
    -------
    list of (name, Figure)
        ``surface_map`` (fsaverage5, lateral and medial views of both hemispheres),
        ``volume_map`` (three cuts) or ``topomap`` (at the maps' latencies): two rows each,
        best R over layers and the best layer's relative depth.
    """
    from brainalign.probe import maps as brain_maps

    if maps is None:
        return []
    score_maps = maps.score_maps()
    if maps.kind == "surface":
        figure = brain_maps.surface_map_figure(
            score_maps, hemis=maps.hemis, vertices=maps.vertices, title=title
        )
        return [("surface_map", figure)]
    if maps.kind == "volume":
        figure = brain_maps.volume_map_figure(
            score_maps, voxel_indices=maps.voxel_indices, affine=maps.affine, title=title
        )
        return [("volume_map", figure)]
    figure = brain_maps.meg_topomap_figure(
        score_maps, info=maps.info, times=maps.times, latencies=maps.latencies, title=title
    )
    return [("topomap", figure)]


def probe_figures(
    table: pd.DataFrame, rois: pd.DataFrame | None, *, title: str = "", maps: Any = None
) -> list[tuple[str, Figure]]:
    """Every figure that applies to one result's ``table`` (and its ``maps``), by name."""
    modality = str(table["modality"].iloc[0]) if len(table) else ""
    metrics = probed_metrics(table)
    figures: list[tuple[str, Figure]] = []
    if modality == "fmri":
        if "r" in metrics:
            figures.append(("roi_heatmap", roi_heatmap(table, title=title)))
        if metrics != ["r"] and metrics:
            figures.append(("metric_heatmaps", metric_panels(table, title=title)))
        best = table[table["metric"] == "best_depth"]
        located = rois is not None and not rois.empty and {"x", "y", "z"} <= set(rois.columns)
        if located and not best.empty:
            figures.append(("brain_map", best_layer_brain_map(table, rois, title=title)))
    elif modality == "meg":
        if "r" in metrics:
            figures.append(("meg_time_courses", meg_time_courses(table, title=title)))
        if metrics != ["r"] and metrics:
            figures.append(("metric_time_courses", metric_panels(table, title=title)))
    if "shared_variance" in set(table["metric"]):
        figures.append(("variance_partitioning", variance_partition_figure(table, title=title)))
    return figures + map_figures(maps, title=title)


def save_figures(
    table: pd.DataFrame,
    rois: pd.DataFrame | None,
    folder,
    *,
    prefix: str,
    maps: Any = None,
) -> list[str]:
    """Write every figure that applies to ``table`` as PNG files; return their names."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in probe_figures(table, rois, title=prefix, maps=maps):
        filename = f"{prefix}_{name}.png"
        figure.savefig(folder / filename, dpi=100)
        plt.close(figure)
        written.append(filename)
    return written


def chronology_curves(curve_table: pd.DataFrame, *, title: str = "") -> Figure:
    """Score curves against training fraction (log axis), one panel per kind of curve.

    Panels: the scores (encoding, spatial and temporal, and those of other metrics: ``rsa``,
    ``rsa/spatial_score``...), the ROI curves and the MEG-window curves (of encoding), and with
    variance partitioning its unique and shared variance over all targets; runs are
    distinguished by line style when there are several.
    """
    from brainalign.probe.chronology import SCORE_CURVES, metric_score_curves
    from brainalign.probe.metric_names import PARTITION_REGIONS

    panels = [
        (
            "scores",
            curve_table["curve"].isin(SCORE_CURVES)
            | curve_table["curve"].isin(metric_score_curves(curve_table["curve"])),
        ),
        ("ROIs", curve_table["curve"].str.startswith("roi/")),
        ("MEG windows", curve_table["curve"].str.startswith("window/")),
        (
            "variance partitioning",
            curve_table["curve"].str.startswith(tuple(f"{region}/" for region in PARTITION_REGIONS))
            & ~curve_table["curve"].str.contains("/roi/|/window/"),
        ),
    ]
    panels = [(name, mask) for name, mask in panels if mask.any()]
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.6))
    axes = np.atleast_1d(axes)
    styles = ["-", "--", ":", "-."]
    runs = list(dict.fromkeys(curve_table["run"]))
    for axis, (name, mask) in zip(axes, panels):
        rows = curve_table[mask]
        for (run, subject, modality, curve), line in rows.groupby(
            ["run", "subject", "modality", "curve"], sort=False
        ):
            line = line.sort_values("train_fraction")
            fraction = line["train_fraction"].clip(lower=1e-4)  # step 0 drawn at the left edge
            label = curve if len(runs) == 1 else f"{run}: {curve}"
            axis.plot(
                fraction,
                line["value"],
                styles[runs.index(run) % 4],
                marker="o",
                markersize=3,
                label=f"{subject}/{modality} {label}",
            )
        axis.set_xscale("log")
        axis.set_xlabel("fraction of training (log)")
        axis.set_title(name)
        axis.legend(fontsize=6)
    figure.suptitle(title or "alignment over training")
    figure.tight_layout()
    return figure


def half_time_vs_distance(times: pd.DataFrame, rois: pd.DataFrame, *, title: str = "") -> Figure:
    """ROI half time against the ROI's distance from V1 (one point per ROI)."""
    roi_times = times[times["curve"].str.startswith("roi/")].assign(
        roi=lambda frame: frame["curve"].str.removeprefix("roi/")
    )
    merged = roi_times.merge(rois[["roi", "distance_from_v1"]], on="roi")
    figure, axis = plt.subplots(figsize=(4.5, 3.6))
    axis.scatter(merged["distance_from_v1"], merged["half_time"], label="final-value definition")
    axis.scatter(
        merged["distance_from_v1"], merged["half_time_rise"], marker="x", label="rise definition"
    )
    for _, row in merged.iterrows():
        axis.annotate(row["roi"], (row["distance_from_v1"], row["half_time"]), fontsize=7)
    axis.set_xlabel("distance from V1 (mm)")
    axis.set_ylabel("half time (fraction of training)")
    axis.set_title(title or "ROI half time vs distance from V1")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


__all__ = [
    "LAYER_ROWS",
    "best_layer_brain_map",
    "chronology_curves",
    "half_time_vs_distance",
    "map_figures",
    "meg_time_courses",
    "metric_panels",
    "probe_figures",
    "probed_metrics",
    "roi_heatmap",
    "save_figures",
    "variance_partition_figure",
]
