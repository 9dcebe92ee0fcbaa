"""Armeni et al. 2022: 3 people, 10 one-hour audiobook sessions each, CTF MEG, BIDS.

Release followed: Donders Repository collection DSC_3011085.05_995 (version 1), DOI
10.34973/5rpw-rn92, described in Armeni, Güçlü, van Gerven & Schoffelen (2022), "A 10-hour
within-participant magnetoencephalography narrative dataset to test models of language
comprehension", Scientific Data 9:278 (doi 10.1038/s41597-022-01382-7). Layout as read by the
authors' and others' public code for this release::

    sub-001/ses-001/meg/sub-001_ses-001_task-compr_meg.ds       CTF recording, one per session
    sub-001/ses-001/meg/sub-001_ses-001_task-compr_events.tsv   columns: onset duration sample
                                                                type value

Subjects ``001``-``003``, sessions ``001``-``010``, one task ``compr``, no run entity: each
session's recording holds 6-8 *runs* (sections of the story, ~10 min each, with short breaks),
named in the ``type`` column of the events. Word onsets are the rows whose ``type`` is
``word_onset_NN`` (``NN`` = run within the session, ``word_onset_01``...); ``value`` is the word
(written as the forced aligner wrote it, possibly in upper case and in double quotes, which are
stripped) or ``sp`` for a silence, which is not a word. Rows of type ``phoneme_onset_NN``,
``wav_onset`` (start of each run's audio) and the trigger channels are not words. ``onset`` is
in seconds from the start of the recording, ``sample`` in samples at the recorded rate
(1200 Hz). The data set annotates no part of speech.

Spec::

    armeni2022:/data/armeni?subject=1&sessions=1-3&content=all

Options: :class:`Armeni2022Options` (and the shared
:class:`~brainalign.probe.datasets.speech_meg.SpeechMegOptions`). Stimulus ids:
``ses-001_run-01_00012`` (the 13th word of run 1 of session 1); story (the unit across which the
language model's context runs): the session (``story=session``, one story per session) or the
run (``story=run``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from brainalign.probe.datasets._common import require_file
from brainalign.probe.datasets.speech_meg import (
    TABLE_COLUMNS,
    Recording,
    SpeechMegOptions,
    SpeechPlan,
    WordEpochs,
    check_labels,
    events_path,
    finish_plan,
    numeric_column,
    read_events_tsv,
    read_word_epochs,
    require_columns,
    subject_recordings,
)

__all__ = ["Armeni2022Options", "load_armeni2022", "plan_armeni2022"]

DATASET = "armeni2022"
WORD_TYPE = re.compile(r"^word_onset_(\d+)$")
SILENCES = frozenset({"sp", ""})
"""``value`` of word-typed rows that are silences, not words."""


@dataclass(frozen=True)
class Armeni2022Options(SpeechMegOptions):
    """Options of the Armeni 2022 loader (besides the shared preparation options).

    Parameters
    ----------
    subject : str
        ``1``..``3`` (``001``, ``sub-001`` accepted); required.
    sessions : tuple of int, optional
        Sessions to read (``1-10``); default every session found.
    runs : tuple of int, optional
        Runs (story sections) to keep within each session; default all.
    task : str
        BIDS task label (``compr``).
    story : {"session", "run"}
        What the language model's context runs across: the session's story, or one run.
    lowercase : bool
        Lower-case the words (the aligner may have written them in upper case).
    """

    subject: str | None = None
    sessions: tuple[int, ...] | None = None
    runs: tuple[int, ...] | None = None
    task: str = "compr"
    story: Literal["session", "run"] = "session"
    lowercase: bool = False


def _word_rows(path: Path, session: str, options: Armeni2022Options) -> pd.DataFrame:
    """The word rows of one session's events, in onset order, as word-table rows."""
    events = read_events_tsv(path)
    needed = ("onset", "type", "value") + (("sample",) if options.onsets == "samples" else ())
    require_columns(
        events, needed, path, "Armeni 2022 events (onset, duration, sample, type, value)"
    )
    run_match = events["type"].str.strip().str.extract(WORD_TYPE, expand=False)
    words = events["value"].str.strip().str.strip('"').str.strip()
    is_word = run_match.notna() & ~words.str.lower().isin(SILENCES)
    if not is_word.any():
        types = sorted(set(events["type"]))[:8]
        raise ValueError(
            f"{path}: no word events (rows of type word_onset_NN whose value is a word, not "
            f"'sp'); types present: {types}"
        )
    rows = events[is_word]
    table = pd.DataFrame(
        {
            "word": words[is_word].str.lower() if options.lowercase else words[is_word],
            "run": run_match[is_word].astype(int),
            "onset": numeric_column(rows["onset"], path, "onset"),
            "sample": (
                numeric_column(rows["sample"], path, "sample")
                if "sample" in rows.columns
                else np.full(len(rows), np.nan)
            ),
            "duration": pd.to_numeric(rows.get("duration"), errors="coerce"),
        }
    )
    if options.runs is not None:
        absent = sorted(set(options.runs) - set(table["run"]))
        if absent:
            raise ValueError(
                f"{path} has no word of run(s) {absent}; runs present: {sorted(set(table['run']))}"
            )
        table = table[table["run"].isin(options.runs)]
    table = table.sort_values("onset", kind="stable").reset_index(drop=True)
    in_run = table.groupby("run").cumcount()
    table.insert(
        0,
        "stimulus_id",
        [f"ses-{session}_run-{run:02d}_{index:05d}" for run, index in zip(table["run"], in_run)],
    )
    if options.story == "session":
        table["story"] = f"ses-{session}"
    else:
        table["story"] = [f"ses-{session}_run-{run:02d}" for run in table["run"]]
    table["session"] = session
    table["position"] = table.groupby("story").cumcount()
    return table[[*TABLE_COLUMNS, "run", "duration"]]


def plan_armeni2022(location: str | Path, options: Armeni2022Options) -> SpeechPlan:
    """Find the sessions and read their word events (no MEG is read).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing folder, subject, session, recording or events file; events without words.
    """
    _, label, matches = subject_recordings(
        location, DATASET, options.subject, digits=3, extensions=[".ds", ".fif"], task=options.task
    )
    found = {path.session: path for path in matches}
    wanted = None if options.sessions is None else [f"{n:03d}" for n in options.sessions]
    sessions = check_labels(wanted, sorted(found), "session", f"armeni2022 sub-{label}")
    recordings = []
    for session in sessions:
        bids_path = found[session]
        path = events_path(bids_path)
        require_file(path, f"armeni2022 events of sub-{label} ses-{session}")
        words = _word_rows(path, session, options)
        recordings.append(Recording(bids_path, f"sub-{label} ses-{session}", path, words))
    return finish_plan(DATASET, f"sub-{label}", recordings, options)


def load_armeni2022(location: str | Path, options: Armeni2022Options) -> WordEpochs:
    """Word epochs of one subject (:func:`plan_armeni2022`, then the MEG)."""
    return read_word_epochs(plan_armeni2022(location, options))
