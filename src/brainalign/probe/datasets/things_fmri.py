"""THINGS-fMRI single-trial responses (the ``betas_csv`` release of THINGS-data).

Spec: ``things-fmri:<betas_csv folder>?subject=1&split=test&rois=V1,V2,hV4`` (options:
:class:`ThingsFmriOptions`).

Files read in the folder (or its ``betas_csv/`` subfolder)::

    sub-XX_ResponseData.h5       pandas HDF5 "fixed" frame: one row per voxel, a voxel_id column
                                 and one column per trial, in the order of the stimulus table
    sub-XX_VoxelMetadata.csv     one row per voxel (same order): voxel_id, voxel_x/y/z, noise
                                 ceilings (nc_singletrial, nc_testset), ROI one-hot columns
                                 (V1, hV4, ..., glasser-<parcel>)
    sub-XX_StimulusMetadata.csv  one row per trial: stimulus (file name), trial_type
                                 (train/test; other types such as catch are dropped), session

The response file is read with h5py (pandas' own reader needs PyTables, which brainalign does
not depend on): only the pandas *fixed* format is supported, one voxel slab at a time.

Choices (options): ROI columns are the 0/1 columns of the voxel table other than ids,
coordinates, noise ceilings, ``splithalf*`` and ``prf-*``; ``rois=`` picks and orders them (a
voxel in several takes the first). Coordinates are ``voxel_{x,y,z} * voxel_size_mm``: the
subject's functional grid in mm, not MNI, so distances are right but positions are not. Stimulus
ids are image file name stems (``dog_12s``). Trials of one image are averaged; with
``split=test`` every image has 12 repeats, kept as ``repeats``, and the noise ceiling is
``nc_testset``; ``split=train`` uses ``nc_singletrial``; ``split=all`` has no noise ceiling.
Noise ceilings are percent of explainable variance (as THINGS-data publishes them). The voxel
indices are also given as ``voxel_i/j/k`` with the affine ``diag(voxel_size_mm)``, for volume
maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import VOXEL_COLUMNS, BrainData
from brainalign.probe.datasets._common import (
    TrialGroups,
    average_trials,
    find_images,
    group_trials,
    require_dir,
    require_file,
    roi_centroids,
    zscore_columns,
)
from brainalign.probe.stimuli import StimulusSet

__all__ = [
    "ThingsFmriOptions",
    "detect_roi_columns",
    "load_things_fmri",
    "read_pandas_fixed_frame",
]

_NOT_ROI = ("voxel_id", "subject_id", "voxel_x", "voxel_y", "voxel_z")
_NOT_ROI_PREFIXES = ("nc_", "splithalf", "prf-", "prf_", "Unnamed")
_NOISE_CEILING_COLUMN = {"test": "nc_testset", "train": "nc_singletrial"}


@dataclass(frozen=True)
class ThingsFmriOptions:
    """Options of the THINGS-fMRI loader.

    Parameters
    ----------
    subject : int
        1..3 (required).
    split : {"train", "test", "all"}
        Which trials: the 8,640 single-presentation training images, the 100 test images
        shown 12 times, or both.
    rois : tuple of str, optional
        ROI columns of the voxel table, in priority order; default every ROI column.
    voxel_size_mm : float
        Converts voxel indices to mm (THINGS-fMRI: 2 mm isotropic).
    zscore_sessions : bool
        Z-score each voxel across the (train and test) trials of each session first.
    keep_repeats : bool
    images : Path, optional
        THINGS image folder (``<concept>/<file>`` or flat); default ``<folder>/images`` when
        present, else no stimuli.
    chunk_voxels : int
        Voxel rows read at once from the response file.
    """

    subject: int | None = None
    split: Literal["train", "test", "all"] = "all"
    rois: tuple[str, ...] | None = None
    voxel_size_mm: float = 2.0
    zscore_sessions: bool = False
    keep_repeats: bool = True
    images: Path | None = None
    chunk_voxels: int = 2048

    def __post_init__(self) -> None:
        if self.subject is not None and self.subject not in (1, 2, 3):
            raise ValueError(f"THINGS-fMRI subject must be 1..3; got {self.subject}")
        if not self.voxel_size_mm > 0:
            raise ValueError(f"voxel_size_mm must be positive; got {self.voxel_size_mm}")
        if self.chunk_voxels < 1:
            raise ValueError(f"chunk_voxels must be at least 1; got {self.chunk_voxels}")


# ---------------------------------------------------------------------- pandas HDF5 (fixed)
def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _labels(dataset: Any) -> list[str]:
    return [_text(value) for value in np.asarray(dataset[()]).reshape(-1)]


def _frame_group(handle: Any, path: Path, key: str | None) -> Any:
    import h5py

    frames = {
        name: item
        for name, item in handle.items()
        if isinstance(item, h5py.Group) and "pandas_type" in item.attrs
    }
    if key is not None:
        if key not in frames:
            raise ValueError(f"{path} has no pandas frame {key!r}; frames: {sorted(frames)}")
        group = frames[key]
    elif len(frames) == 1:
        group = next(iter(frames.values()))
    else:
        raise ValueError(
            f"{path} holds {len(frames)} pandas frames ({sorted(frames)}); expected one"
        )
    kind = _text(group.attrs["pandas_type"])
    if kind != "frame":
        raise ValueError(
            f"{path}: the frame is stored in pandas' {kind!r} format; only the 'fixed' format "
            "(pandas_type 'frame') is read without PyTables. Re-save it with "
            "DataFrame.to_hdf(..., format='fixed') or install PyTables and convert it"
        )
    return group


@dataclass(frozen=True)
class _FrameLayout:
    columns: list[str]  # axis0, in frame order
    n_rows: int
    block_of: dict[str, tuple[int, int]]  # column -> (block, position in block)


def _frame_layout(group: Any, path: Path) -> _FrameLayout:
    columns = _labels(group["axis0"])
    n_rows = int(np.asarray(group["axis1"]).shape[0])
    block_of: dict[str, tuple[int, int]] = {}
    for block in range(int(group.attrs.get("nblocks", 0))):
        for position, column in enumerate(_labels(group[f"block{block}_items"])):
            block_of[column] = (block, position)
    missing = [column for column in columns if column not in block_of]
    if missing:
        raise ValueError(f"{path}: columns {missing[:5]} are in no data block")
    return _FrameLayout(columns, n_rows, block_of)


def _require_numeric_block(dataset: Any, path: Path) -> None:
    """Refuse a block of Python objects (pandas pickles those; they are never unpickled here)."""
    if dataset.dtype.kind not in "biuf":
        raise ValueError(
            f"{path}: {dataset.name} holds {dataset.dtype} values, not numbers (pandas stores "
            "Python objects there as pickles, which brainalign never unpickles); re-save the "
            "frame with numeric columns"
        )


def _block_rows(dataset: Any, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of a block, shape (stop - start, n_items)."""
    if bool(dataset.attrs.get("transposed", False)):
        return np.asarray(dataset[start:stop])  # stored as (n_rows, n_items)
    return np.asarray(dataset[:, start:stop]).T


def read_pandas_fixed_frame(
    path: str | Path,
    columns: list[str],
    rows: np.ndarray | None = None,
    *,
    key: str | None = None,
    chunk_rows: int = 2048,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Read columns of a pandas HDF5 frame in the fixed format, with h5py only.

    Parameters
    ----------
    path : path to the ``.h5`` file
    columns : list of str
        Column labels (as text) to read, in the order wanted.
    rows : ndarray of int, optional
        Row positions to keep (increasing); default all.
    key : str, optional
        The frame's key; default the only frame in the file.
    chunk_rows : int
        Rows read per slab.

    Returns
    -------
    values : ndarray of shape (n_rows_kept, len(columns))
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as handle:
        group = _frame_group(handle, path, key)
        layout = _frame_layout(group, path)
        unknown = [column for column in columns if column not in layout.block_of]
        if unknown:
            raise ValueError(f"{path}: no column(s) {unknown[:5]}; it has {layout.columns[:8]}...")
        rows = np.arange(layout.n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= layout.n_rows):
            raise IndexError(f"{path}: rows must lie in [0, {layout.n_rows})")
        out = np.empty((rows.size, len(columns)), dtype=dtype)
        by_block: dict[int, tuple[list[int], list[int]]] = {}
        for out_position, column in enumerate(columns):
            block, position = layout.block_of[column]
            by_block.setdefault(block, ([], []))[0].append(position)
            by_block[block][1].append(out_position)
        for block in by_block:
            _require_numeric_block(group[f"block{block}_values"], path)
        if rows.size == 0:
            return out
        for start in range(int(rows.min()), int(rows.max()) + 1, chunk_rows):
            stop = min(start + chunk_rows, int(rows.max()) + 1)
            inside = np.flatnonzero((rows >= start) & (rows < stop))
            if inside.size == 0:
                continue
            for block, (positions, out_positions) in by_block.items():
                slab = _block_rows(group[f"block{block}_values"], start, stop)  # (chunk, items)
                out[np.ix_(inside, out_positions)] = slab[rows[inside] - start][:, positions]
        return out


def frame_columns(path: str | Path, key: str | None = None) -> list[str]:
    """Column labels (as text) of a pandas fixed-format frame."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as handle:
        return _frame_layout(_frame_group(handle, path, key), path).columns


# ---------------------------------------------------------------------- tables
def detect_roi_columns(voxels: pd.DataFrame) -> list[str]:
    """ROI one-hot columns of a voxel table: 0/1 columns other than ids, coordinates, ceilings."""
    found = []
    for column in voxels.columns:
        if column in _NOT_ROI or str(column).startswith(_NOT_ROI_PREFIXES):
            continue
        values = voxels[column]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            continue
        if values.isna().any() or not values.astype(float).isin([0.0, 1.0]).all():
            continue
        found.append(str(column))
    return found


def _locate(root: Path, subject: int) -> dict[str, Path]:
    folder = root / "betas_csv" if (root / "betas_csv").is_dir() else root
    prefix = f"sub-{subject:02d}"
    return {
        "responses": require_file(
            folder / f"{prefix}_ResponseData.h5", f"THINGS-fMRI responses of {prefix}"
        ),
        "voxels": require_file(
            folder / f"{prefix}_VoxelMetadata.csv", f"THINGS-fMRI voxel table of {prefix}"
        ),
        "stimuli": require_file(
            folder / f"{prefix}_StimulusMetadata.csv", f"THINGS-fMRI stimulus table of {prefix}"
        ),
    }


def _assign_rois(voxels: pd.DataFrame, columns: list[str]) -> np.ndarray:
    names = np.full(len(voxels), "", dtype=object)
    for column in columns:
        inside = (voxels[column].to_numpy(dtype=float) == 1.0) & (names == "")
        names[inside] = column
    return names


def load_things_fmri(
    root: str | Path, options: ThingsFmriOptions
) -> tuple[BrainData, StimulusSet | None]:
    """Load one THINGS-fMRI subject's single-trial responses, averaged per image.

    Parameters
    ----------
    root : path to the folder with the ``sub-XX_*`` files (or its parent with ``betas_csv/``)
    options : ThingsFmriOptions

    Returns
    -------
    brain : BrainData, modality "fmri"
        ``data`` (n_images, n_voxels) with images sorted by id; targets with roi, x, y, z (mm,
        subject grid), voxel_x/y/z, voxel_id.
    stimuli : StimulusSet from ``images``, or None when no image folder is known
    """
    if options.subject is None:
        raise ValueError("THINGS-fMRI needs a subject: add ?subject=N (1..3) to the spec")
    root = require_dir(Path(root), "THINGS-fMRI folder")
    files = _locate(root, options.subject)
    voxels = pd.read_csv(files["voxels"])
    trials = pd.read_csv(files["stimuli"])
    missing = [c for c in ("stimulus", "trial_type") if c not in trials.columns]
    if options.zscore_sessions and "session" not in trials.columns:
        missing.append("session")
    if missing:
        raise ValueError(
            f"{files['stimuli']} lacks the column(s) {missing}; it has {list(trials.columns)}"
        )
    coordinate_columns = ["voxel_x", "voxel_y", "voxel_z"]
    absent = [c for c in coordinate_columns if c not in voxels.columns]
    if absent:
        raise ValueError(f"{files['voxels']} lacks the column(s) {absent}")

    columns = frame_columns(files["responses"])
    trial_columns = [column for column in columns if column != "voxel_id"]
    if len(trial_columns) != len(trials):
        raise ValueError(
            f"{files['responses']} has {len(trial_columns)} trial columns but "
            f"{files['stimuli']} lists {len(trials)} trials; they must match one to one"
        )
    import h5py

    with h5py.File(files["responses"], "r") as handle:
        n_rows = _frame_layout(_frame_group(handle, files["responses"], None), root).n_rows
    if n_rows != len(voxels):
        raise ValueError(
            f"{files['responses']} has {n_rows} voxel rows but {files['voxels']} has "
            f"{len(voxels)}; they must list the same voxels in the same order"
        )

    available = detect_roi_columns(voxels)
    roi_columns = list(options.rois) if options.rois is not None else available
    unknown = [column for column in roi_columns if column not in available]
    if unknown:
        raise ValueError(
            f"ROI columns {unknown} not in {files['voxels']}; ROI columns: {available}"
        )
    if not roi_columns:
        raise ValueError(f"{files['voxels']} has no ROI (0/1) column")
    roi_names = _assign_rois(voxels, roi_columns)
    voxel_rows = np.flatnonzero(roi_names != "")
    if voxel_rows.size == 0:
        raise ValueError(f"no voxel lies in the ROI columns {roi_columns}")

    trial_types = trials["trial_type"].astype(str)
    kept_types = ("train", "test") if options.split == "all" else (options.split,)
    usable = trial_types.isin(("train", "test")).to_numpy()  # catch and others dropped
    read_columns = [trial_columns[i] for i in np.flatnonzero(usable)]
    if "voxel_id" in columns and "voxel_id" in voxels.columns:
        response_ids = read_pandas_fixed_frame(
            files["responses"], ["voxel_id"], voxel_rows, dtype=np.int64
        )[:, 0]
        table_ids = voxels["voxel_id"].to_numpy(dtype=np.int64)[voxel_rows]
        if not np.array_equal(response_ids, table_ids):
            raise ValueError(
                f"voxel_id differs between {files['responses']} and {files['voxels']}; the two "
                "files must list the same voxels in the same order"
            )
    values = read_pandas_fixed_frame(
        files["responses"], read_columns, voxel_rows, chunk_rows=options.chunk_voxels
    )  # (n_voxels, n_trials) float32
    responses = values.T  # (n_trials, n_voxels), a view: no second copy
    usable_trials = trials[usable].reset_index(drop=True)
    if options.zscore_sessions:
        for session in pd.unique(usable_trials["session"]):
            rows = np.flatnonzero(usable_trials["session"].to_numpy() == session)
            responses[rows] = zscore_columns(responses[rows])
    selected = np.flatnonzero(usable_trials["trial_type"].astype(str).isin(kept_types))
    if selected.size == 0:
        raise ValueError(f"{files['stimuli']} has no {options.split} trial")
    stimulus_ids = [Path(str(name)).stem for name in usable_trials["stimulus"].iloc[selected]]
    within_selection = group_trials(stimulus_ids, sort=True)
    groups = TrialGroups(  # trial positions in `responses` (no copy of the selected trials)
        within_selection.stimulus_ids, [selected[rows] for rows in within_selection.trial_rows]
    )
    data, repeats = average_trials(
        responses,
        groups,
        keep_repeats=options.keep_repeats,
        where=f"THINGS-fMRI sub-{options.subject:02d}: ",
    )

    picked = voxels.iloc[voxel_rows].reset_index(drop=True)
    targets = pd.DataFrame({"roi": roi_names[voxel_rows]})
    for axis, column, index in zip("xyz", coordinate_columns, VOXEL_COLUMNS):
        targets[axis] = picked[column].to_numpy(dtype=np.float64) * options.voxel_size_mm
        targets[column] = picked[column].to_numpy()
        targets[index] = picked[column].to_numpy(dtype=np.int64)  # for volume maps
    if "voxel_id" in picked.columns:
        targets["voxel_id"] = picked["voxel_id"].to_numpy()
    ceiling_column = _NOISE_CEILING_COLUMN.get(options.split)
    noise_ceiling = (
        picked[ceiling_column].to_numpy(dtype=np.float32)
        if ceiling_column is not None and ceiling_column in picked.columns
        else None
    )
    brain = BrainData(
        modality="fmri",
        subject=f"sub-{options.subject:02d}",
        data=data,
        stimulus_ids=groups.stimulus_ids,
        targets=targets,
        rois=roi_centroids(targets, midline_x=None),
        repeats=repeats,
        noise_ceiling=noise_ceiling,
        noise_ceiling_unit="percent",  # THINGS-data's nc_* columns: percent of variance
        affine=np.diag([options.voxel_size_mm] * 3 + [1.0]),  # the grid of x, y, z above
    )
    image_folder = options.images
    if image_folder is None and (root / "images").is_dir():
        image_folder = root / "images"
    stimuli = None if image_folder is None else find_images(groups.stimulus_ids, image_folder)
    return brain, stimuli
