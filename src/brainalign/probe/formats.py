"""Generic brain-data formats, and :func:`load_brain`, which picks the loader from a spec.

fMRI folder::

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

MEG: an MNE Epochs file ``*-epo.fif`` whose metadata has a ``stimulus_id`` column, one epoch
per trial; trials of one stimulus are averaged and kept as repeats. An optional metadata column
``image_path`` (relative to the file's folder) lets :func:`load_brain` return the stimuli too.

``image_path`` values must stay inside the folder of the table (or epochs file) that holds
them: absolute paths and ``..`` out of it are refused (see
:func:`brainalign.probe.stimuli.resolve_image_path`). The ``.npy`` files are read with
``allow_pickle=False``: a file of pickled Python objects is refused, never unpickled.

Example::

    brain, stimuli = load_brain("my_fmri_folder")
    brain, stimuli = load_brain("sub-01-epo.fif")  # stimuli is None without image_path
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import BrainData, numeric_coordinates
from brainalign.probe.meg import (
    DEFAULT_MEG_PREPARATION,
    MEGPreparation,
    transform_epochs,
    zscore_trials,
)
from brainalign.probe.rois import read_roi_csv
from brainalign.probe.stimuli import StimulusSet, resolve_image_path
from brainalign.utils.atomic import atomic_directory, atomic_path
from brainalign.utils.npy import load_array
from brainalign.utils.reading import read_file

__all__ = [
    "BrainLoader",
    "load_brain",
    "load_fmri_folder",
    "load_meg_epochs",
    "load_meg_epochs_with_metadata",
    "register_brain_loader",
    "write_fmri_folder",
    "write_meg_epochs",
]

EPOCHS_SUFFIXES = ("-epo.fif", "_epo.fif", "-epo.fif.gz", "_epo.fif.gz")

BrainLoader = Callable[..., tuple[BrainData, StimulusSet | None]]
"""A loader: ``loader(location: str, *, subject, meg_preparation) -> (BrainData, stimuli)``."""


# ---------------------------------------------------------------------- fMRI folder
def _require_file(folder: Path, name: str, what: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: looked for {name} in {folder}")
    return path


def _read_ids(column: pd.Series) -> list[str]:
    """Stimulus ids as strings (integer-valued numbers without a trailing '.0')."""
    if pd.api.types.is_float_dtype(column) and np.all(np.mod(column.dropna(), 1) == 0):
        column = column.astype("Int64")
    return [str(value) for value in column]


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

    ids = _read_ids(table["stimulus_id"])
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


# ---------------------------------------------------------------------- MEG epochs
def _is_epochs_file(path: Path) -> bool:
    return path.name.endswith(EPOCHS_SUFFIXES)


def _read_meg(
    path: str | Path, preparation: MEGPreparation, subject: str | None
) -> tuple[BrainData, pd.DataFrame]:
    """Read and prepare MEG epochs; also return the first metadata row of each stimulus."""
    import mne

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MEG epochs file not found: {path}")
    with warnings.catch_warnings():
        # MNE's metadata reader calls a pandas method deprecated in pandas 3 (harmless)
        warnings.filterwarnings("ignore", message="The inplace keyword", module="mne")
        epochs = read_file(
            lambda: mne.read_epochs(path, preload=True, verbose="error"),
            path,
            "an MNE Epochs .fif file",
        )
    metadata = epochs.metadata
    if metadata is None or "stimulus_id" not in metadata.columns:
        present = [] if metadata is None else list(metadata.columns)
        raise ValueError(
            f"{path}: the epochs metadata needs a 'stimulus_id' column naming each trial's "
            f"image; metadata columns present: {present}"
        )
    metadata = metadata.reset_index(drop=True)
    has_id = metadata["stimulus_id"].notna() & (metadata["stimulus_id"].astype(str) != "")
    if not has_id.all():
        warnings.warn(
            f"{path}: dropped {int((~has_id).sum())} of {len(has_id)} epochs without a "
            "stimulus_id (e.g. catch trials)",
            UserWarning,
            stacklevel=3,
        )
        epochs = epochs[np.flatnonzero(has_id.to_numpy())]
        metadata = metadata[has_id].reset_index(drop=True)
    if len(epochs) == 0:
        raise ValueError(f"{path}: no epoch has a stimulus_id")
    trial_ids = np.array(_read_ids(metadata["stimulus_id"]), dtype=object)

    prepared = transform_epochs(epochs, preparation)
    trials = prepared.get_data(copy=False)  # (n_trials, C, T)
    trials = zscore_trials(trials) if preparation.zscore else trials.astype(np.float32)

    stimulus_ids = list(dict.fromkeys(trial_ids))  # order of first appearance
    trial_rows = [np.flatnonzero(trial_ids == stimulus_id) for stimulus_id in stimulus_ids]
    counts = np.array([len(rows) for rows in trial_rows])
    if not preparation.average_repeats and counts.max() > 1:
        repeated = [s for s, count in zip(stimulus_ids, counts) if count > 1]
        raise ValueError(
            f"{path}: {len(repeated)} stimuli appear in several epochs (e.g. {repeated[:3]}); "
            "BrainData has one row per stimulus: use MEGPreparation(average_repeats=True)"
        )
    data = np.stack([trials[rows].mean(axis=0) for rows in trial_rows])  # (n_stimuli, C, T)
    repeats = None
    if counts.min() > 1 and counts.min() == counts.max():
        repeats = np.stack([trials[rows] for rows in trial_rows], axis=1)  # (R, n, C, T)
    elif counts.max() > 1:
        warnings.warn(
            f"{path}: stimuli have between {counts.min()} and {counts.max()} epochs; repeats are "
            "averaged but not kept (noise ceilings need the same count for every stimulus)",
            UserWarning,
            stacklevel=3,
        )
    channel_types = prepared.get_channel_types()
    targets = pd.DataFrame({"channel": prepared.ch_names, "ch_type": channel_types})
    brain = BrainData(
        modality="meg",
        subject=subject if subject is not None else _meg_subject_name(path),
        data=data,
        times=prepared.times.copy(),
        stimulus_ids=stimulus_ids,
        targets=targets,
        repeats=repeats,
        info=prepared.info,
    )
    first_rows = metadata.iloc[[rows[0] for rows in trial_rows]].reset_index(drop=True)
    first_rows["stimulus_id"] = stimulus_ids
    return brain, first_rows


def _meg_subject_name(path: Path) -> str:
    name = path.name
    for suffix in EPOCHS_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_meg_epochs(
    path: str | Path,
    *,
    preparation: MEGPreparation = DEFAULT_MEG_PREPARATION,
    subject: str | None = None,
) -> BrainData:
    """Read an MNE ``-epo.fif`` with a ``stimulus_id`` metadata column.

    Parameters
    ----------
    path : path to the epochs file
    preparation : MEGPreparation
        Picks, baseline, resampling, crop and z-scoring (z-scoring runs on single trials,
        before repeats are averaged).
    subject : str, optional
        Default: the file name without ``-epo.fif``.

    Returns
    -------
    brain : BrainData, modality "meg", data of shape (n_stimuli, n_channels, n_times)
        Stimuli in the order of their first epoch; ``repeats`` of shape
        (n_repeats, n_stimuli, n_channels, n_times) when every stimulus has the same number
        (> 1) of epochs.
    """
    brain, _ = _read_meg(path, preparation, subject)
    return brain


def load_meg_epochs_with_metadata(
    path: str | Path,
    *,
    preparation: MEGPreparation = DEFAULT_MEG_PREPARATION,
    subject: str | None = None,
) -> tuple[BrainData, pd.DataFrame]:
    """:func:`load_meg_epochs`, plus the metadata row of each stimulus's first epoch.

    For word-locked MEG the metadata carry the words themselves (``word``, ``story``,
    ``pos``...), so the epochs file is also the word table.

    Returns
    -------
    brain : BrainData
    metadata : DataFrame, one row per stimulus in ``brain.stimulus_ids`` order
    """
    return _read_meg(path, preparation, subject)


def write_meg_epochs(
    path: str | Path,
    data: np.ndarray,
    times: np.ndarray,
    ch_names: Sequence[str],
    sfreq: float,
    stimulus_ids: Sequence[str],
    *,
    ch_types: str | Sequence[str] = "mag",
    metadata: pd.DataFrame | None = None,
    fmt: str = "single",
    overwrite: bool = False,
    montage: str | None = None,
) -> Path:
    """Write single trials as an MNE epochs file with a ``stimulus_id`` metadata column.

    Parameters
    ----------
    path : path ending in ``-epo.fif`` (or ``_epo.fif``)
    data : ndarray of shape (n_trials, n_channels, n_times), in SI units (T for "mag")
    times : ndarray of shape (n_times,), seconds, spaced by 1 / sfreq
    ch_names : sequence of str of length n_channels
    sfreq : float, Hz
    stimulus_ids : sequence of str of length n_trials (repeats share an id)
    ch_types : str or sequence of str
    metadata : DataFrame with n_trials rows, optional
        Extra trial columns (``image_path``, condition...); ``stimulus_id`` is set from
        ``stimulus_ids``.
    fmt : {"single", "double"}
        Precision on disk.
    overwrite : bool
    montage : str, optional
        An MNE standard montage (``mne.channels.make_standard_montage``, e.g. ``biosemi32``)
        whose first ``n_channels`` positions become the sensors' locations, in order, so
        that topomaps can be drawn (the simulated subject's sensors have no real positions).

    Returns
    -------
    path : Path

    Notes
    -----
    The file is written under a temporary name in the same folder, then renamed. Files over
    MNE's 2 GB split size are not supported here (MNE would split them into parts).
    """
    import mne

    destination = Path(path)
    if not _is_epochs_file(destination):
        raise ValueError(f"MNE epochs file names end in -epo.fif; got {destination.name}")
    data = np.asarray(data, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if data.ndim != 3:
        raise ValueError(f"data must have shape (n_trials, n_channels, n_times); got {data.shape}")
    n_trials, n_channels, n_times = data.shape
    if times.shape != (n_times,):
        raise ValueError(f"data has {n_times} time points but times has shape {times.shape}")
    if n_times > 1 and not np.allclose(np.diff(times), 1.0 / sfreq, rtol=1e-6, atol=1e-9):
        raise ValueError(f"times must be spaced by 1 / sfreq = {1.0 / sfreq} s")
    if len(ch_names) != n_channels:
        raise ValueError(f"data has {n_channels} channels but {len(ch_names)} names were given")
    if len(stimulus_ids) != n_trials:
        raise ValueError(f"data has {n_trials} trials but {len(stimulus_ids)} stimulus ids")
    trial_table = pd.DataFrame(index=range(n_trials)) if metadata is None else metadata.copy()
    if len(trial_table) != n_trials:
        raise ValueError(f"metadata has {len(trial_table)} rows; {n_trials} trials expected")
    trial_table = trial_table.reset_index(drop=True)
    trial_table["stimulus_id"] = [str(i) for i in stimulus_ids]
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} exists; pass overwrite=True to replace it")

    info = mne.create_info(list(ch_names), sfreq, ch_types=ch_types, verbose="error")
    if montage is not None:
        _place_sensors(info, montage)
    epochs = mne.EpochsArray(
        data, info, tmin=float(times[0]), metadata=trial_table, baseline=None, verbose="error"
    )
    suffix = next(end for end in EPOCHS_SUFFIXES if destination.name.endswith(end))
    with atomic_path(destination, suffix=suffix) as temporary:
        epochs.save(temporary, fmt=fmt, overwrite=True, verbose="error")
    return destination


def _place_sensors(info: Any, montage: str) -> None:
    """Give the channels of ``info`` the first positions of a standard montage (in place)."""
    import mne

    positions = list(mne.channels.make_standard_montage(montage).get_positions()["ch_pos"].values())
    if len(positions) < len(info["chs"]):
        raise ValueError(
            f"montage {montage!r} has {len(positions)} positions for {len(info['chs'])} channels"
        )
    for channel, position in zip(info["chs"], positions):
        channel["loc"][:3] = position  # head coordinates, m
        channel["loc"][3:12] = np.eye(3).ravel()  # a sensor orientation (unused by topomaps)


# ---------------------------------------------------------------------- dispatch
_PREFIX_LOADERS: dict[str, BrainLoader] = {}


def register_brain_loader(prefix: str, loader: BrainLoader) -> None:
    """Make ``load_brain("<prefix>:<location>")`` call ``loader(location, **options)``.

    Parameters
    ----------
    prefix : str
        Letters, digits and dashes, e.g. ``"nsd"`` or ``"things-meg"``.
    loader : callable
        ``loader(location: str, *, subject, meg_preparation) -> (BrainData, StimulusSet | None)``
    """
    if len(prefix) < 2 or not prefix.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"a loader prefix is 2+ letters, digits or dashes; got {prefix!r}")
    _PREFIX_LOADERS[prefix.lower()] = loader


def _load_fmri_path(
    location: str, *, subject: str | None, meg_preparation: MEGPreparation | None
) -> tuple[BrainData, StimulusSet | None]:
    return load_fmri_folder(location, subject=subject)


def _load_meg_path(
    location: str, *, subject: str | None, meg_preparation: MEGPreparation | None
) -> tuple[BrainData, StimulusSet | None]:
    preparation = meg_preparation if meg_preparation is not None else DEFAULT_MEG_PREPARATION
    brain, first_rows = _read_meg(location, preparation, subject)
    if "image_path" not in first_rows.columns:
        return brain, None
    folder = Path(location).parent
    paths = [
        resolve_image_path(
            folder, relative, where=f"{location} (epochs metadata, stimulus {stimulus_id!r})"
        )
        for stimulus_id, relative in zip(brain.stimulus_ids, first_rows["image_path"])
    ]
    return brain, StimulusSet.from_paths(brain.stimulus_ids, paths)


_PATH_LOADERS: list[tuple[str, Callable[[Path], bool], BrainLoader]] = [
    (
        "a folder with responses.npy (fMRI)",
        lambda p: (p / "responses.npy").is_file(),
        _load_fmri_path,
    ),
    ("a *-epo.fif file (MEG epochs)", lambda p: p.is_file() and _is_epochs_file(p), _load_meg_path),
]


def load_brain(
    spec: str | Path,
    *,
    subject: str | None = None,
    meg_preparation: MEGPreparation | None = None,
) -> tuple[BrainData, StimulusSet | None]:
    """Load brain data from a path or a ``prefix:location`` spec.

    Parameters
    ----------
    spec : str or Path
        A folder with ``responses.npy`` (fMRI), a ``*-epo.fif`` file (MEG), or
        ``<prefix>:<location>?<options>`` for a loader added with
        :func:`register_brain_loader` (the named data sets ``nsd``, ``algonauts2023``,
        ``things-fmri`` and ``things-meg`` are always available; option syntax in
        :mod:`brainalign.probe.datasets.spec`). Every spec, paths included, accepts
        ``?roi_properties=a.csv,b.csv``: per-ROI property tables merged into ``brain.rois``.
    subject : str, optional
    meg_preparation : MEGPreparation, optional
        For MEG; default ``MEGPreparation()``.

    Returns
    -------
    brain : BrainData
    stimuli : StimulusSet aligned with the brain data, or None when the format does not say
        where the images are.
    """
    import brainalign.probe.datasets  # noqa: F401  (registers the named data set loaders)
    from brainalign.probe.datasets.spec import apply_roi_properties, pop_common_options

    text, roi_properties = pop_common_options(spec)
    brain, stimuli = _dispatch_brain(text, subject=subject, meg_preparation=meg_preparation)
    return apply_roi_properties(brain, roi_properties), stimuli


def _dispatch_brain(
    text: str, *, subject: str | None, meg_preparation: MEGPreparation | None
) -> tuple[BrainData, StimulusSet | None]:
    loader, location = _resolve_loader(text)
    return loader(location, subject=subject, meg_preparation=meg_preparation)


def _resolve_loader(text: str) -> tuple[BrainLoader, str]:
    """The loader of a spec and the location it receives (nothing is read)."""
    prefix, separator, location = text.partition(":")
    if separator and prefix.lower() in _PREFIX_LOADERS:
        return _PREFIX_LOADERS[prefix.lower()], location
    path = Path(text)
    expected = "; or ".join(
        [description for description, _, _ in _PATH_LOADERS]
        + [f"'{name}:...'" for name in sorted(_PREFIX_LOADERS)]
    )
    if not path.exists():
        raise FileNotFoundError(f"brain data not found: {path} (expected {expected})")
    for _, matches, loader in _PATH_LOADERS:
        if matches(path):
            return loader, text
    raise ValueError(f"unknown brain data format: {path}; expected {expected}")


def check_brain_spec(spec: str | Path) -> None:
    """Cheap checks of a brain data spec, before anything is read or written.

    The format must be known, and the file or folder it names must exist (for named data sets,
    the location before ``?``). Options are checked when the data set is loaded.

    Raises
    ------
    FileNotFoundError, ValueError
        The same errors :func:`load_brain` would raise for these mistakes.
    """
    import brainalign.probe.datasets  # noqa: F401  (registers the named data set loaders)
    from brainalign.probe.datasets.spec import pop_common_options

    text, _ = pop_common_options(spec)
    loader, location = _resolve_loader(text)
    if loader in _PREFIX_LOADERS.values():
        folder = Path(location.split("?", 1)[0])
        if not folder.exists():
            raise FileNotFoundError(f"brain data {str(spec)!r}: {folder} does not exist")
