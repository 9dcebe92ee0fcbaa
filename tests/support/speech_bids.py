"""Miniature copies of the Armeni 2022 and MEG-MASC BIDS layouts, written with the real writers.

MNE writes neither CTF ``.ds`` nor KIT ``.con``, so each recording is a small
``mne.io.RawArray`` saved as FIF and written with ``mne_bids.write_raw_bids`` (which makes the
BIDS names, ``channels.tsv`` and the sidecars); its ``_events.tsv`` is then replaced by one in
the data set's published layout:

- Armeni 2022: ``onset duration sample type value``; ``type`` ``wav_onset``,
  ``word_onset_NN``, ``phoneme_onset_NN`` (NN = run), trigger rows ``UPPT001``; words in double
  quotes, silences as ``sp`` word rows.
- MEG-MASC: ``onset duration trial_type value sample``; ``trial_type`` a Python dict literal
  (``kind`` sound / phoneme / word, ``story``, ``sound_id``, ``start`` within the sound file,
  ``condition``...); each word's first phoneme row comes just before its word row, at the same
  onset (as in the release). :func:`flatten_meg_masc_events` gives the NEMAR (nm000229) layout.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SFREQ = 100.0
MEG_CHANNELS = ["MLC11", "MLC12", "MRO11", "MRO12"]
CHANNELS = [*MEG_CHANNELS, "BG1", "UPPT001"]
TYPES = ["mag"] * len(MEG_CHANNELS) + ["ref_meg", "stim"]


@dataclass(frozen=True)
class PlantedWord:
    """One word event of a miniature recording.

    Attributes
    ----------
    word : str
    onset : float
        Seconds from the start of the recording (a whole number of samples at ``SFREQ``).
    run : int
        Armeni: the run (story section) within the session; MEG-MASC: the sound file id.
    condition : str
        MEG-MASC only: ``sentence``, ``word_list`` or ``pseudo_words``.
    """

    word: str
    onset: float
    run: int = 1
    condition: str = "sentence"


@pytest.fixture
def no_meg_reading(monkeypatch):
    """Fail the test if any MEG recording is read (for errors that must come first)."""
    from brainalign.probe.datasets import speech_meg

    def refuse(*args, **kwargs):
        raise AssertionError("MEG was read before the input was checked")

    monkeypatch.setattr(speech_meg, "_epoch_recording", refuse)


def write_recording(
    root: Path,
    scratch: Path,
    entities: dict[str, str],
    data: np.ndarray,
    events: pd.DataFrame,
    *,
    sfreq: float = SFREQ,
    channels: Sequence[str] | None = None,
) -> Path:
    """Write one recording (RawArray -> FIF -> ``write_raw_bids``) and its published events.

    Parameters
    ----------
    entities : dict with subject, session, task
    data : ndarray of shape (n_channels, n_samples), SI units
    events : DataFrame in the data set's layout (written as is, tab-separated)
    channels : sequence of str, optional
        Names of magnetometers (default :data:`CHANNELS`, with a reference and a trigger).

    Returns
    -------
    Path of the events.tsv written.
    """
    import mne
    import mne_bids

    names, types = (CHANNELS, TYPES) if channels is None else (list(channels), "mag")
    info = mne.create_info(names, sfreq, types)
    name = "_".join(f"{key}-{value}" for key, value in entities.items())
    raw_path = scratch / f"{name}_raw.fif"
    mne.io.RawArray(data, info, verbose="error").save(raw_path, overwrite=True, verbose="error")
    raw = mne.io.read_raw_fif(raw_path, verbose="error")
    bids_path = mne_bids.BIDSPath(**entities, datatype="meg", root=root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne_bids.write_raw_bids(raw, bids_path, overwrite=True, verbose="error")
    path = Path(bids_path.copy().update(suffix="events", extension=".tsv").fpath)
    lines = ["\t".join(events.columns)]
    lines += ["\t".join(str(value) for value in row) for row in events.itertuples(index=False)]
    path.write_text("\n".join(lines) + "\n")
    return path


def impulses(
    words: Sequence[PlantedWord], values: Sequence[float], n_samples: int, lag: int
) -> np.ndarray:
    """MLC11 holds ``values[k]`` at word k's onset, MLC12 twice that ``lag`` samples later;
    MRO11 a slow background, MRO12 zero; no reference or trigger signal.

    Returns
    -------
    ndarray of shape (len(CHANNELS), n_samples)
    """
    data = np.zeros((len(CHANNELS), n_samples))
    data[2] = np.sin(np.arange(n_samples) / 7.0) * 1e-13
    for word, value in zip(words, values):
        sample = int(np.rint(word.onset * SFREQ))
        data[0, sample] += value
        data[1, sample + lag] += 2 * value
    return data


def planted_layers(
    onsets: Sequence[float],
    components: Sequence[np.ndarray],
    latencies: Sequence[float],
    n_samples: int,
    sfreq: float,
    *,
    n_channels: int,
    signal: float = 0.5,
    noise_seed: int = 0,
) -> np.ndarray:
    """Continuous MEG where each layer's components peak on the sensors at its own latency
    after each word's onset (a Gaussian bump of 30 ms sd), over unit white noise. The sensor
    patterns are the same in every call (one brain); the noise comes from ``noise_seed``.

    Parameters
    ----------
    onsets : sequence of float, (n_words,), seconds
    components : list of ndarray of shape (n_words, k)
        Per layer, the values to plant for each word (z-scored across words here).
    latencies : list of float, seconds, one per layer

    Returns
    -------
    ndarray of shape (n_channels, n_samples), in units of 1e-13 T
    """
    data = np.random.default_rng(noise_seed).standard_normal((n_channels, n_samples))
    patterns = np.random.default_rng(12345)
    times = np.arange(n_samples) / sfreq
    half_width = int(np.ceil(0.12 * sfreq))
    for values, latency in zip(components, latencies):
        z = (values - values.mean(0)) / values.std(0)
        pattern = signal * z @ patterns.standard_normal((z.shape[1], n_channels))  # (n, C)
        for onset, weights in zip(onsets, pattern):
            peak = int(np.rint((onset + latency) * sfreq))
            window = slice(max(peak - half_width, 0), min(peak + half_width + 1, n_samples))
            bump = np.exp(-0.5 * ((times[window] - onset - latency) / 0.03) ** 2)
            data[:, window] += weights[:, None] * bump[None, :]
    return data * 1e-13


# ---------------------------------------------------------------------- Armeni 2022
def armeni_events(words: Sequence[PlantedWord], *, silences: Sequence[float] = ()) -> pd.DataFrame:
    """Events of one Armeni session: ``onset duration sample type value``, in onset order.

    Each run starts with a ``wav_onset`` row and an ``UPPT001`` trigger 0.5 s before its first
    word; each word has a ``word_onset_NN`` row (value in double quotes) and a
    ``phoneme_onset_NN`` row at the same onset plus one 50 ms later; ``silences`` (onsets) get
    ``sp`` rows of both types, as the aligner writes them.
    """
    rows = []
    runs = sorted({word.run for word in words})
    for run in runs:
        first = min(word.onset for word in words if word.run == run)
        rows.append((first - 0.5, 0.0, "wav_onset", f"{run:02d}.wav"))
        rows.append((first - 0.5, 0.0, "UPPT001", str(10 * run)))
    for word in words:
        tag = f"{word.run:02d}"
        rows.append((word.onset, 0.05, f"phoneme_onset_{tag}", "AH0"))
        rows.append((word.onset, 0.2, f"word_onset_{tag}", f'"{word.word}"'))
        rows.append((word.onset + 0.05, 0.05, f"phoneme_onset_{tag}", "T"))
    for onset in silences:
        run = max((w.run for w in words if w.onset <= onset), default=runs[0])
        rows.append((onset, 0.1, f"word_onset_{run:02d}", "sp"))
        rows.append((onset, 0.1, f"phoneme_onset_{run:02d}", "sp"))
    table = pd.DataFrame(rows, columns=["onset", "duration", "type", "value"])
    table = table.sort_values("onset", kind="stable").reset_index(drop=True)
    table.insert(2, "sample", np.rint(table["onset"] * SFREQ).astype(int))
    table["onset"] = table["onset"].round(4)
    return table


# ---------------------------------------------------------------------- MEG-MASC
def meg_masc_events(story: str, words: Sequence[PlantedWord]) -> pd.DataFrame:
    """Events of one MEG-MASC recording: ``onset duration trial_type value sample``.

    ``PlantedWord.run`` is the sound file id; a sound starts 0.4 s before its first word and
    ``start`` is the time within it; sequences (sentences) hold 5 words each.
    """
    sounds = {}
    for word in words:
        sounds.setdefault(word.run, word.onset - 0.4)
    base = {"story": story, "story_uid": 0.0}
    rows = []
    for sound, onset in sounds.items():
        meta = {**base, "sound_id": float(sound), "kind": "sound", "start": 0.0,
                "sound": f"stimuli/audio/{story}_{sound}.0.wav"}  # fmt: skip
        rows.append((onset, 0.0, meta))
    for index, word in enumerate(words):
        start = float(round(word.onset - sounds[word.run], 4))
        shared = {**base, "sound_id": float(word.run), "start": start,
                  "sound": f"stimuli/audio/{story}_{word.run}.wav",
                  "sequence_id": float(index // 5), "condition": word.condition,
                  "word_index": float(index % 5), "speech_rate": 205.0, "voice": "Allison",
                  "pronounced": 1.0}  # fmt: skip
        rows.append((word.onset, 0.05, {**shared, "kind": "phoneme", "phoneme": "t_B"}))
        rows.append((word.onset, 0.3, {**shared, "kind": "word", "word": word.word}))
        rows.append((word.onset + 0.05, 0.05, {**shared, "kind": "phoneme", "phoneme": "ah_E"}))
    table = pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])
    table = table.sort_values("onset", kind="stable").reset_index(drop=True)
    table["trial_type"] = [repr(meta) for meta in table["trial_type"]]
    table["value"] = np.arange(1, len(table) + 1)
    table["sample"] = np.rint(table["onset"] * SFREQ).astype(int)
    table["onset"] = table["onset"].round(4)
    return table


def flatten_meg_masc_events(table: pd.DataFrame) -> pd.DataFrame:
    """The NEMAR nm000229 layout of the same events: dict keys as columns, trial_type = kind."""
    import ast

    keys = pd.DataFrame([ast.literal_eval(text) for text in table["trial_type"]])
    flat = table[["onset", "duration"]].assign(trial_type=keys["kind"])
    flat = flat.assign(value=table["value"], sample=table["sample"])
    return pd.concat([flat, keys], axis=1).astype(object).fillna("n/a")


def write_participants(root: Path, orders: dict[str, list[int]]) -> None:
    """``participants.tsv`` with ``task_order`` (as the release writes it) and n_sessions."""
    lines = ["participant_id\tage\tsex\thand\ttask_order\tn_sessions"]
    for subject, order in orders.items():
        lines.append(f'sub-{subject}\t25\tF\tR\t"{order}"\t2')
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
