"""MEG-MASC loader on a miniature BIDS folder in the published layout (see speech_bids).

sub-01 heard two stories (task 0 ``lw1``, task 1 ``cable_spool_fort``) in two sessions, in the
order of its ``task_order`` ``[1, 0]``: task 1 first. Each story has two sound files; a few of
its words belong to a word list or are a pseudo-word. Word row i of a story (every condition)
puts ``base = (offset + i + 1) * 1e-13`` times ``(1 + session)`` on MLC11 at its onset and twice
that on MLC12 ``LAG`` samples later, so session means and repeats are known exactly.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from speech_bids import (  # noqa: F401  (no_meg_reading is a fixture)
    SFREQ,
    PlantedWord,
    flatten_meg_masc_events,
    impulses,
    meg_masc_events,
    no_meg_reading,
    write_participants,
    write_recording,
)

from brainalign.probe.datasets import MegMascOptions, load_word_epochs, plan_word_epochs
from brainalign.probe.datasets.speech_meg import session_noise_ceiling
from brainalign.probe.scores import noise_ceiling_split_half

LAG = 6
EXACT = "l_freq=none&h_freq=none&raw_resample_hz=none&resample_hz=none&zscore=false"
WINDOW = "tmin=-0.2&tmax=0.5"
STORIES = {"0": ("lw1", 0), "1": ("cable_spool_fort", 1000)}  # task -> (story, value offset)


def story_words(seed: int) -> list[PlantedWord]:
    """Two sound files of 40 and 35 words; word list rows 30-35, a pseudo-word at 50."""
    rng = np.random.default_rng(seed)
    words, onset = [], 0.0
    for index in range(75):
        sound = 0 if index < 40 else 1
        if index == 40:
            onset += 1.5
        condition = "word_list" if 30 <= index < 36 else "sentence"
        condition = "pseudo_words" if index == 50 else condition
        words.append(PlantedWord(f"w{rng.integers(60)}", round(onset, 2), sound, condition))
        onset += rng.integers(25, 45) / SFREQ
    return words


def shifted(words: list[PlantedWord], start: float) -> list[PlantedWord]:
    return [PlantedWord(w.word, round(w.onset + start, 2), w.run, w.condition) for w in words]


def base_values(task: str) -> np.ndarray:
    return (STORIES[task][1] + np.arange(75) + 1) * 1e-13


def write_meg_masc(root, scratch, *, layout=meg_masc_events) -> None:
    for session in ("0", "1"):
        for task, (story, _) in STORIES.items():
            words = shifted(story_words(int(task)), 2.0 + float(session) + 0.5 * int(task))
            n_samples = int((words[-1].onset + 4.0) * SFREQ)
            data = impulses(words, base_values(task) * (1 + int(session)), n_samples, LAG)
            entities = {"subject": "01", "session": session, "task": task}
            write_recording(root, scratch, entities, data, layout(story, words))
    write_participants(root, {"01": [1, 0]})


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("meg-masc")
    write_meg_masc(root, tmp_path_factory.mktemp("scratch"))
    return root


@pytest.fixture
def masc(template, tmp_path):
    root = tmp_path / "meg-masc"
    shutil.copytree(template, root)
    return root


def sentence_rows(task: str) -> np.ndarray:
    return np.array([i for i, w in enumerate(story_words(int(task))) if w.condition == "sentence"])


# ---------------------------------------------------------------------- words and values
def test_sentence_words_in_task_order_with_both_sessions(masc):
    epochs = load_word_epochs(f"meg-masc:{masc}?subject=01&content=all&{EXACT}&{WINDOW}")
    table = epochs.table
    rows = {task: sentence_rows(task) for task in STORIES}
    n = {task: rows[task].size for task in STORIES}  # 68 per story
    assert n == {"0": 68, "1": 68}
    # presentation order: session 0 then 1; within each, task 1 (first in task_order) then 0
    assert table["session"].tolist() == ["0"] * 136 + ["1"] * 136
    assert table["task"].tolist() == (["1"] * 68 + ["0"] * 68) * 2
    assert table["story"].iloc[[0, 68]].tolist() == ["cable_spool_fort", "lw1"]
    planted = story_words(1)
    expected = [planted[i].word for i in rows["1"]] + [story_words(0)[i].word for i in rows["0"]]
    assert table["word"].tolist() == expected * 2
    onsets = [shifted(planted, 2.5)[i].onset for i in rows["1"]]
    np.testing.assert_allclose(table["onset"].iloc[:68], onsets)
    np.testing.assert_allclose(table["sample"].iloc[:68], np.rint(np.array(onsets) * SFREQ))
    # start: seconds within the sound file, not the MEG time
    first_of_sound_1 = table[(table["task"] == "1") & (table["sound_id"] == 1)].iloc[0]
    assert first_of_sound_1["start"] == pytest.approx(0.4)
    assert set(table["condition"]) == {"sentence"}
    # ids count word rows of every condition: the word after the word list is row 36
    lw1_ids = table[(table["task"] == "0") & (table["session"] == "0")]["stimulus_id"]
    assert lw1_ids.iloc[29:31].tolist() == ["lw1_sound0_0029", "lw1_sound0_0036"]
    assert lw1_ids.iloc[34] == "lw1_sound1_0000"  # ids restart with each sound file
    assert table["position"].iloc[68:70].tolist() == [0, 1]  # position within the story

    brain = epochs.brain
    assert brain.stimulus_ids == table["stimulus_id"].iloc[:136].tolist()  # one row per token
    zero = 20
    base = np.concatenate([base_values("1")[rows["1"]], base_values("0")[rows["0"]]])
    np.testing.assert_allclose(brain.data[:, 0, zero], 1.5 * base, rtol=1e-5)  # session mean
    np.testing.assert_allclose(brain.data[:, 1, zero + LAG], 3.0 * base, rtol=1e-5)
    assert brain.repeats.shape == (2, 136, 4, 71)
    np.testing.assert_allclose(brain.repeats[0, :, 0, zero], base, rtol=1e-5)
    np.testing.assert_allclose(brain.repeats[1, :, 0, zero], 2 * base, rtol=1e-5)
    assert epochs.words.ids == tuple(brain.stimulus_ids)
    assert epochs.words.stories[0] == "cable_spool_fort"


def test_noise_ceiling_is_the_split_half_across_sessions(masc):
    brain = load_word_epochs(f"meg-masc:{masc}?subject=1&content=all&{WINDOW}").brain
    assert brain.noise_ceiling.shape == (4, brain.times.size)
    flat = brain.repeats.reshape(2, brain.n_stimuli, -1).astype(np.float64)
    with np.errstate(invalid="ignore"):  # MRO12 is flat: NaN on both sides
        reference = np.array(
            [np.corrcoef(flat[0, :, j], flat[1, :, j])[0, 1] for j in range(flat.shape[2])]
        )
    reference = (2 * reference / (1 + reference)).reshape(4, -1)  # Spearman-Brown, 2 sessions
    np.testing.assert_allclose(brain.noise_ceiling, reference, rtol=1e-4, atol=1e-5)
    zero = int(np.argmin(np.abs(brain.times)))
    assert brain.noise_ceiling[0, zero] > 0.9  # the planted word values repeat across sessions


def test_session_noise_ceiling_recovers_a_known_reliability():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((20000, 3, 2))  # (words, channels, times)
    noise_sd = np.array([0.5, 1.0, 2.0])[None, :, None]
    repeats = signal[None] + noise_sd * rng.standard_normal((2, 20000, 3, 2))
    ceiling = session_noise_ceiling(repeats)
    half = 1 / (1 + noise_sd[0, :, 0] ** 2)  # correlation of two single sessions
    expected = np.repeat((2 * half / (1 + half))[:, None], 2, axis=1)  # Spearman-Brown
    np.testing.assert_allclose(ceiling, expected, atol=0.04)
    np.testing.assert_allclose(
        ceiling.reshape(-1), noise_ceiling_split_half(repeats.reshape(2, 20000, -1)), rtol=1e-6
    )


def test_conditions_sessions_tasks_and_order_options(masc):
    plan = plan_word_epochs(
        f"meg-masc:{masc}?subject=01&sessions=1&tasks=0&conditions=sentence,word_list"
    )
    assert plan.table["condition"].value_counts().to_dict() == {"sentence": 68, "word_list": 6}
    assert plan.table["stimulus_id"].iloc[30] == "lw1_sound0_0030"
    ordered = plan_word_epochs(f"meg-masc:{masc}?subject=01&sessions=0&order=task")
    assert [r.label for r in ordered.recordings] == ["sub-01 ses-0 task-0", "sub-01 ses-0 task-1"]
    with pytest.raises(ValueError, match=r"conditions \['story'\] unknown"):
        MegMascOptions(subject="1", conditions=("story",))


def test_the_nemar_flattened_layout_reads_the_same(masc, tmp_path_factory):
    root = tmp_path_factory.mktemp("nm000229")
    write_meg_masc(
        root,
        tmp_path_factory.mktemp("scratch"),
        layout=lambda story, words: flatten_meg_masc_events(meg_masc_events(story, words)),
    )
    assert "kind" in pd.read_csv(next(root.rglob("*_events.tsv")), sep="\t").columns
    spec = f"subject=01&content=all&{EXACT}&{WINDOW}"
    flat = load_word_epochs(f"meg-masc:{root}?{spec}")
    published = load_word_epochs(f"meg-masc:{masc}?{spec}")
    pd.testing.assert_frame_equal(flat.table, published.table)
    np.testing.assert_array_equal(flat.brain.data, published.brain.data)


# ---------------------------------------------------------------------- bad input
@pytest.mark.usefixtures("no_meg_reading")
def test_unknown_subject_session_or_task(masc):
    with pytest.raises(FileNotFoundError, match=r"no subject sub-03 .*present: \['sub-01'\]"):
        load_word_epochs(f"meg-masc:{masc}?subject=3")
    with pytest.raises(ValueError, match=r"no session\(s\) \['2'\]; sessions found: \['0', '1'\]"):
        load_word_epochs(f"meg-masc:{masc}?subject=01&sessions=0-2")
    with pytest.raises(ValueError, match=r"ses-0 has no task\(s\) \['3'\]; tasks found"):
        load_word_epochs(f"meg-masc:{masc}?subject=01&tasks=0,3")


@pytest.mark.usefixtures("no_meg_reading")
def test_events_without_words_or_with_broken_trial_types(masc):
    path = masc / "sub-01/ses-1/meg/sub-01_ses-1_task-0_events.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if "'kind': 'word'" not in line) + "\n")
    with pytest.raises(ValueError, match=r"task-0_events.tsv: no word events \(trial_type kind"):
        load_word_epochs(f"meg-masc:{masc}?subject=01")
    lines[3] = lines[3].replace("{", "[", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"task-0_events.tsv, line 4: trial_type .* not a dict"):
        load_word_epochs(f"meg-masc:{masc}?subject=01")
    other = masc / "sub-01/ses-0/meg/sub-01_ses-0_task-0_events.tsv"
    other.write_text(other.read_text().replace("'pseudo_words'", "'sentence'"))
    with pytest.raises(ValueError, match=r"task-0_events.tsv: no word event of condition"):
        load_word_epochs(f"meg-masc:{masc}?subject=01&sessions=0&tasks=0&conditions=pseudo_words")


@pytest.mark.usefixtures("no_meg_reading")
def test_sessions_must_describe_the_same_text(masc):
    path = masc / "sub-01/ses-1/meg/sub-01_ses-1_task-0_events.tsv"
    events = path.read_text().replace(f"'word': '{story_words(0)[0].word}'", "'word': 'other'")
    path.write_text(events)
    with pytest.raises(ValueError, match=r"tokens \['lw1_sound0_0000'.* are different words"):
        load_word_epochs(f"meg-masc:{masc}?subject=01")
