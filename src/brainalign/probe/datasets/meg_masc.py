"""MEG-MASC (Gwilliams et al. 2023): 27 people, 4 stories, two identical sessions, KIT MEG, BIDS.

Release followed: the OSF release of Gwilliams, Flick, Marantz, Pylkkänen, Poeppel & King,
"Introducing MEG-MASC, a high-quality magneto-encephalography dataset for evaluating natural
speech processing", Scientific Data 10:862 (2023, doi 10.1038/s41597-023-02752-5), OSF project
ag3kj (parts ag3kj, h2tzn, u5327, dr4wy merged into one ``bids_anonym`` folder, as the authors'
code https://github.com/kingjr/meg-masc expects). Its README::

    sub-01/ses-0/meg/sub-01_ses-0_task-0_meg.con        KIT recording (1000 Hz, 208 channels)
    sub-01/ses-0/meg/sub-01_ses-0_task-0_events.tsv     onset, duration, trial_type, value, sample
    participants.tsv                                    participant_id, ..., task_order, n_sessions

Subjects ``01``-``27``; sessions ``0`` and ``1`` (the same four stories, 5 subjects have only
one session); tasks ``0``-``3`` are the stories ``lw1``, ``cable_spool_fort``, ``easy_money``,
``The_Black_Willow``, played in the order of the subject's ``task_order`` (participants.tsv,
e.g. ``[2, 3, 1, 0]``): presentation order follows it, not the task number. ``onset`` is in
seconds from the start of the recording, ``sample`` in samples at 1000 Hz. ``trial_type`` is a
Python dict literal (read with :func:`ast.literal_eval`, never ``eval``) with the keys
``story, story_uid, sound_id, kind, start, sound, phoneme, word, sequence_id, condition,
word_index, speech_rate, voice, pronounced``: ``kind`` is ``sound`` (start of a ~3 min wav),
``phoneme`` or ``word``; ``start`` is the time within the sound file (s), not the MEG time;
``condition`` is ``sentence`` (the story), ``word_list`` (random lists of the story's words,
inserted after text segments) or ``pseudo_words`` (<1% non-words). The authors discard word
lists and pseudo-words; so does ``conditions=sentence`` (the default). The NEMAR copy
(nm000229) flattens the same keys into columns (``trial_type`` = ``kind``); it is read too. No
part of speech is annotated.

Spec::

    meg-masc:/data/meg-masc?subject=01&sessions=0,1&tasks=0-3&content=all

Options: :class:`MegMascOptions` (and the shared
:class:`~brainalign.probe.datasets.speech_meg.SpeechMegOptions`). Stimulus ids:
``lw1_sound0_0007`` (the 8th word row of the story's first sound file, counted over every
condition), the same in both sessions, so the two sessions' epochs of a word are its repeats and
give the noise ceiling.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from brainalign.probe.datasets._common import require_file
from brainalign.probe.datasets.speech_meg import (
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

__all__ = ["CONDITIONS", "MegMascOptions", "load_meg_masc", "plan_meg_masc"]

DATASET = "meg-masc"
CONDITIONS = ("sentence", "word_list", "pseudo_words")
"""The ``condition`` values of MEG-MASC's word events."""

_KEYS = ("story", "sound_id", "kind", "start", "word", "sequence_id", "condition", "word_index")


@dataclass(frozen=True)
class MegMascOptions(SpeechMegOptions):
    """Options of the MEG-MASC loader (besides the shared preparation options).

    Parameters
    ----------
    subject : str
        ``1``..``27`` (``01``, ``sub-01`` accepted); required.
    sessions : tuple of int, optional
        ``0`` and/or ``1``; default every session found.
    tasks : tuple of int, optional
        Stories ``0``-``3``; default every task found.
    conditions : tuple of str
        Word conditions kept (``sentence``, ``word_list``, ``pseudo_words``).
    order : {"participants", "task"}
        Recordings of a session in the subject's ``task_order`` (participants.tsv), or by task.
    """

    subject: str | None = None
    sessions: tuple[int, ...] | None = None
    tasks: tuple[int, ...] | None = None
    conditions: tuple[str, ...] = ("sentence",)
    order: Literal["participants", "task"] = "participants"

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [condition for condition in self.conditions if condition not in CONDITIONS]
        if unknown:
            raise ValueError(f"conditions {unknown} unknown; MEG-MASC has {list(CONDITIONS)}")


# ---------------------------------------------------------------------- events
def _event_keys(events: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The trial_type keys as columns: from the dict literals (OSF) or as they are (NEMAR)."""
    if "kind" in events.columns:  # NEMAR nm000229: the keys are columns already
        return events
    require_columns(events, ("trial_type",), path, "MEG-MASC events (trial_type dicts)")
    parsed: list[dict[str, Any]] = []
    for line, text in enumerate(events["trial_type"], start=2):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, dict):
            raise ValueError(
                f"{path}, line {line}: trial_type {text[:60]!r} is not a dict literal "
                "(MEG-MASC writes {'kind': 'word', 'word': ..., ...})"
            )
        parsed.append(value)
    keys = pd.DataFrame.from_records(parsed, index=events.index)
    columns = {column: events[column] for column in events.columns if column not in keys.columns}
    return keys.assign(**columns)


def _word_rows(path: Path, session: str, task: str, options: MegMascOptions) -> pd.DataFrame:
    """The kept word rows of one recording, in onset order, as word-table rows."""
    events = read_events_tsv(path)
    needed = ("onset",) + (("sample",) if options.onsets == "samples" else ())
    require_columns(events, needed, path, "MEG-MASC events (onset, duration, trial_type, sample)")
    events = _event_keys(events, path)
    kinds = events["kind"].astype(str) if "kind" in events.columns else pd.Series(dtype=str)
    if not (kinds == "word").any():
        raise ValueError(
            f"{path}: no word events (trial_type kind 'word'); kinds present: "
            f"{sorted(set(kinds))[:8]}"
        )
    words = events[kinds == "word"].copy()
    require_columns(words, _KEYS, path, "MEG-MASC word events")
    words["onset"] = numeric_column(words["onset"], path, "onset")
    words["sound_id"] = numeric_column(words["sound_id"], path, "sound_id").astype(int)
    words = words.sort_values("onset", kind="stable")
    in_sound = words.groupby("sound_id").cumcount()  # over every condition: stable ids
    words["stimulus_id"] = [
        f"{story}_sound{sound}_{index:04d}"
        for story, sound, index in zip(words["story"], words["sound_id"], in_sound)
    ]
    words = words[words["condition"].astype(str).isin(options.conditions)]
    if words.empty:
        raise ValueError(
            f"{path}: no word event of condition(s) {list(options.conditions)}; use "
            f"conditions=... among {list(CONDITIONS)}"
        )
    sample = (
        numeric_column(words["sample"], path, "sample")
        if "sample" in words.columns
        else np.full(len(words), np.nan)
    )
    table = pd.DataFrame(
        {
            "stimulus_id": words["stimulus_id"].to_numpy(),
            "word": words["word"].astype(str).str.strip().to_numpy(),
            "story": words["story"].astype(str).to_numpy(),
            "session": session,
            "onset": words["onset"].to_numpy(),
            "sample": sample,
            "task": task,
            "sound_id": words["sound_id"].to_numpy(),
            "start": pd.to_numeric(words["start"], errors="coerce").to_numpy(),
            "sequence_id": pd.to_numeric(words["sequence_id"], errors="coerce").to_numpy(),
            "word_index": pd.to_numeric(words["word_index"], errors="coerce").to_numpy(),
            "condition": words["condition"].astype(str).to_numpy(),
            "duration": pd.to_numeric(words.get("duration"), errors="coerce"),
        }
    )
    table.insert(6, "position", np.arange(len(table)))
    return table


# ---------------------------------------------------------------------- recordings
def _task_order(root: Path, label: str) -> list[str] | None:
    """The subject's story order from participants.tsv, or None when it says nothing."""
    path = root / "participants.tsv"
    if not path.is_file():
        return None
    table = read_events_tsv(path)
    if "task_order" not in table.columns or "participant_id" not in table.columns:
        return None
    row = table[table["participant_id"].str.strip() == f"sub-{label}"]
    if row.empty:
        return None
    text = row["task_order"].iloc[0].strip().strip('"')
    try:
        order = json.loads(text)
    except ValueError:
        raise ValueError(
            f"{path}: task_order {text!r} of sub-{label} is not a list like [0, 2, 1, 3]"
        ) from None
    return [str(task) for task in order]


def plan_meg_masc(location: str | Path, options: MegMascOptions) -> SpeechPlan:
    """Find the recordings and read their word events (no MEG is read).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing folder, subject, session, task or events file; events without words.
    """
    root, label, matches = subject_recordings(
        location, DATASET, options.subject, digits=2, extensions=[".con", ".fif"]
    )
    found = {(path.session, path.task): path for path in matches}
    where = f"meg-masc sub-{label}"
    wanted = None if options.sessions is None else [str(n) for n in options.sessions]
    sessions = check_labels(wanted, sorted({key[0] for key in found}), "session", where)
    order = _task_order(root, label) if options.order == "participants" else None
    recordings = []
    for session in sessions:
        present = sorted(key[1] for key in found if key[0] == session)
        wanted_tasks = None if options.tasks is None else [str(n) for n in options.tasks]
        tasks = check_labels(wanted_tasks, present, "task", f"{where} ses-{session}")
        if order is not None:
            tasks = sorted(tasks, key=lambda task: order.index(task) if task in order else 99)
        for task in tasks:
            bids_path = found[(session, task)]
            path = require_file(
                events_path(bids_path), f"meg-masc events of sub-{label} ses-{session}"
            )
            words = _word_rows(path, session, task, options)
            label_text = f"sub-{label} ses-{session} task-{task}"
            recordings.append(Recording(bids_path, label_text, path, words))
    return finish_plan(DATASET, f"sub-{label}", recordings, options)


def load_meg_masc(location: str | Path, options: MegMascOptions) -> WordEpochs:
    """Word epochs of one subject (:func:`plan_meg_masc`, then the MEG)."""
    return read_word_epochs(plan_meg_masc(location, options))
