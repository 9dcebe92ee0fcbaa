"""Armeni 2022 loader on a miniature BIDS folder in the published layout (see speech_bids).

sub-001 has two sessions: session 001 with runs 1 and 2 of one story, session 002 with one run.
Each word k (counted over the subject, in presentation order) puts ``(k + 1) * 1e-13`` on MLC11
at its onset and twice that on MLC12 ``LAG`` samples later. The events also hold what is not a
word: ``sp`` silences typed as word onsets, phoneme rows, ``wav_onset`` and trigger rows.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from speech_bids import (  # noqa: F401  (no_meg_reading is a fixture)
    SFREQ,
    PlantedWord,
    armeni_events,
    impulses,
    no_meg_reading,
    write_recording,
)

from brainalign.probe.datasets import Armeni2022Options, load_word_epochs, plan_word_epochs
from brainalign.probe.datasets.armeni2022 import load_armeni2022
from brainalign.probe.formats import load_brain

LAG = 7  # samples
EXACT = "l_freq=none&h_freq=none&raw_resample_hz=none&resample_hz=none&zscore=false"
WINDOW = "tmin=-0.2&tmax=0.5"


def _session_words(rng: np.random.Generator, runs: dict[int, int], start: float) -> list:
    """Words of one session: ``runs`` maps run -> number of words; onsets on whole samples."""
    words, onset = [], start
    for run, count in runs.items():
        for _ in range(count):
            words.append(PlantedWord(f"W{rng.integers(100)}", round(onset, 2), run=run))
            onset += rng.integers(25, 45) / SFREQ
        onset += 2.0  # a break between runs
    return words


def _write(root, scratch, planted: dict[str, list[PlantedWord]], first_value: int = 0) -> None:
    value = first_value
    for session, words in planted.items():
        values = [(value + k + 1) * 1e-13 for k in range(len(words))]
        value += len(words)
        n_samples = int((words[-1].onset + 4.0) * SFREQ)
        silences = [round(words[3].onset + 0.12, 2), round(words[-2].onset + 0.15, 2)]
        write_recording(
            root,
            scratch,
            {"subject": "001", "session": session, "task": "compr"},
            impulses(words, values, n_samples, LAG),
            armeni_events(words, silences=silences),
        )


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("armeni")
    scratch = tmp_path_factory.mktemp("scratch")
    rng = np.random.default_rng(0)
    planted = {
        "001": _session_words(rng, {1: 70, 2: 60}, start=3.0),
        "002": _session_words(rng, {1: 80}, start=3.2),
    }
    _write(root, scratch, planted)
    return root, planted


@pytest.fixture
def armeni(template, tmp_path):
    root = tmp_path / "armeni"
    shutil.copytree(template[0], root)
    return root, template[1]


def _all_words(planted):
    return [word for session in ("001", "002") for word in planted[session]]


# ---------------------------------------------------------------------- words and values
def test_words_onsets_and_values_in_presentation_order(armeni):
    root, planted = armeni
    epochs = load_word_epochs(f"armeni2022:{root}?subject=1&content=all&{EXACT}&{WINDOW}")
    expected = _all_words(planted)
    table = epochs.table
    assert table["word"].tolist() == [word.word for word in expected]  # quotes stripped
    np.testing.assert_allclose(table["onset"], [word.onset for word in expected])
    np.testing.assert_array_equal(table["sample"], [round(w.onset * SFREQ) for w in expected])
    assert table["session"].tolist() == ["001"] * 130 + ["002"] * 80
    assert table["run"].tolist() == [word.run for word in expected]
    assert table["story"].tolist() == ["ses-001"] * 130 + ["ses-002"] * 80  # runs share a story
    assert table["position"].tolist() == list(range(130)) + list(range(80))
    assert table["stimulus_id"].iloc[[0, 69, 70, 130]].tolist() == [
        "ses-001_run-01_00000", "ses-001_run-01_00069", "ses-001_run-02_00000",
        "ses-002_run-01_00000",
    ]  # fmt: skip
    brain = epochs.brain
    assert brain.subject == "sub-001"
    assert brain.stimulus_ids == table["stimulus_id"].tolist()
    assert brain.targets["channel"].tolist() == ["MLC11", "MLC12", "MRO11", "MRO12"]
    np.testing.assert_allclose(brain.times, np.arange(-20, 51) / SFREQ)
    zero = 20
    values = (np.arange(len(expected)) + 1) * 1e-13
    np.testing.assert_allclose(brain.data[:, 0, zero], values, rtol=1e-5)
    np.testing.assert_allclose(brain.data[:, 1, zero + LAG], 2 * values, rtol=1e-5)
    assert brain.repeats is None and brain.noise_ceiling is None  # no session repeats a story
    assert epochs.words.ids == tuple(brain.stimulus_ids)
    assert epochs.words.stories[:2] == ("ses-001", "ses-001")
    assert epochs.words.content_known and epochs.words.content.all()


def test_onsets_from_the_sample_column_are_samples_at_the_recorded_rate(armeni):
    root, _ = armeni
    options = f"subject=1&content=all&{WINDOW}&l_freq=none&h_freq=none&resample_hz=none"
    seconds = load_word_epochs(f"armeni2022:{root}?{options}&raw_resample_hz=50").brain
    samples = load_word_epochs(
        f"armeni2022:{root}?{options}&raw_resample_hz=50&onsets=samples"
    ).brain
    assert seconds.times[1] - seconds.times[0] == pytest.approx(1 / 50)
    np.testing.assert_array_equal(samples.data, seconds.data)  # both moved with the data
    assert np.abs(seconds.data[:, 0]).max() > 1e-13


def test_study_preprocessing_defaults(armeni):
    root, _ = armeni
    brain = load_word_epochs(f"armeni2022:{root}?subject=1&sessions=2&content=all").brain
    # band-pass 0.1-20 Hz, -2.5..+3 s, 30 Hz, z-scored per (channel, time) across words
    assert brain.times[0] == pytest.approx(-2.5) and brain.times[-1] == pytest.approx(3.0)
    assert brain.times.size == 166 and brain.n_stimuli == 80
    np.testing.assert_allclose(brain.data.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(brain.data[:, :3].std(axis=0), 1.0, atol=1e-4)
    assert not brain.data[:, 3].any()  # MRO12 is flat: constant (channel, time) become 0


def test_sessions_runs_story_and_case_options(armeni):
    root, planted = armeni
    plan = plan_word_epochs(
        f"armeni2022:{root}?subject=001&sessions=1&runs=2&story=run&lowercase=true"
    )
    assert plan.table["word"].tolist() == [w.word.lower() for w in planted["001"][70:]]
    assert set(plan.table["story"]) == {"ses-001_run-02"}
    assert plan.table["position"].tolist() == list(range(60))
    assert [recording.label for recording in plan.recordings] == ["sub-001 ses-001"]


def test_load_brain_gives_the_epochs_without_stimuli(armeni):
    root, _ = armeni
    brain, stimuli = load_brain(f"armeni2022:{root}?subject=1&sessions=2&{EXACT}&{WINDOW}")
    assert stimuli is None and brain.n_stimuli == 80
    with pytest.raises(ValueError, match="preparation comes from the spec's options"):
        from brainalign.probe.meg import MEGPreparation

        load_brain(f"armeni2022:{root}?subject=1", meg_preparation=MEGPreparation())


# ---------------------------------------------------------------------- content words
def test_content_words_unknown_by_default_or_from_a_table(armeni, tmp_path):
    root, _ = armeni
    spec = f"armeni2022:{root}?subject=1&sessions=2"
    plan = plan_word_epochs(spec)
    assert plan.table["is_content"].isna().all()
    assert not plan.words.content_known
    table = plan.table[["stimulus_id", "word"]].copy()
    table["pos"] = ["NOUN" if index % 3 else "DET" for index in range(len(table))]
    table.to_csv(tmp_path / "pos.csv", index=False)
    words = plan_word_epochs(f"{spec}&content_table={tmp_path / 'pos.csv'}").words
    assert words.content_known
    assert words.content.tolist() == [bool(index % 3) for index in range(80)]
    table.loc[5, "word"] = "other"
    table.to_csv(tmp_path / "wrong.csv", index=False)
    with pytest.raises(ValueError, match=r"is the word .* but 'other' in the table"):
        plan_word_epochs(f"{spec}&content_table={tmp_path / 'wrong.csv'}")
    table.iloc[:10].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match="70 word tokens of armeni2022 sub-001 have no row"):
        plan_word_epochs(f"{spec}&content_table={tmp_path / 'short.csv'}")


# ---------------------------------------------------------------------- bad input
@pytest.mark.usefixtures("no_meg_reading")
def test_unknown_subject_and_session_are_named(armeni):
    root, _ = armeni
    with pytest.raises(FileNotFoundError, match=r"no subject sub-002 .*present: \['sub-001'\]"):
        load_word_epochs(f"armeni2022:{root}?subject=2")
    with pytest.raises(ValueError, match=r"no session\(s\) \['004'\]; sessions found: \['001'"):
        load_word_epochs(f"armeni2022:{root}?subject=1&sessions=1,4")
    with pytest.raises(ValueError, match=r"no word of run\(s\) \[3\]; runs present: \[1, 2\]"):
        load_word_epochs(f"armeni2022:{root}?subject=1&runs=3")
    with pytest.raises(ValueError, match="armeni2022 needs a subject"):
        load_word_epochs(f"armeni2022:{root}")
    with pytest.raises(ValueError, match="did you mean 'sessions'"):
        load_word_epochs(f"armeni2022:{root}?subject=1&session=1")


@pytest.mark.usefixtures("no_meg_reading")
def test_events_without_words_or_missing(armeni):
    root, _ = armeni
    path = root / "sub-001/ses-002/meg/sub-001_ses-002_task-compr_events.tsv"
    events = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    not_words = events[~events["type"].str.startswith("word_onset") | (events["value"] == "sp")]
    not_words.to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"ses-002_task-compr_events.tsv: no word events"):
        load_word_epochs(f"armeni2022:{root}?subject=1")
    events.drop(columns="type").to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['type'\]"):
        load_word_epochs(f"armeni2022:{root}?subject=1")
    path.unlink()
    with pytest.raises(FileNotFoundError, match="looked for sub-001_ses-002_task-compr_events"):
        load_word_epochs(f"armeni2022:{root}?subject=1")


def test_options_are_checked(armeni):
    root, _ = armeni
    with pytest.raises(ValueError, match="'story' must be one of"):
        plan_word_epochs(f"armeni2022:{root}?subject=1&story=book")
    with pytest.raises(ValueError, match=r"tmin \(3.0\) must be below tmax"):
        Armeni2022Options(subject="1", tmin=3.0, tmax=1.0)
    with pytest.raises(FileNotFoundError, match="armeni2022: no BIDS folder"):
        load_armeni2022(root / "missing", Armeni2022Options(subject="1"))
