"""The generic fMRI folder: read (:func:`load_fmri_folder`) and write (:func:`write_fmri_folder`).

Layout::

    responses.npy   (n_stimuli, n_targets) float
    stimuli.csv     stimulus_id (rows in the order of responses.npy) [+ image_path, relative
                    to the folder and inside it]; without image_path, images are looked up in
                    images/<id>.*
    targets.csv     roi, x, y, z (MNI mm; numbers, or empty when unknown) [+ hemi, ...], one
                    row per column of responses.npy
    rois.csv        optional: roi, x, y, z centroid + property columns
    repeats.npy     optional: (n_repeats, n_stimuli, n_targets)
    noise_ceiling.npy  optional: (n_targets,), in the unit info.json declares
    info.json       optional: {"subject": "sub-01", "noise_ceiling_unit": "percent" or
                    "fraction", "affine": 4 x 4 voxel-to-mm matrix of the grid indexed by the
                    targets' voxel_i, voxel_j, voxel_k columns (for volume maps)}

``image_path`` values must stay inside the folder (absolute paths and ``..`` out of it are
refused: :func:`brainalign.probe.stimuli.resolve_image_path`). The ``.npy`` files are read with
``allow_pickle=False``: a file of pickled Python objects is refused, never unpickled.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import BrainData, numeric_coordinates
from brainalign.probe.rois import read_roi_csv
from brainalign.probe.stimuli import StimulusSet, resolve_image_path, stimulus_id_strings
from brainalign.utils.atomic import atomic_directory
from brainalign.utils.npy import load_array
from brainalign.utils.reading import read_file

__all__ = ["load_fmri_folder", "write_fmri_folder"]


def _require_file(folder: Path, name: str, what: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: looked for {name} in {folder}")
    return path


def _read_info(folder: Path) -> dict:
    """The folder's optional ``info.json`` (an empty dict without one)."""
    path = folder / "info.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(info, dict) or ("subject" in info and not str(info["subject"]).strip()):
        raise ValueError(f'{path}: expected a JSON object such as {{"subject": "sub-01"}}')
    return info


def _folder_affine(info: dict, folder: Path) -> np.ndarray | None:
    if info.get("affine") is None:
        return None
    try:
        affine = np.asarray(info["affine"], dtype=np.float64)
    except (TypeError, ValueError):
        affine = np.empty(0)
    if affine.shape != (4, 4):
        raise ValueError(
            f"{folder / 'info.json'}: 'affine' must be a 4 x 4 list of numbers (voxel index to "
            f"mm); got {info['affine']!r}"
        )
    return affine


def _ceiling_unit(info: dict, folder: Path, has_ceiling: bool) -> str | None:
    unit = info.get("noise_ceiling_unit")
    if unit is not None and unit not in ("percent", "fraction"):
        raise ValueError(
            f"{folder / 'info.json'}: noise_ceiling_unit must be 'percent' or 'fraction'; got "
            f"{unit!r}"
        )
    if has_ceiling and unit is None:
        warnings.warn(
            f"{folder}: noise_ceiling.npy has no declared unit, so it is not used to normalise "
            'scores; add "noise_ceiling_unit": "percent" (or "fraction") to info.json',
            UserWarning,
            stacklevel=3,
        )
    return unit


def load_fmri_folder(path: str | Path, subject: str | None = None) -> tuple[BrainData, StimulusSet]:
    """Read an fMRI folder in the generic format (see the module docstring).

    Parameters
    ----------
    path : path to the folder
    subject : str, optional
        Default: ``subject`` of the folder's optional ``info.json``, else the folder's name.

    Returns
    -------
    brain : BrainData, modality "fmri"
    stimuli : StimulusSet aligned with ``brain.stimulus_ids``
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"fMRI folder not found: {folder}")
    responses_path = _require_file(folder, "responses.npy", "fMRI responses")
    stimuli_path = _require_file(folder, "stimuli.csv", "stimulus table")
    targets_path = _require_file(folder, "targets.csv", "targets table")

    responses = load_array(responses_path)
    if responses.ndim != 2:
        raise ValueError(
            f"{responses_path} must have shape (n_stimuli, n_targets); got {responses.shape}"
        )
    table = read_file(
        lambda: pd.read_csv(stimuli_path, dtype={"stimulus_id": str, "image_path": str}),
        stimuli_path,
        "a CSV stimulus table",
    )
    if "stimulus_id" not in table.columns:
        raise ValueError(
            f"{stimuli_path} lacks a 'stimulus_id' column; it has {list(table.columns)}"
        )
    if len(table) != responses.shape[0]:
        raise ValueError(
            f"{responses_path} has {responses.shape[0]} rows (stimuli) but {stimuli_path} "
            f"has {len(table)} rows; they must list the same stimuli in the same order"
        )
    targets = read_file(
        lambda: pd.read_csv(targets_path, dtype={"roi": str}), targets_path, "a CSV targets table"
    )
    if len(targets) != responses.shape[1]:
        raise ValueError(
            f"{responses_path} has {responses.shape[1]} columns (targets) but {targets_path} "
            f"has {len(targets)} rows; one row per column is needed"
        )
    missing_columns = [c for c in ("roi", "x", "y", "z") if c not in targets.columns]
    if missing_columns:
        raise ValueError(
            f"{targets_path} lacks the column(s) {missing_columns}; it has {list(targets.columns)}"
        )
    targets = numeric_coordinates(targets, where=str(targets_path))
    rois_path = folder / "rois.csv"
    rois = read_roi_csv(rois_path) if rois_path.is_file() else None
    repeats_path = folder / "repeats.npy"
    repeats = None
    if repeats_path.is_file():
        repeats = load_array(repeats_path)
    ceiling_path = folder / "noise_ceiling.npy"
    noise_ceiling = None
    if ceiling_path.is_file():
        noise_ceiling = load_array(ceiling_path)
    info = _read_info(folder)

    ids = stimulus_id_strings(table["stimulus_id"])
    brain = BrainData(
        modality="fmri",
        subject=subject if subject is not None else str(info.get("subject", folder.name)),
        data=responses,
        stimulus_ids=ids,
        targets=targets,
        rois=rois,
        repeats=repeats,
        noise_ceiling=noise_ceiling,
        noise_ceiling_unit=_ceiling_unit(info, folder, noise_ceiling is not None),
        affine=_folder_affine(info, folder),
    )
    if "image_path" in table.columns:
        paths = [
            resolve_image_path(
                folder, relative, where=f"{stimuli_path}, row {row + 1} (stimulus {ids[row]!r})"
            )
            for row, relative in enumerate(table["image_path"])
        ]
        stimuli = StimulusSet.from_paths(ids, paths)
    elif (folder / "images").is_dir():
        stimuli = StimulusSet.from_folder(folder / "images", ids)
    else:
        raise FileNotFoundError(
            f"no images for {folder}: give {stimuli_path.name} an 'image_path' column "
            f"(relative to the folder) or put <stimulus_id>.png files in {folder / 'images'}"
        )
    return brain, stimuli


def write_fmri_folder(
    path: str | Path,
    brain: BrainData,
    stimuli_table: pd.DataFrame,
    *,
    overwrite: bool = False,
) -> Path:
    """Write fMRI brain data in the generic folder format.

    The folder is written under a temporary name beside ``path``, then renamed, so a reader
    never sees half a folder.

    Parameters
    ----------
    path : path of the folder to create
    brain : BrainData, modality "fmri"
    stimuli_table : DataFrame
        ``stimulus_id`` in the order of ``brain.stimulus_ids``, with ``image_path`` relative to
        ``path`` (or other columns, kept as they are).
    overwrite : bool
        Replace an existing folder.

    Returns
    -------
    path : Path
    """
    destination = Path(path)
    if brain.modality != "fmri":
        raise ValueError(f"write_fmri_folder needs fMRI data; got {brain.modality!r}")
    if "stimulus_id" not in stimuli_table.columns:
        raise ValueError(
            f"stimuli_table lacks a 'stimulus_id' column; it has {list(stimuli_table.columns)}"
        )
    if [str(i) for i in stimuli_table["stimulus_id"]] != brain.stimulus_ids:
        raise ValueError(
            "stimuli_table['stimulus_id'] must list brain.stimulus_ids in the same order"
        )
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} exists; pass overwrite=True to replace it")
    with atomic_directory(destination, overwrite=overwrite) as temporary:
        np.save(temporary / "responses.npy", brain.data)
        info: dict = {"subject": brain.subject}
        if brain.noise_ceiling_unit is not None:
            info["noise_ceiling_unit"] = brain.noise_ceiling_unit
        if brain.affine is not None:
            info["affine"] = np.asarray(brain.affine).tolist()
        (temporary / "info.json").write_text(json.dumps(info))
        stimuli_table.to_csv(temporary / "stimuli.csv", index=False)
        brain.targets.to_csv(temporary / "targets.csv", index=False)
        if brain.rois is not None and len(brain.rois):
            brain.rois.to_csv(temporary / "rois.csv", index=False)
        if brain.repeats is not None:
            np.save(temporary / "repeats.npy", brain.repeats)
        if brain.noise_ceiling is not None:
            np.save(temporary / "noise_ceiling.npy", brain.noise_ceiling)
    return destination
