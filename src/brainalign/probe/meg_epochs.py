"""MEG epochs files: read (:func:`load_meg_epochs`) and write (:func:`write_meg_epochs`).

An MNE Epochs file ``*-epo.fif`` whose metadata has a ``stimulus_id`` column, one epoch per
trial; trials of one stimulus are averaged and kept as repeats. An optional metadata column
``image_path`` (relative to the file's folder, and inside it) lets
:func:`brainalign.probe.formats.load_brain` return the stimuli too.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import BrainData
from brainalign.probe.meg import (
    DEFAULT_MEG_PREPARATION,
    MEGPreparation,
    transform_epochs,
    zscore_trials,
)
from brainalign.probe.stimuli import stimulus_id_strings
from brainalign.utils.atomic import atomic_path
from brainalign.utils.reading import read_file

__all__ = [
    "EPOCHS_SUFFIXES",
    "is_epochs_file",
    "load_meg_epochs",
    "load_meg_epochs_with_metadata",
    "read_meg",
    "write_meg_epochs",
]

EPOCHS_SUFFIXES = ("-epo.fif", "_epo.fif", "-epo.fif.gz", "_epo.fif.gz")


def is_epochs_file(path: Path) -> bool:
    return path.name.endswith(EPOCHS_SUFFIXES)


def read_meg(
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
    trial_ids = np.array(stimulus_id_strings(metadata["stimulus_id"]), dtype=object)

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
    brain, _ = read_meg(path, preparation, subject)
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
    return read_meg(path, preparation, subject)


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
    if not is_epochs_file(destination):
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
