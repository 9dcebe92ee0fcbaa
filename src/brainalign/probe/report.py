"""Figures of a probe: layer x ROI heatmap, MEG time courses per layer, brain map of best layers.

Every function takes the long score table of :mod:`brainalign.probe.pipeline` (one subject,
one modality, one feature kind) and returns a matplotlib Figure, so the same figures go to files
(``brainalign probe``) and to TensorBoard (the training callback).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def roi_heatmap(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Mean R per layer (rows) and ROI (columns, in the data's order)."""
    rows = table[(table["metric"] == "r") & (table["layer"] >= 0) & table["time"].isna()]
    rows = rows[~rows["group"].isin(["all"]) & ~rows["group"].str.endswith("ms")]
    pivot = rows.pivot_table(index="layer", columns="group", values="value", sort=False)
    figure, axis = plt.subplots(
        figsize=(1.0 + 0.5 * max(pivot.shape[1], 2), 1.0 + 0.3 * len(pivot))
    )
    image = axis.imshow(pivot.to_numpy(), aspect="auto", cmap="viridis", origin="lower")
    axis.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=60, ha="right")
    axis.set_yticks(range(len(pivot)), pivot.index)
    axis.set_xlabel("ROI")
    axis.set_ylabel("layer")
    axis.set_title(title or "encoding R per layer and ROI")
    figure.colorbar(image, ax=axis, label="R")
    figure.tight_layout()
    return figure


def meg_time_courses(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Mean R over channels against time, one line per layer coloured by depth."""
    rows = table[(table["metric"] == "r") & (table["group"] == "time") & (table["layer"] >= 0)]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    colours = plt.get_cmap("viridis")
    for layer, course in rows.groupby("layer"):
        depth = float(course["depth"].iloc[0])
        course = course.sort_values("time")
        axis.plot(course["time"] * 1000, course["value"], color=colours(depth), label=f"{layer}")
    axis.axvline(0, color="grey", lw=0.8)
    axis.set_xlabel("time from onset (ms)")
    axis.set_ylabel("R (mean over channels)")
    axis.set_title(title or "MEG encoding time course per layer")
    if rows["layer"].nunique() <= 12:
        axis.legend(title="layer", fontsize=7, ncols=2)
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


def save_figures(
    table: pd.DataFrame, rois: pd.DataFrame | None, folder, *, prefix: str
) -> list[str]:
    """Write every figure that applies to ``table`` as PNG files; return their names."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    modality = str(table["modality"].iloc[0]) if len(table) else ""
    figures: list[tuple[str, Figure]] = []
    if modality == "fmri":
        figures.append(("roi_heatmap", roi_heatmap(table, title=prefix)))
        if rois is not None and not rois.empty and {"x", "y", "z"} <= set(rois.columns):
            figures.append(("brain_map", best_layer_brain_map(table, rois, title=prefix)))
    elif modality == "meg":
        figures.append(("meg_time_courses", meg_time_courses(table, title=prefix)))
    for name, figure in figures:
        filename = f"{prefix}_{name}.png"
        figure.savefig(folder / filename, dpi=100)
        plt.close(figure)
        written.append(filename)
    return written


def chronology_curves(curve_table: pd.DataFrame, *, title: str = "") -> Figure:
    """Score curves against training fraction (log axis), one panel per kind of curve.

    Panels: the three scores, the ROI curves and the MEG-window curves; runs are
    distinguished by line style when there are several.
    """
    panels = [
        ("scores", curve_table["curve"].isin(["encoding", "spatial_score", "temporal_score"])),
        ("ROIs", curve_table["curve"].str.startswith("roi/")),
        ("MEG windows", curve_table["curve"].str.startswith("window/")),
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
    "best_layer_brain_map",
    "chronology_curves",
    "half_time_vs_distance",
    "meg_time_courses",
    "roi_heatmap",
    "save_figures",
]
