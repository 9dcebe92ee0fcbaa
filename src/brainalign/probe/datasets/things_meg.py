"""THINGS-MEG (OpenNeuro ds004212): raw BIDS runs or the authors' preprocessed epochs.

Specs::

    things-meg:/data/ds004212?subject=1&onsets=trigger        raw runs, Study A preprocessing
    things-meg:/data/ds004212?subject=1&source=epochs         derivatives/preprocessed/...-epo.fif
    things-meg:/data/preprocessed_P1-epo.fif                  the authors' epochs file
    things-meg:/data/ds004212?subject=average&onsets=trigger  grand average over subjects

Options: :class:`ThingsMegOptions`.

Raw runs (``source=bids``) are found with mne-bids (``sub-BIGMEGn/ses-NN/meg/
*_task-main_run-NN_meg.ds``; ``.fif`` runs are read the same way) and matched, run by run and in
order, to the rows of ``sourcedata/sample_attributes_P{n}.csv`` (session_nr, run_nr,
trial_type, image_path). Each run is: channels picked (``picks``, default ``mag``: the CTF
axial gradiometers, without reference channels), band-passed ``l_freq``-``h_freq`` (0.1-20 Hz),
resampled to ``raw_resample_hz`` (120 Hz, onsets moved with it), cut into epochs ``tmin``..
``tmax`` (-0.5..3 s, no baseline) around the image onsets, then prepared with
:class:`~brainalign.probe.meg.MEGPreparation` (default: resample to 30 Hz); after all runs, each
(channel, time) is z-scored across trials, and trials of one image averaged. Catch trials
(``trial_type == "catch"``) are dropped.

Onsets (``onsets``, required for raw runs, because public pipelines disagree):

- ``trigger``: the hardware trigger channel ``UPPT001`` (events with value 64);
- ``events``: the ``onset`` column (seconds from the start of the file) of each run's BIDS
  ``_events.tsv``; one public loader finds these ~150 ms later than the trigger.

The authors' epochs (``source=epochs``) are -0.1..1.3 s at 200 Hz, band-passed 0.1-40 Hz and
baseline-z-scored by them: the Study A window cannot be rebuilt from them; only
:class:`MEGPreparation` (resample to 30 Hz, crop, z-score across trials) is applied. Their
metadata (the sample attributes table) names the images.

Stimulus ids are image file name stems (``aardvark_01b``); images come from ``images=<THINGS
image folder>`` (looked up at ``images/<image_path>`` then by stem), else stimuli are None.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import BrainData
from brainalign.probe.datasets._common import (
    average_trials,
    find_images,
    group_trials,
    require_dir,
    require_file,
)
from brainalign.probe.meg import MEGPreparation, transform_epochs, zscore_trials
from brainalign.probe.stimuli import StimulusSet

if TYPE_CHECKING:
    import mne

__all__ = [
    "THINGS_MEG_PREPARATION",
    "ThingsMegOptions",
    "load_things_meg",
    "things_meg_preparation",
]

THINGS_MEG_PREPARATION = MEGPreparation(resample_hz=30.0, zscore=True, picks="mag")
"""Epoch-level steps of Study A after epoching: 30 Hz, z-score across trials per channel/time."""

PREPARATION_OPTIONS = ("resample_hz", "zscore", "picks")
"""Options that set fields of the MEGPreparation."""

_ATTRIBUTE_COLUMNS = ("session_nr", "run_nr", "trial_type", "image_path")


@dataclass(frozen=True)
class ThingsMegOptions:
    """Options of the THINGS-MEG loader.

    Parameters
    ----------
    subject : str
        ``1``..``4`` (``BIGMEG1``, ``P1`` also accepted) or ``average`` (required unless the
        location is an epochs file).
    subjects : tuple of int
        Subjects of the grand average.
    source : {"bids", "epochs"}
        Raw BIDS runs, or ``derivatives/preprocessed/preprocessed_P{n}-epo.fif``.
    onsets : {"trigger", "events"}, optional
        Onset source for raw runs (required there).
    sessions, runs : tuple of int, optional
        Raw runs to read; default all found.
    split : {"train", "test", "all"}
        ``test``: the 200 images shown 12 times (repeats kept); ``train``: the others.
    task : str
    l_freq, h_freq : float, optional
        Band-pass of the raw runs (Hz); none skips that edge.
    tmin, tmax : float
        Epoch window around onsets (s).
    raw_resample_hz : float, optional
        Rate of the raw runs before epoching (moves onsets to the nearest new sample); none
        keeps the recorded rate.
    resample_hz : float, optional
        Final rate (MEGPreparation.resample_hz).
    zscore : bool
        Z-score each (channel, time) across trials (MEGPreparation.zscore).
    picks : str
        MNE channel type to keep (MEGPreparation.picks): ``mag`` keeps the CTF axial
        gradiometers and leaves out reference channels.
    trigger_channel : str
    trigger_value : int
    keep_repeats : bool
    images : Path, optional
        THINGS image folder.
    """

    subject: str | None = None
    subjects: tuple[int, ...] = (1, 2, 3, 4)
    source: Literal["bids", "epochs"] = "bids"
    onsets: Literal["trigger", "events"] | None = None
    sessions: tuple[int, ...] | None = None
    runs: tuple[int, ...] | None = None
    split: Literal["train", "test", "all"] = "all"
    task: str = "main"
    l_freq: float | None = 0.1
    h_freq: float | None = 20.0
    tmin: float = -0.5
    tmax: float = 3.0
    raw_resample_hz: float | None = 120.0
    resample_hz: float | None = 30.0
    zscore: bool = True
    picks: str = "mag"
    trigger_channel: str = "UPPT001"
    trigger_value: int = 64
    keep_repeats: bool = True
    images: Path | None = None

    def __post_init__(self) -> None:
        if self.tmin >= self.tmax:
            raise ValueError(f"tmin ({self.tmin}) must be below tmax ({self.tmax})")
        for name in ("l_freq", "h_freq", "raw_resample_hz", "resample_hz"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or none; got {value}")
        if self.l_freq and self.h_freq and self.l_freq >= self.h_freq:
            raise ValueError(f"l_freq ({self.l_freq}) must be below h_freq ({self.h_freq})")
        if not self.subjects:
            raise ValueError("subjects needs at least one subject for the grand average")


def things_meg_preparation(
    options: ThingsMegOptions,
    base: MEGPreparation | None = None,
    given: tuple[str, ...] = PREPARATION_OPTIONS,
) -> MEGPreparation:
    """The MEGPreparation for these options.

    Parameters
    ----------
    options : ThingsMegOptions
    base : MEGPreparation, optional
        A caller's preparation (``load_brain(..., meg_preparation=...)``); default the options'
        own ``resample_hz``, ``zscore`` and ``picks``.
    given : tuple of str
        The preparation options written in the spec; they override ``base``.
    """
    if base is None:
        return MEGPreparation(
            resample_hz=options.resample_hz, zscore=options.zscore, picks=options.picks
        )
    overrides = {name: getattr(options, name) for name in PREPARATION_OPTIONS if name in given}
    return replace(base, **overrides)


def _subject_number(text: str) -> int:
    cleaned = str(text).strip().lower()
    for head in ("bigmeg", "sub-bigmeg", "p", "sub-"):
        if cleaned.startswith(head) and cleaned[len(head) :].isdigit():
            cleaned = cleaned[len(head) :]
    if not cleaned.isdigit() or not 1 <= int(cleaned) <= 4:
        raise ValueError(f"THINGS-MEG subject must be 1..4 or 'average'; got {text!r}")
    return int(cleaned)


# ---------------------------------------------------------------------- trial tables
def _read_attributes(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path)
    missing = [column for column in _ATTRIBUTE_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; it has {list(table.columns)}")
    return table


def _stimulus_ids(image_paths: pd.Series) -> list[str]:
    return [Path(str(path)).stem for path in image_paths]


def _keep_trials(trial_types: pd.Series, split: str) -> np.ndarray:
    """Trials to keep: not catch, and in the split."""
    types = trial_types.astype(str).str.lower()
    keep = (types != "catch").to_numpy().copy()
    if split == "test":
        keep &= (types == "test").to_numpy()
    elif split == "train":
        keep &= (types != "test").to_numpy()
    return keep


# ---------------------------------------------------------------------- raw BIDS runs
@dataclass(frozen=True)
class _Run:
    bids_path: Any  # mne_bids.BIDSPath
    session: int
    run: int
    attribute_rows: np.ndarray  # rows of the sample attributes table, in trial order

    @property
    def label(self) -> str:
        return f"session {self.session:02d} run {self.run:02d}"

    @property
    def events_tsv(self) -> Path:
        return Path(
            str(self.bids_path.fpath).removesuffix(self.bids_path.fpath.suffix).removesuffix("_meg")
            + "_events.tsv"
        )


def _find_runs(
    root: Path, subject: int, options: ThingsMegOptions, attributes: pd.DataFrame
) -> list[_Run]:
    import mne_bids

    matches = mne_bids.find_matching_paths(
        root,
        subjects=f"BIGMEG{subject}",
        tasks=options.task,
        datatypes="meg",
        suffixes="meg",
        extensions=[".ds", ".fif"],
    )
    if not matches:
        raise FileNotFoundError(
            f"no MEG runs for sub-BIGMEG{subject}, task {options.task!r} under {root} "
            f"(looked for sub-BIGMEG{subject}/ses-*/meg/*_task-{options.task}_run-*_meg.ds|.fif)"
        )
    found = {(int(path.session), int(path.run)): path for path in matches}
    wanted = sorted(found)
    if options.sessions is not None:
        wanted = [key for key in wanted if key[0] in options.sessions]
        absent = sorted(set(options.sessions) - {key[0] for key in found})
        if absent:
            raise ValueError(
                f"sub-BIGMEG{subject} has no session(s) {absent} under {root}; sessions found: "
                f"{sorted({key[0] for key in found})}"
            )
    if options.runs is not None:
        wanted = [key for key in wanted if key[1] in options.runs]
        if not wanted:
            raise ValueError(
                f"sub-BIGMEG{subject} has no run {list(options.runs)} in the chosen sessions; "
                f"runs found: {sorted({key[1] for key in found})}"
            )
    runs = []
    sessions = attributes["session_nr"].to_numpy(dtype=np.int64)
    run_numbers = attributes["run_nr"].to_numpy(dtype=np.int64)
    for session, run in wanted:
        rows = np.flatnonzero((sessions == session) & (run_numbers == run))
        if rows.size == 0:
            raise ValueError(
                f"sample attributes of subject {subject} list no trial for session {session} "
                f"run {run}, which exists in the BIDS folder"
            )
        runs.append(_Run(found[(session, run)], session, run, rows))
    if options.onsets == "events":
        for run in runs:
            require_file(
                run.events_tsv,
                f"BIDS events of {run.label}",
                "onsets=events reads the onset column of each run's _events.tsv; use "
                "onsets=trigger to read the trigger channel instead",
            )
    return runs


def _onset_samples(raw: mne.io.BaseRaw, run: _Run, options: ThingsMegOptions) -> np.ndarray:
    """Image onsets of one run as absolute sample numbers (with first_samp), in trial order."""
    import mne

    if options.onsets == "trigger":
        if options.trigger_channel not in raw.ch_names:
            raise ValueError(
                f"{run.bids_path.fpath}: no trigger channel {options.trigger_channel!r}; use "
                "onsets=events (the BIDS events.tsv) or trigger_channel=<name>"
            )
        events = mne.find_events(
            raw, stim_channel=options.trigger_channel, initial_event=True, verbose="error"
        )
        samples = events[events[:, 2] == options.trigger_value, 0]
        source = f"{options.trigger_channel} events of value {options.trigger_value}"
    else:
        table = pd.read_csv(run.events_tsv, sep="\t")
        if "onset" not in table.columns:
            raise ValueError(f"{run.events_tsv} has no 'onset' column: {list(table.columns)}")
        onsets = pd.to_numeric(table["onset"], errors="coerce").to_numpy()
        if np.isnan(onsets).any():
            raise ValueError(
                f"{run.events_tsv}: {int(np.isnan(onsets).sum())} rows have no numeric onset "
                "(n/a); onsets=events needs one onset per trial"
            )
        samples = raw.first_samp + np.rint(onsets * raw.info["sfreq"]).astype(np.int64)
        source = f"rows of {run.events_tsv.name}"
    if samples.size != run.attribute_rows.size:
        raise ValueError(
            f"{run.label}: {samples.size} onsets ({source}) but the sample attributes list "
            f"{run.attribute_rows.size} trials; they must match one to one"
        )
    return samples.astype(np.int64)


def _epoch_run(
    run: _Run,
    keep: np.ndarray,
    options: ThingsMegOptions,
    preparation: MEGPreparation,
) -> tuple[np.ndarray, np.ndarray, mne.Epochs]:
    """Prepared trials of one run: (data (n, C, T), kept attribute rows, epochs)."""
    import mne
    import mne_bids

    raw = mne_bids.read_raw_bids(run.bids_path, verbose="error")
    samples = _onset_samples(raw, run, options)
    trial_keep = keep[run.attribute_rows]
    events = np.column_stack([samples, np.zeros_like(samples), np.arange(1, samples.size + 1)])[
        trial_keep
    ]  # event value = 1-based trial position in the run
    if events.shape[0] == 0:
        return np.zeros((0,)), np.zeros(0, dtype=np.int64), None
    picks = list(preparation.picks) if isinstance(preparation.picks, tuple) else preparation.picks
    raw.pick("data" if picks is None else picks, exclude="bads")
    raw.load_data(verbose="error")
    if options.l_freq is not None or options.h_freq is not None:
        raw.filter(options.l_freq, options.h_freq, verbose="error")
    if options.raw_resample_hz is not None and options.raw_resample_hz != raw.info["sfreq"]:
        raw, events = raw.resample(options.raw_resample_hz, events=events, verbose="error")
    epochs = mne.Epochs(
        raw,
        events,
        tmin=options.tmin,
        tmax=options.tmax,
        baseline=None,
        preload=True,
        event_repeated="error",
        on_missing="ignore",
        verbose="error",
    )
    kept_positions = epochs.events[:, 2] - 1
    if len(kept_positions) < events.shape[0]:
        warnings.warn(
            f"{run.label}: {events.shape[0] - len(kept_positions)} epochs reach past the "
            "recording (or bad segments) and were dropped",
            UserWarning,
            stacklevel=3,
        )
    prepared = transform_epochs(epochs, replace(preparation, zscore=False))
    data = prepared.get_data(copy=False).astype(np.float32)  # (n, C, T)
    return data, run.attribute_rows[kept_positions], prepared


def _read_bids(
    root: Path, subject: int, options: ThingsMegOptions, preparation: MEGPreparation
) -> tuple[np.ndarray, pd.DataFrame, mne.Epochs]:
    if options.onsets is None:
        raise ValueError(
            "THINGS-MEG raw runs need an explicit onset source: add onsets=trigger (hardware "
            f"channel {options.trigger_channel}) or onsets=events (BIDS events.tsv onsets, "
            "reported ~150 ms later than the trigger by one public loader)"
        )
    require_dir(
        root / f"sub-BIGMEG{subject}",
        f"THINGS-MEG subject {subject}",
        f"subjects present: {sorted(p.name for p in root.glob('sub-*'))}",
    )
    attributes_path = require_file(
        root / "sourcedata" / f"sample_attributes_P{subject}.csv",
        f"THINGS-MEG trial table of subject {subject}",
    )
    attributes = _read_attributes(attributes_path)
    runs = _find_runs(root, subject, options, attributes)
    keep = _keep_trials(attributes["trial_type"], options.split)
    blocks, rows, channel_lists, last_epochs = [], [], [], None
    for run in runs:
        data, kept_rows, epochs = _epoch_run(run, keep, options, preparation)
        if epochs is None:
            continue
        blocks.append(data)
        rows.append(kept_rows)
        channel_lists.append(list(epochs.ch_names))
        last_epochs = epochs
    if not blocks:
        raise ValueError(f"THINGS-MEG subject {subject}: no {options.split} trial in the runs read")
    common = [name for name in channel_lists[0] if all(name in names for names in channel_lists)]
    if any(names != common for names in channel_lists):
        dropped = sorted({name for names in channel_lists for name in names} - set(common))
        warnings.warn(
            f"THINGS-MEG subject {subject}: runs differ in their (good) channels; keeping the "
            f"{len(common)} channels every run has, dropping {dropped}",
            UserWarning,
            stacklevel=3,
        )
        blocks = [
            block[:, [names.index(name) for name in common]]
            for block, names in zip(blocks, channel_lists)
        ]
        last_names = channel_lists[-1]
        last_epochs = last_epochs.copy().pick([last_names.index(name) for name in common])
    trials = np.concatenate(blocks)  # (n_trials, C, T)
    table = attributes.iloc[np.concatenate(rows)].reset_index(drop=True)
    return trials, table, last_epochs


# ---------------------------------------------------------------------- epochs files
def _read_epochs_file(
    path: Path, options: ThingsMegOptions, preparation: MEGPreparation
) -> tuple[np.ndarray, pd.DataFrame, mne.Epochs]:
    import mne

    require_file(path, "THINGS-MEG preprocessed epochs")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The inplace keyword", module="mne")
        epochs = mne.read_epochs(path, preload=True, verbose="error")
    metadata = epochs.metadata
    needed = ("trial_type", "image_path")
    if metadata is None or any(column not in metadata.columns for column in needed):
        present = [] if metadata is None else list(metadata.columns)
        raise ValueError(
            f"{path}: the epochs metadata needs {list(needed)} (the sample attributes table); "
            f"metadata columns present: {present}"
        )
    metadata = metadata.reset_index(drop=True)
    keep = np.flatnonzero(_keep_trials(metadata["trial_type"], options.split))
    if keep.size == 0:
        raise ValueError(f"{path}: no {options.split} epoch")
    epochs = epochs[keep]
    prepared = transform_epochs(epochs, replace(preparation, zscore=False))
    trials = prepared.get_data(copy=False).astype(np.float32)  # (n, C, T)
    return trials, metadata.iloc[keep].reset_index(drop=True), prepared


# ---------------------------------------------------------------------- loader
def _load_one(
    location: Path,
    subject: int | None,
    options: ThingsMegOptions,
    preparation: MEGPreparation,
) -> tuple[BrainData, StimulusSet | None]:
    if location.is_file():
        trials, table, epochs = _read_epochs_file(location, options, preparation)
        named = re.search(r"_P(\d+)-epo", location.name)
        if subject is None and named is not None:
            subject = int(named.group(1))
        fallback = location.name.split("-epo")[0].split("_epo")[0]
        subject_name = f"BIGMEG{subject}" if subject is not None else fallback
    elif options.source == "epochs":
        if subject is None:
            raise ValueError("THINGS-MEG needs a subject: add ?subject=N (1..4)")
        path = location / "derivatives" / "preprocessed" / f"preprocessed_P{subject}-epo.fif"
        trials, table, epochs = _read_epochs_file(path, options, preparation)
        subject_name = f"BIGMEG{subject}"
    else:
        if subject is None:
            raise ValueError("THINGS-MEG needs a subject: add ?subject=N (1..4) or average")
        trials, table, epochs = _read_bids(location, subject, options, preparation)
        subject_name = f"BIGMEG{subject}"
    if preparation.zscore:
        trials = zscore_trials(trials)
    trial_ids = _stimulus_ids(table["image_path"])
    groups = group_trials(trial_ids, sort=True)
    data, repeats = average_trials(
        trials, groups, keep_repeats=options.keep_repeats, where=f"THINGS-MEG {subject_name}: "
    )
    targets = pd.DataFrame({"channel": epochs.ch_names, "ch_type": epochs.get_channel_types()})
    brain = BrainData(
        modality="meg",
        subject=subject_name,
        data=data,
        times=epochs.times.copy(),
        stimulus_ids=groups.stimulus_ids,
        targets=targets,
        repeats=repeats,
        info=epochs.info,
    )
    stimuli = None
    if options.images is not None:
        first_paths = [str(table["image_path"].iloc[rows[0]]) for rows in groups.trial_rows]
        stimuli = find_images(groups.stimulus_ids, options.images, first_paths)
    return brain, stimuli


def _grand_average(
    location: Path, options: ThingsMegOptions, preparation: MEGPreparation
) -> tuple[BrainData, StimulusSet | None]:
    """Average subjects over the stimuli and channels they all share (one subject in memory
    beside the running sum)."""
    import mne

    first: BrainData | None = None
    first_stimuli: StimulusSet | None = None
    total = np.zeros(0)
    ids: list[str] = []
    channels: list[str] = []
    for subject in options.subjects:
        brain, stimuli = _load_one(location, subject, options, preparation)
        brain_channels = list(brain.targets["channel"])
        if first is None:
            first, first_stimuli = brain, stimuli
            ids, channels = list(brain.stimulus_ids), brain_channels
            total = brain.data.astype(np.float64)  # (n, C, T)
            continue
        if brain.times.shape != first.times.shape or not np.allclose(brain.times, first.times):
            raise ValueError(
                f"THINGS-MEG subject {subject}: its time axis differs from subject "
                f"{options.subjects[0]}'s; use the same preparation for all"
            )
        shared_ids = [i for i in ids if i in set(brain.stimulus_ids)]
        shared_channels = [c for c in channels if c in set(brain_channels)]
        total = total[np.ix_(_positions(ids, shared_ids), _positions(channels, shared_channels))]
        total += brain.data[
            np.ix_(
                _positions(brain.stimulus_ids, shared_ids),
                _positions(brain_channels, shared_channels),
            )
        ]
        ids, channels = shared_ids, shared_channels
    if first is None or not ids or not channels:
        raise ValueError(
            f"THINGS-MEG subjects {list(options.subjects)} share no stimulus or no channel"
        )
    first_channels = list(first.targets["channel"])
    keep = _positions(first_channels, channels)
    brain = BrainData(
        modality="meg",
        subject="average",
        data=total / len(options.subjects),
        times=first.times,
        stimulus_ids=ids,
        targets=first.targets.iloc[keep].reset_index(drop=True),
        info=mne.pick_info(first.info, keep),
    )
    return brain, None if first_stimuli is None else first_stimuli.subset(ids)


def _positions(order: list[str], wanted: list[str]) -> np.ndarray:
    position = {name: i for i, name in enumerate(order)}
    return np.array([position[name] for name in wanted], dtype=np.int64)


def load_things_meg(
    location: str | Path,
    options: ThingsMegOptions,
    preparation: MEGPreparation | None = None,
) -> tuple[BrainData, StimulusSet | None]:
    """Load THINGS-MEG for one subject or the grand average.

    Parameters
    ----------
    location : path to the BIDS root, or to a ``-epo.fif`` file
    options : ThingsMegOptions
    preparation : MEGPreparation, optional
        Epoch-level steps; default from the options (30 Hz, z-score, ``mag``).

    Returns
    -------
    brain : BrainData, modality "meg"
        ``data`` (n_images, n_channels, n_times), images sorted by id; ``repeats`` when every
        image has the same number (> 1) of trials (``split=test``).
    stimuli : StimulusSet, or None without ``images``
    """
    location = Path(location)
    if not location.exists():
        raise FileNotFoundError(f"THINGS-MEG data not found: {location}")
    preparation = preparation if preparation is not None else things_meg_preparation(options)
    if options.subject is not None and str(options.subject).lower() in ("average", "all"):
        if location.is_file():
            raise ValueError("subject=average needs the BIDS root, not one epochs file")
        return _grand_average(location, options, preparation)
    subject = None if options.subject is None else _subject_number(options.subject)
    return _load_one(location, subject, options, preparation)
