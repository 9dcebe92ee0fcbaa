"""Word-locked MEG from naturalistic-speech BIDS data sets (Study C): the part they share.

The two named data sets (:mod:`~brainalign.probe.datasets.armeni2022`,
:mod:`~brainalign.probe.datasets.meg_masc`) differ in their file names and events columns; once
their events are parsed into one word table, every step is the same:

1. **Plan** (cheap, every check before heavy reading): the data set module finds the BIDS runs
   with mne-bids, reads each run's ``_events.tsv`` and keeps the word rows, in presentation
   order, as a table with ``stimulus_id, word, story, session, onset, sample, position``
   (:class:`SpeechPlan`). Content words come from ``content=all`` or from a user table
   (``content_table=words.csv`` with ``stimulus_id`` and ``is_content`` or ``pos``); neither
   data set annotates parts of speech and no part-of-speech tagger is run (none ships offline),
   so by default content words are *unknown* and scoring content words only is refused.
2. **Read** (:func:`read_word_epochs`): per run, ``mne_bids.read_raw_bids``, channels picked
   (``picks``, bad channels left out), resampled to ``raw_resample_hz`` (onsets moved with the
   data), band-passed ``l_freq``-``h_freq`` (0.1-20 Hz), cut into epochs ``tmin``..``tmax``
   (-2.5..+3 s, no baseline; one sample of ``resample_hz`` wider on each side) around each word
   onset in chunks of :data:`EPOCH_CHUNK` words, each chunk resampled to ``resample_hz``
   (30 Hz) and cropped to ``tmin..tmax`` with :func:`brainalign.probe.meg.transform_epochs`
   (keep ``raw_resample_hz`` a multiple of ``resample_hz``, as 120 and 30, so that time 0 is
   a sample). After all runs: the channels every run has,
   each (channel, time) z-scored across all word epochs
   (:func:`brainalign.probe.meg.zscore_trials`), and epochs of one word token in several
   sessions averaged.
3. **Noise ceiling** where sessions repeat the words (MEG-MASC): the split-half reliability
   across sessions per channel and time (:func:`brainalign.probe.scores.noise_ceiling_split_half`,
   Spearman-Brown corrected), in ``BrainData.noise_ceiling``; the single-session epochs stay in
   ``BrainData.repeats`` when every word has every session, and the probe core computes the
   ceiling of the scored words from them. Otherwise the ceiling of the tokens seen in every
   session is declared (``noise_ceiling_unit = "fraction"``) and the core uses it as it is.

Onsets (``onsets``): ``seconds`` (default) reads the events' ``onset`` column (seconds from the
start of the recording, BIDS); ``samples`` reads the ``sample`` column (samples at the
*recorded* rate, counted from the start of the file). A word whose epoch reaches past the
recording keeps its place in the word table (it is context for the language model) but has no
MEG row.

Example::

    plan = plan_word_epochs("meg-masc:/data/meg-masc?subject=01&sessions=0,1&content=all")
    epochs = read_word_epochs(plan)  # epochs.brain, epochs.words, epochs.table
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import BrainData
from brainalign.probe.datasets._common import group_trials, require_file
from brainalign.probe.meg import MEGPreparation, transform_epochs, zscore_trials
from brainalign.utils.reading import read_file

if TYPE_CHECKING:
    from brainalign.probe.language import WordSequence

__all__ = [
    "EPOCH_CHUNK",
    "TABLE_COLUMNS",
    "Recording",
    "SpeechMegOptions",
    "SpeechPlan",
    "WordEpochs",
    "is_speech_spec",
    "load_word_epochs",
    "plan_word_epochs",
    "read_events_tsv",
    "read_word_epochs",
    "register_speech_loader",
    "session_noise_ceiling",
]

EPOCH_CHUNK = 256
"""Words epoched per ``mne.Epochs`` call (bounds memory: 256 x 208 channels x 661 samples)."""

TABLE_COLUMNS = ("stimulus_id", "word", "story", "session", "onset", "sample", "position")
"""Columns every data set's word table has (extra, data-set-specific columns follow)."""


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class SpeechMegOptions:
    """Preparation and content-word options shared by the speech data sets.

    Parameters
    ----------
    l_freq, h_freq : float, optional
        Band-pass of the raw runs (Hz); none skips that edge. Study C: 0.1-20 Hz.
    tmin, tmax : float
        Epoch window around each word onset (s). Study C: -2.5..+3 s.
    raw_resample_hz : float, optional
        Rate of the raw runs before epoching (onsets move to the nearest new sample); none
        keeps the recorded rate.
    resample_hz : float, optional
        Rate of the epochs (``MEGPreparation.resample_hz``). Study C: 30 Hz.
    zscore : bool
        Z-score each (channel, time) across all word epochs.
    picks : str
        MNE channel type kept (``mag``: the CTF axial gradiometers and the KIT magnetometers,
        without reference channels).
    onsets : {"seconds", "samples"}
        Onset source: the events' ``onset`` column (s) or their ``sample`` column.
    content : {"unknown", "all"}
        Content words when no ``content_table`` is given: unknown (scoring needs every word,
        or a table), or every word.
    content_table : Path, optional
        CSV with ``stimulus_id`` and ``is_content`` (bool) or ``pos`` (universal tags; NOUN,
        VERB, ADJ, ADV are content words), one row per word token; an optional ``word`` column
        is checked against the data set's words.
    """

    l_freq: float | None = 0.1
    h_freq: float | None = 20.0
    tmin: float = -2.5
    tmax: float = 3.0
    raw_resample_hz: float | None = 120.0
    resample_hz: float | None = 30.0
    zscore: bool = True
    picks: str = "mag"
    onsets: Literal["seconds", "samples"] = "seconds"
    content: Literal["unknown", "all"] = "unknown"
    content_table: Path | None = None

    def __post_init__(self) -> None:
        rates = ("l_freq", "h_freq", "raw_resample_hz", "resample_hz")
        bad = {name: getattr(self, name) for name in rates}
        bad = {name: value for name, value in bad.items() if value is not None and value <= 0}
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive or none; got {bad}")
        pairs = [("tmin", "tmax")] + ([("l_freq", "h_freq")] if self.l_freq and self.h_freq else [])
        for low, high in pairs:
            if getattr(self, low) >= getattr(self, high):
                raise ValueError(
                    f"{low} ({getattr(self, low)}) must be below {high} ({getattr(self, high)})"
                )

    @property
    def preparation(self) -> MEGPreparation:
        """The epoch-level steps: resample, crop to ``tmin..tmax`` (z-scoring is done once,
        over all runs)."""
        return MEGPreparation(
            resample_hz=self.resample_hz,
            tmin=self.tmin,
            tmax=self.tmax,
            zscore=False,
            picks=self.picks,
        )

    @property
    def epoch_window(self) -> tuple[float, float]:
        """The window cut from the raw data: ``tmin..tmax`` widened to whole samples of
        ``resample_hz`` plus one on each side, so that after resampling the crop to
        ``tmin..tmax`` keeps both ends (and time 0 stays a sample when the raw rate is a
        multiple of ``resample_hz``)."""
        if self.resample_hz is None:
            return self.tmin, self.tmax
        rate = self.resample_hz
        return (np.floor(self.tmin * rate) - 1) / rate, (np.ceil(self.tmax * rate) + 1) / rate


# ---------------------------------------------------------------------- plan and result
@dataclass(frozen=True)
class Recording:
    """One BIDS run to read, and its word rows.

    Attributes
    ----------
    bids_path : mne_bids.BIDSPath
    label : str
        ``sub-001 ses-002`` ..., for messages.
    events_tsv : Path
    words : DataFrame
        This run's rows of the word table (presentation order).
    """

    bids_path: Any
    label: str
    events_tsv: Path
    words: pd.DataFrame


@dataclass(frozen=True)
class SpeechPlan:
    """What a speech loader will read, checked before any MEG is read.

    Attributes
    ----------
    dataset : str
        ``armeni2022`` or ``meg-masc``.
    subject : str
        BIDS label with prefix (``sub-001``).
    recordings : list of Recording
        In presentation order.
    table : DataFrame
        One row per word token *per session* in presentation order: :data:`TABLE_COLUMNS`,
        ``is_content`` (boolean, NA when unknown) and data-set-specific columns.
    options : SpeechMegOptions
    """

    dataset: str
    subject: str
    recordings: list[Recording]
    table: pd.DataFrame
    options: SpeechMegOptions

    @property
    def words(self) -> WordSequence:
        """Every word token once (first presentation order), for the language model."""
        return word_sequence(self.table, where=f"{self.dataset} {self.subject}")


@dataclass(frozen=True)
class WordEpochs:
    """Word-locked MEG of one subject and its words.

    Attributes
    ----------
    brain : BrainData, modality "meg"
        ``data`` (n_words, n_channels, n_times): one row per word token with an epoch (the
        mean over sessions where the token repeats), ``stimulus_ids`` the tokens' ids;
        ``repeats`` (n_sessions, n_words, n_channels, n_times) and ``noise_ceiling``
        (n_channels, n_times) when sessions repeat the words.
    words : WordSequence
        Every word token (epoch or not) in presentation order, with stories and content words.
    table : DataFrame
        The plan's word table (one row per token per session).
    """

    brain: BrainData
    words: WordSequence
    table: pd.DataFrame


# ---------------------------------------------------------------------- events
def read_events_tsv(path: Path) -> pd.DataFrame:
    """A BIDS ``_events.tsv`` as strings, exactly as written (no quote or ``n/a`` handling).

    Quotes are kept (MEG-MASC's ``trial_type`` holds Python dict literals with quotes inside;
    Armeni's ``value`` may be a quoted word): callers strip them where the data set needs it.
    """
    return read_file(
        lambda: pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE
        ),
        path,
        "a BIDS events.tsv table",
    )


def require_columns(table: pd.DataFrame, columns: tuple[str, ...], path: Path, what: str) -> None:
    """Raise naming the file, the missing columns and the columns present."""
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(
            f"{path} lacks the column(s) {missing} of {what}; columns present: "
            f"{list(table.columns)}"
        )


def numeric_column(values: pd.Series, path: Path, column: str) -> np.ndarray:
    """A column of numbers; ``n/a`` or text in a kept row is an error naming the row."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if bad.size:
        row = int(values.index[bad[0]]) + 2  # header is line 1
        raise ValueError(
            f"{path}, line {row}: {column} {values.iloc[bad[0]]!r} is not a number "
            f"({bad.size} word rows like this)"
        )
    return numbers


# ---------------------------------------------------------------------- content words
def apply_content(table: pd.DataFrame, options: SpeechMegOptions, *, where: str) -> pd.DataFrame:
    """Add ``is_content`` (boolean; NA when unknown) from the options or the user's table."""
    from brainalign.probe.language import CONTENT_POS

    table = table.copy()
    if options.content_table is None:
        value = pd.NA if options.content == "unknown" else True
        table["is_content"] = pd.array([value] * len(table), dtype="boolean")
        return table
    path = require_file(Path(options.content_table), "content word table (content_table=)")
    user = read_file(lambda: pd.read_csv(path, dtype={"stimulus_id": str}), path, "a CSV table")
    require_columns(user, ("stimulus_id",), path, "a content word table")
    if "is_content" in user.columns:
        flags = user["is_content"].astype("boolean")
    elif "pos" in user.columns:
        flags = user["pos"].astype(str).str.upper().isin(CONTENT_POS)
    else:
        raise ValueError(
            f"{path}: a content word table needs an is_content (true/false) or pos column "
            f"beside stimulus_id; columns present: {list(user.columns)}"
        )
    user = user.assign(is_content=flags).drop_duplicates("stimulus_id").set_index("stimulus_id")
    missing = sorted(set(table["stimulus_id"]) - set(user.index))
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} word tokens of {where} have no row, e.g. {missing[:3]}; "
            "list every stimulus_id of the data set's word table"
        )
    if "word" in user.columns:
        theirs = user.loc[table["stimulus_id"], "word"].astype(str).str.strip().to_numpy()
        differ = np.flatnonzero(theirs != table["word"].to_numpy())
        if differ.size:
            first = differ[0]
            raise ValueError(
                f"{path}: stimulus_id {table['stimulus_id'].iloc[first]!r} is the word "
                f"{table['word'].iloc[first]!r} in {where} but {theirs[first]!r} in the table "
                f"({differ.size} differ); the table belongs to another release or subject"
            )
    table["is_content"] = user.loc[table["stimulus_id"], "is_content"].to_numpy()
    table["is_content"] = table["is_content"].astype("boolean")
    return table


def word_sequence(table: pd.DataFrame, *, where: str) -> WordSequence:
    """One entry per word token (first presentation), its story and content flag."""
    from brainalign.probe.language import WordSequence

    first = table.drop_duplicates("stimulus_id", keep="first")
    flags = first["is_content"].astype("boolean")
    known = not bool(flags.isna().any())
    return WordSequence(
        ids=tuple(first["stimulus_id"]),
        words=tuple(first["word"]),
        stories=tuple(first["story"]),
        content=flags.fillna(True).to_numpy(dtype=bool),
        content_known=known,
        source=where,
    )


# ---------------------------------------------------------------------- reading
def _chunks(samples: np.ndarray, size: int) -> list[np.ndarray]:
    """Positions of the words, in chunks whose event samples are unique within each chunk.

    Two words may fall on one sample once the raw data are resampled (``mne.Epochs`` needs
    distinct event samples): the k-th word of a sample goes into the k-th set of chunks.
    """
    occurrence = pd.Series(samples).groupby(samples).cumcount().to_numpy()
    chunks = []
    for level in range(int(occurrence.max()) + 1 if samples.size else 0):
        positions = np.flatnonzero(occurrence == level)
        chunks.extend(positions[start : start + size] for start in range(0, positions.size, size))
    return chunks


def _epoch_recording(
    recording: Recording, options: SpeechMegOptions
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Prepared word epochs of one run: (data (n, C, T) float32, word positions, epochs)."""
    import mne
    import mne_bids

    raw = read_file(
        lambda: mne_bids.read_raw_bids(recording.bids_path, verbose="error"),
        recording.bids_path.fpath,
        "a BIDS MEG recording",
    )
    sfreq = raw.info["sfreq"]
    words = recording.words
    if options.onsets == "seconds":
        offsets = np.rint(words["onset"].to_numpy(dtype=np.float64) * sfreq)
    else:
        offsets = words["sample"].to_numpy(dtype=np.float64)
    positions = np.arange(len(words))
    events = np.column_stack(
        [raw.first_samp + offsets.astype(np.int64), np.zeros_like(positions), positions + 1]
    )  # event value = 1-based position of the word in this run
    try:
        raw.pick(options.picks, exclude="bads")
    except ValueError as error:
        raise ValueError(
            f"{recording.label}: picks={options.picks!r} selects no channel ({error}); "
            f"channel types present: {sorted(set(raw.get_channel_types()))}"
        ) from None
    raw.load_data(verbose="error")
    if options.raw_resample_hz is not None and options.raw_resample_hz != sfreq:
        raw, events = raw.resample(options.raw_resample_hz, events=events, verbose="error")
    if options.l_freq is not None or options.h_freq is not None:
        raw.filter(options.l_freq, options.h_freq, verbose="error")
    blocks, kept, last = [], [], None
    tmin, tmax = options.epoch_window
    for chunk in _chunks(events[:, 0], EPOCH_CHUNK):
        epochs = mne.Epochs(
            raw,
            events[chunk],
            tmin=tmin,
            tmax=tmax,
            baseline=None,
            preload=True,
            reject_by_annotation=False,
            on_missing="ignore",
            verbose="error",
        )
        if len(epochs) == 0:
            continue
        prepared = transform_epochs(epochs, options.preparation)
        blocks.append(prepared.get_data(copy=False).astype(np.float32))  # (n, C, T)
        kept.append(epochs.events[:, 2] - 1)
        last = prepared
    if last is None:
        return np.zeros((0,), np.float32), np.zeros(0, np.int64), None
    order = np.argsort(np.concatenate(kept), kind="stable")
    data = np.concatenate(blocks)[order]
    kept_positions = np.concatenate(kept)[order]
    if kept_positions.size < len(words):
        warnings.warn(
            f"{recording.label}: {len(words) - kept_positions.size} word epochs reach past the "
            "recording and have no MEG row (the words stay in the word table as context)",
            UserWarning,
            stacklevel=3,
        )
    return data, kept_positions, last


def _shared_channels(
    blocks: list[np.ndarray], channel_lists: list[list[str]], where: str
) -> tuple[list[np.ndarray], list[str]]:
    """Keep the channels every run has (runs may mark different channels bad)."""
    common = [name for name in channel_lists[0] if all(name in names for names in channel_lists)]
    if all(names == common for names in channel_lists):
        return blocks, common
    dropped = sorted({name for names in channel_lists for name in names} - set(common))
    warnings.warn(
        f"{where}: runs differ in their (good) channels; keeping the {len(common)} channels "
        f"every run has, dropping {dropped}",
        UserWarning,
        stacklevel=3,
    )
    picked = [
        block[:, [names.index(name) for name in common]]
        for block, names in zip(blocks, channel_lists)
    ]
    return picked, common


def session_noise_ceiling(repeats: np.ndarray) -> np.ndarray:
    """Split-half reliability across sessions per (channel, time).

    Parameters
    ----------
    repeats : ndarray of shape (n_sessions, n_words, n_channels, n_times)
        The same word tokens in every session.

    Returns
    -------
    ndarray of shape (n_channels, n_times), float32
        :func:`brainalign.probe.scores.noise_ceiling_split_half` (even vs odd sessions,
        Spearman-Brown corrected to all sessions): the reliability of the session mean, a
        fraction; NaN where a (channel, time) is constant across words.
    """
    from brainalign.probe.scores import noise_ceiling_split_half

    n_sessions, n_words = repeats.shape[:2]
    flat = np.asarray(repeats, dtype=np.float64).reshape(n_sessions, n_words, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ceiling = noise_ceiling_split_half(flat)
    return ceiling.reshape(repeats.shape[2:]).astype(np.float32)


def read_word_epochs(plan: SpeechPlan) -> WordEpochs:
    """Read and prepare the MEG of a plan (see the module docstring for the steps)."""
    options = plan.options
    where = f"{plan.dataset} {plan.subject}"
    blocks, ids, channel_lists, last = [], [], [], None
    for recording in plan.recordings:
        data, positions, epochs = _epoch_recording(recording, options)
        if epochs is None:
            continue
        blocks.append(data)
        ids.append(recording.words["stimulus_id"].to_numpy()[positions])
        channel_lists.append(list(epochs.ch_names))
        last = epochs
    if last is None:
        raise ValueError(f"{where}: no word epoch lies inside the recordings read")
    blocks, channels = _shared_channels(blocks, channel_lists, where)
    trials = np.concatenate(blocks)  # (n_trials, C, T)
    if options.zscore:
        trials = zscore_trials(trials)
    groups = group_trials(np.concatenate(ids))  # word tokens in first-epoch order
    data = np.stack([trials[rows].mean(axis=0) for rows in groups.trial_rows])
    repeats, ceiling = _repeats_and_ceiling(trials, groups, where)
    info_picks = [list(last.ch_names).index(name) for name in channels]
    import mne

    info = mne.pick_info(last.info, info_picks)
    brain = BrainData(
        modality="meg",
        subject=plan.subject,
        data=data,
        times=last.times.copy(),
        stimulus_ids=groups.stimulus_ids,
        targets=pd.DataFrame({"channel": channels, "ch_type": info.get_channel_types()}),
        repeats=repeats,
        noise_ceiling=ceiling,
        noise_ceiling_unit="fraction" if ceiling is not None and repeats is None else None,
        info=info,
    )
    return WordEpochs(brain=brain, words=plan.words, table=plan.table)


def _repeats_and_ceiling(
    trials: np.ndarray, groups: Any, where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Single-session epochs when every token repeats equally; the ceiling from the tokens
    seen in the most sessions (at least 3 of them, in 2+ sessions)."""
    counts = groups.counts
    most = int(counts.max())
    if most < 2:
        return None, None
    full = [rows for rows in groups.trial_rows if len(rows) == most]
    if len(full) < 3:
        return None, None
    stacked = np.stack([trials[rows] for rows in full], axis=1)  # (R, n_full, C, T)
    ceiling = session_noise_ceiling(stacked)
    if len(full) == len(groups.trial_rows):
        return stacked, ceiling
    warnings.warn(
        f"{where}: {len(groups.trial_rows) - len(full)} of {len(groups.trial_rows)} word tokens "
        f"lack an epoch in some of the {most} sessions; the noise ceiling uses the "
        f"{len(full)} tokens seen in all of them, and single-session epochs are not kept",
        UserWarning,
        stacklevel=3,
    )
    return None, ceiling


# ---------------------------------------------------------------------- helpers for loaders
def subject_recordings(
    location: str | Path,
    dataset: str,
    subject: str | None,
    *,
    digits: int,
    extensions: list[str],
    task: str | None = None,
) -> tuple[Path, str, list[Any]]:
    """The BIDS root, the subject's label and its MEG recordings (``mne_bids`` paths).

    Parameters
    ----------
    subject : str
        ``1``, ``001`` or ``sub-001``; written with ``digits`` digits.

    Raises
    ------
    FileNotFoundError
        No such folder, no such subject (naming those present), no recording.
    ValueError
        No subject, or one that is not a number.
    """
    import mne_bids

    root = Path(location)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset}: no BIDS folder {root}")
    if subject is None:
        raise ValueError(f"{dataset} needs a subject: add ?subject=N")
    cleaned = str(subject).strip().lower().removeprefix("sub-")
    if not cleaned.isdigit():
        raise ValueError(f"{dataset} subject must be a number like 1 or 01; got {subject!r}")
    label = f"{int(cleaned):0{digits}d}"
    if not (root / f"sub-{label}").is_dir():
        present = sorted(path.name for path in root.glob("sub-*") if path.is_dir())
        raise FileNotFoundError(
            f"{dataset}: no subject sub-{label} under {root}; subjects present: {present}"
        )
    matches = mne_bids.find_matching_paths(
        root, subjects=label, tasks=task, datatypes="meg", suffixes="meg", extensions=extensions
    )
    matches = [path for path in matches if path.session and path.task]
    if not matches:
        raise FileNotFoundError(
            f"{dataset}: no MEG recording of sub-{label} under {root} (looked for "
            f"sub-{label}/ses-*/meg/sub-{label}_ses-*_task-{task or '*'}_meg"
            f"{'|'.join(extensions)})"
        )
    return root, label, matches


def check_labels(wanted: list[str] | None, found: list[str], what: str, where: str) -> list[str]:
    """The wanted BIDS labels (all found ones when None), each of which must exist."""
    if wanted is None:
        return found
    absent = [label for label in wanted if label not in found]
    if absent:
        raise ValueError(f"{where} has no {what}(s) {absent}; {what}s found: {found}")
    return wanted


def events_path(bids_path: Any) -> Path:
    """The ``_events.tsv`` beside a BIDS recording."""
    return Path(bids_path.copy().update(suffix="events", extension=".tsv").fpath)


def finish_plan(
    dataset: str,
    subject: str,
    recordings: list[Recording],
    options: SpeechMegOptions,
) -> SpeechPlan:
    """Join the runs' word rows, add content words, check ids name one word each."""
    if not recordings:
        raise ValueError(f"{dataset} {subject}: no recording selected")
    table = pd.concat([recording.words for recording in recordings], ignore_index=True)
    where = f"{dataset} {subject}"
    disagree = table.groupby("stimulus_id")["word"].nunique()
    disagree = disagree[disagree > 1]
    if not disagree.empty:
        raise ValueError(
            f"{where}: word tokens {disagree.index[:3].tolist()} are different words in "
            "different sessions; the sessions' events do not describe the same text"
        )
    table = apply_content(table, options, where=where)
    return SpeechPlan(dataset, subject, recordings, table, options)


# ---------------------------------------------------------------------- registry
PlanLoader = Callable[..., SpeechPlan]
_SPEECH_LOADERS: dict[str, PlanLoader] = {}


def register_speech_loader(prefix: str, planner: PlanLoader) -> None:
    """Make ``plan_word_epochs("<prefix>:<location>?...")`` call ``planner(location,
    subject=...)``."""
    _SPEECH_LOADERS[prefix.lower()] = planner


def _speech_loader(spec: str) -> tuple[PlanLoader, str] | None:
    import brainalign.probe.datasets  # noqa: F401  (registers the speech data sets)

    prefix, separator, location = str(spec).partition(":")
    if separator and prefix.lower() in _SPEECH_LOADERS:
        return _SPEECH_LOADERS[prefix.lower()], location
    return None


def is_speech_spec(spec: str | Path) -> bool:
    """Whether ``spec`` names a speech data set (``armeni2022:``, ``meg-masc:``)."""
    return _speech_loader(str(spec)) is not None


def plan_word_epochs(spec: str | Path, *, subject: str | None = None) -> SpeechPlan:
    """Parse a speech data set spec and check everything that can be checked cheaply."""
    found = _speech_loader(str(spec))
    if found is None:
        raise ValueError(
            f"{spec!r} is not a speech data set spec; known prefixes: "
            f"{', '.join(f'{name}:' for name in sorted(_SPEECH_LOADERS))}"
        )
    planner, location = found
    return planner(location, subject=subject)


def load_word_epochs(spec: str | Path, *, subject: str | None = None) -> WordEpochs:
    """:func:`plan_word_epochs` then :func:`read_word_epochs`."""
    return read_word_epochs(plan_word_epochs(spec, subject=subject))
