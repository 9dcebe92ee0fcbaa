"""Figures of a probe: layer x ROI heatmap, MEG time courses per layer, brain map of best layers.

Every function takes the long score table of :mod:`brainalign.probe.pipeline` (one subject,
one modality, one feature kind) and returns a matplotlib Figure, so the same figures go to files
(``brainalign probe``) and to TensorBoard (the training callback).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def roi_heatmap(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Mean R per layer (rows) and ROI (columns, in the data's order)."""
    rows = table[(table["metric"] == "r") & (table["layer"] >= 0) & table["time"].isna()]
    rows = rows[~rows["group"].isin(["all"]) & ~rows["group"].str.endswith("ms")]
    pivot = rows.pivot_table(index="layer", columns="group", values="value", sort=False)
    figure, axis = plt.subplots(figsize=(1.0 + 0.5 * max(pivot.shape[1], 2), 1.0 + 0.3 * len(pivot)))
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


__all__ = ["best_layer_brain_map", "meg_time_courses", "roi_heatmap", "save_figures"]

_ = np  # numpy is kept for callers building tables next to these figures
