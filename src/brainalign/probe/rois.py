"""ROI tables: centroids in MNI space, distance from V1, per-ROI property tables.

The ROI table has one row per ROI with columns ``roi``, ``x``, ``y``, ``z`` (MNI mm) and any
number of property columns (cortical expansion, myelin, ...), which the chronology correlates
with half times.

Example::

    rois = roi_table(brain.targets, properties=["expansion.csv"])
    distances = distance_from_v1(rois)  # Series indexed by roi, mm
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.probe import scores
from brainalign.utils.reading import read_file

__all__ = [
    "COORDINATE_COLUMNS",
    "distance_from_v1",
    "merge_roi_properties",
    "read_roi_csv",
    "roi_table",
]

COORDINATE_COLUMNS = ("x", "y", "z")

PropertySource = str | Path | pd.DataFrame


def roi_table(
    targets: pd.DataFrame | None = None,
    *,
    centroids: pd.DataFrame | None = None,
    properties: PropertySource | Sequence[PropertySource] | None = None,
) -> pd.DataFrame:
    """Build the ROI table.

    Parameters
    ----------
    targets : DataFrame with columns roi, x, y, z, optional
        One row per target (voxel or vertex). Centroid = mean coordinate of the ROI's targets;
        ROIs keep the order of their first appearance. A ``n_targets`` column counts targets.
    centroids : DataFrame with columns roi, x, y, z, optional
        Given centroids; used instead of the targets' means. Extra columns are kept.
    properties : path, DataFrame, or a list of them, optional
        Per-ROI property tables keyed by ``roi`` (see :func:`merge_roi_properties`).

    Returns
    -------
    rois : DataFrame with columns roi, x, y, z, [n_targets], [properties...]
    """
    if centroids is not None:
        rois = _check_roi_frame(centroids, "the centroid table")
    elif targets is not None:
        rois = _centroids_from_targets(targets)
    else:
        raise ValueError("roi_table needs targets (with roi, x, y, z) or centroids")
    if properties is not None:
        sources = [properties] if isinstance(properties, str | Path | pd.DataFrame) else properties
        for source in sources:
            rois = merge_roi_properties(rois, source)
    return rois


def _check_roi_frame(table: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in ("roi", *COORDINATE_COLUMNS) if c not in table.columns]
    if missing:
        raise ValueError(f"{where} lacks the column(s) {missing}; it has {list(table.columns)}")
    rois = table.copy().reset_index(drop=True)
    rois["roi"] = rois["roi"].astype(str)
    duplicated = rois["roi"][rois["roi"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{where} lists these ROIs more than once: {duplicated}")
    for column in COORDINATE_COLUMNS:
        rois[column] = rois[column].astype(np.float64)
    return rois


def _centroids_from_targets(targets: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("roi", *COORDINATE_COLUMNS) if c not in targets.columns]
    if missing:
        raise ValueError(
            f"the targets table lacks the column(s) {missing} needed for ROI centroids; "
            f"it has {list(targets.columns)}"
        )
    grouped = targets.assign(roi=targets["roi"].astype(str)).groupby("roi", sort=False)
    rois = grouped[list(COORDINATE_COLUMNS)].mean().astype(np.float64)
    rois["n_targets"] = grouped.size()
    return rois.reset_index()


def read_roi_csv(path: str | Path) -> pd.DataFrame:
    """Read a ``rois.csv`` (``roi``, ``x``, ``y``, ``z``, property columns) and check it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ROI table not found: {path}")
    table = read_file(lambda: pd.read_csv(path, dtype={"roi": str}), path, "a CSV ROI table")
    return _check_roi_frame(table, str(path))


def merge_roi_properties(rois: pd.DataFrame, properties: PropertySource) -> pd.DataFrame:
    """Add per-ROI property columns from a table keyed by ``roi``.

    ROIs of ``rois`` absent from the property table get NaN; property rows naming unknown ROIs
    are ignored with a warning that lists them.

    Parameters
    ----------
    rois : DataFrame with a roi column
    properties : path to a CSV, or DataFrame, with a roi column and property columns

    Returns
    -------
    rois : DataFrame, a copy with the property columns appended
    """
    where = "the property table" if isinstance(properties, pd.DataFrame) else str(properties)
    if isinstance(properties, pd.DataFrame):
        table = properties.copy()
    else:
        path = Path(properties)
        if not path.is_file():
            raise FileNotFoundError(f"ROI property table not found: {path}")
        table = pd.read_csv(path, dtype={"roi": str})
    if "roi" not in table.columns:
        raise ValueError(f"{where} lacks a 'roi' column; it has {list(table.columns)}")
    table["roi"] = table["roi"].astype(str)
    if table["roi"].duplicated().any():
        repeated = table["roi"][table["roi"].duplicated()].tolist()
        raise ValueError(f"{where} lists these ROIs more than once: {repeated}")
    clashing = [c for c in table.columns if c != "roi" and c in rois.columns]
    if clashing:
        raise ValueError(
            f"{where} has column(s) {clashing} that the ROI table already has; rename them"
        )
    known = set(rois["roi"].astype(str))
    unknown = [roi for roi in table["roi"] if roi not in known]
    if unknown:
        warnings.warn(
            f"{where}: {len(unknown)} ROI name(s) not in the ROI table, ignored: {unknown}; "
            f"known ROIs: {sorted(known)}",
            UserWarning,
            stacklevel=2,
        )
    merged = rois.copy()
    merged["roi"] = merged["roi"].astype(str)
    return merged.merge(table, on="roi", how="left", validate="one_to_one")


def distance_from_v1(rois: pd.DataFrame, reference: str = "V1") -> pd.Series:
    """Euclidean distance (mm) of each ROI centroid from the reference ROI's centroid.

    Parameters
    ----------
    rois : DataFrame with columns roi, x, y, z
    reference : str
        Name of the reference ROI.

    Returns
    -------
    distances : Series indexed by roi name, float, mm (0 for the reference)
    """
    rois = _check_roi_frame(rois, "the ROI table")
    names = rois["roi"].tolist()
    if reference not in names:
        raise ValueError(
            f"reference ROI {reference!r} not in the ROI table; available ROIs: {names}; "
            "pass reference=<name> (e.g. 'V1v' for NSD's prf-visualrois)"
        )
    coordinates = rois[list(COORDINATE_COLUMNS)].to_numpy()  # (n_rois, 3)
    no_coordinates = [name for name, row in zip(names, coordinates) if np.isnan(row).any()]
    if no_coordinates:
        raise ValueError(
            f"ROI coordinates (x, y, z) missing for {no_coordinates}; give them in rois.csv "
            "or in the targets table"
        )
    distances = scores.distance_from_v1(rois, reference=reference)  # the one computation
    return distances.rename_axis("roi").rename("distance_from_v1")
