"""``brainalign probe-language`` end to end: a tiny GPT-2 folder and word-locked MEG in a .fif.

The MEG is planted: each probed layer's top components peak on the sensors at a latency that
grows with depth, so the command must report a temporal score near 1.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")

from language import planted_word_meg, save_tiny_language_model, word_table

from brainalign.probe.features import reduce_features, select_layers
from brainalign.probe.formats import write_meg_epochs
from brainalign.probe.language import (
    DEFAULT_LANGUAGE_DEPTHS,
    WordSequence,
    extract_word_features,
    load_language_model,
)
from test_cli_offline import _fails_cleanly, brainalign

TIMES = np.arange(-3, 24) / 30.0  # -0.1 .. 0.77 s at 30 Hz
CHANNELS = [f"MEG{i:03d}" for i in range(24)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """``lm/`` (tiny GPT-2), ``words.csv`` (every word) and ``sub-01_words-epo.fif``
    (content words only, planted)."""
    folder = tmp_path_factory.mktemp("language")
    save_tiny_language_model(folder / "lm")
    table = word_table(400)
    table.to_csv(folder / "words.csv", index=False)
    words = WordSequence.from_table(table, "words.csv")
    model = load_language_model(folder / "lm")
    layers = select_layers(model.depth, list(DEFAULT_LANGUAGE_DEPTHS))
    features = extract_word_features(model, words, layers=layers, context_words=8, progress=False)
    content = np.flatnonzero(words.content)
    components = reduce_features({layer: features[layer][content] for layer in layers}, 5)
    latencies = [0.1 + 0.1 * index for index in range(len(layers))]
    data = planted_word_meg([components[layer] for layer in layers], latencies, TIMES)
    metadata = table.iloc[content].drop(columns="stimulus_id").reset_index(drop=True)
    write_meg_epochs(
        folder / "sub-01_words-epo.fif",
        data * 1e-13,
        TIMES,
        CHANNELS,
        30.0,
        [words.ids[index] for index in content],
        metadata=metadata,
    )
    return folder, latencies, len(content)


@pytest.mark.slow
def test_probe_language_recovers_the_planted_order(workspace):
    folder, latencies, n_content = workspace
    brainalign(
        folder,
        *("probe-language", "--model", "lm", "--brain", "sub-01_words-epo.fif"),
        *("--words", "words.csv", "--context", 8, "--pca", 5, "--backend", "numpy"),
        *("--out", "out"),
    )
    summary = json.loads((folder / "out" / "summary.json").read_text())
    result = summary["results"][0]
    assert result["subject"] == "sub-01_words" and result["direction"] == "decoding"
    assert result["n_stimuli"] == n_content
    assert result["temporal_score"] > 0.9
    assert np.all(np.abs(np.array(result["t_max"]) - latencies) <= 0.1)
    table = pd.read_parquet(folder / "out" / "scores.parquet")
    assert set(table["feature_kind"]) == {"language"}
    assert table[table["metric"] == "r"]["time"].nunique() == len(TIMES)
    figures = sorted(path.name for path in (folder / "out" / "figures").iterdir())
    assert figures == ["sub-01_words_meg_language_meg_time_courses.png"]


@pytest.mark.slow
def test_epochs_of_words_missing_from_the_table_are_named(workspace, tmp_path):
    folder, _, _ = workspace
    table = pd.read_csv(folder / "words.csv", dtype={"stimulus_id": str})
    table.iloc[:200].to_csv(tmp_path / "short.csv", index=False)
    _fails_cleanly(
        tmp_path,
        *("probe-language", "--model", folder / "lm", "--out", "out"),
        *("--brain", folder / "sub-01_words-epo.fif", "--words", "short.csv"),
        expected="epochs name stimulus ids missing from the word table",
    )


@pytest.mark.slow
def test_epochs_without_words_need_a_word_table(workspace, tmp_path):
    folder, _, _ = workspace
    write_meg_epochs(
        tmp_path / "bare-epo.fif",
        np.zeros((12, 2, 5), dtype=np.float32),
        np.arange(5) / 30.0,
        ["MEG001", "MEG002"],
        30.0,
        [f"w{index}" for index in range(12)],
    )
    _fails_cleanly(
        tmp_path,
        *("probe-language", "--model", folder / "lm", "--out", "out", "--brain", "bare-epo.fif"),
        expected="bare-epo.fif (epochs metadata): the word table needs the column(s) ['word']",
    )


@pytest.mark.slow
def test_a_model_folder_is_checked_before_the_meg_is_read(tmp_path):
    _fails_cleanly(
        tmp_path,
        *("probe-language", "--model", "no_such_model", "--out", "out"),
        *("--brain", "missing-epo.fif"),  # would fail too, were it read first
        expected="no_such_model is not a Hugging Face model folder",
    )


# ---------------------------------------------------------------------------- speech data sets
SPEECH_SFREQ = 120.0
SPEECH_CHANNELS = [f"MEG {index:03d}" for index in range(1, 17)]
SPEECH_WINDOW = "tmin=-0.1&tmax=0.8&content=all"


def _story_words(story_seed: int, n_words: int):
    """Words of one story, 1.2 s apart (no overlap of the planted responses), two sounds."""
    from speech_bids import PlantedWord

    rng = np.random.default_rng(story_seed)
    return [
        PlantedWord(f"w{rng.integers(60)}", round(3.0 + 1.2 * i, 3), 0 if i < n_words // 2 else 1)
        for i in range(n_words)
    ]


def _write_masc(root, scratch, data_for) -> None:
    from speech_bids import meg_masc_events, write_participants, write_recording

    for session in ("0", "1"):
        for task, story in (("0", "lw1"), ("1", "easy_money")):
            words = _story_words(int(task), 100)
            n_samples = int((words[-1].onset + 4.0) * SPEECH_SFREQ)
            write_recording(
                root,
                scratch,
                {"subject": "01", "session": session, "task": task},
                data_for(session, task, n_samples),
                meg_masc_events(story, words),
                sfreq=SPEECH_SFREQ,
                channels=SPEECH_CHANNELS,
            )
    write_participants(root, {"01": [1, 0]})


@pytest.fixture(scope="module")
def speech_workspace(tmp_path_factory):
    """``lm/`` and ``meg-masc/``: two sessions of two stories whose MEG carries each probed
    layer's top components at a latency growing with depth. The words are planned once from
    the events (no MEG needed), the features computed, then the recordings written."""
    from speech_bids import planted_layers

    from brainalign.probe.datasets import plan_word_epochs

    folder = tmp_path_factory.mktemp("speech")
    scratch = tmp_path_factory.mktemp("scratch")
    save_tiny_language_model(folder / "lm")
    root = folder / "meg-masc"
    n_channels = len(SPEECH_CHANNELS)
    _write_masc(root, scratch, lambda session, task, n: np.zeros((n_channels, n)))
    plan = plan_word_epochs(f"meg-masc:{root}?subject=01&{SPEECH_WINDOW}")
    model = load_language_model(folder / "lm")
    layers = select_layers(model.depth, list(DEFAULT_LANGUAGE_DEPTHS))
    features = extract_word_features(model, plan.words, layers=layers, context_words=8)
    components = reduce_features(features, 5)
    row_of = {stimulus_id: row for row, stimulus_id in enumerate(plan.words.ids)}
    latencies = [0.1 + 0.08 * index for index in range(len(layers))]

    def data_for(session, task, n_samples):
        rows = plan.table[(plan.table["session"] == session) & (plan.table["task"] == task)]
        index = [row_of[stimulus_id] for stimulus_id in rows["stimulus_id"]]
        return planted_layers(
            rows["onset"].to_numpy(),
            [components[layer][index] for layer in layers],
            latencies,
            n_samples,
            SPEECH_SFREQ,
            n_channels=n_channels,
            noise_seed=int(session) * 10 + int(task),  # noise differs, the signal repeats
        )

    _write_masc(root, scratch, data_for)
    return folder, latencies


@pytest.mark.slow
def test_probe_language_on_meg_masc_recovers_the_planted_order(speech_workspace):
    folder, latencies = speech_workspace
    spec = f"meg-masc:meg-masc?subject=01&{SPEECH_WINDOW}"
    brainalign(
        folder,
        *("probe-language", "--model", "lm", "--brain", spec, "--all-words"),
        *("--context", 8, "--pca", 5, "--backend", "numpy", "--out", "out"),
    )
    summary = json.loads((folder / "out" / "summary.json").read_text())
    result = summary["results"][0]
    assert result["subject"] == "sub-01" and result["n_stimuli"] == 200
    assert result["temporal_score"] > 0.9
    assert np.all(np.abs(np.array(result["t_max"]) - latencies) <= 0.1)
    assert result["noise_ceiling_words"] == 200
    table = pd.read_parquet(folder / "out" / "scores.parquet")
    ceiling = table[table["metric"] == "noise_ceiling"]
    assert set(ceiling["group"]) == {*SPEECH_CHANNELS, "time", "all"}
    assert not ceiling.duplicated(["group", "time"]).any()
    per_time = ceiling[ceiling["group"] == "time"].set_index("time")["value"]
    # the planted responses repeat across sessions, the noise does not
    assert per_time.loc[0.1 : latencies[-1]].min() > 0.5 and per_time.loc[:-0.05].max() < 0.2


@pytest.mark.slow
def test_content_words_of_a_speech_data_set_must_be_known(speech_workspace, tmp_path):
    folder, _ = speech_workspace
    spec = f"meg-masc:{folder / 'meg-masc'}?subject=01&tmin=-0.1&tmax=0.8"
    _fails_cleanly(
        tmp_path,
        *("probe-language", "--model", folder / "lm", "--out", "out", "--brain", spec),
        expected="which words are content words is unknown",
    )


@pytest.mark.slow
def test_speech_spec_errors_come_before_the_meg_and_the_model(speech_workspace, tmp_path):
    import shutil

    folder, _ = speech_workspace
    spec = f"meg-masc:{folder / 'meg-masc'}?subject=01&sessions=0,2"
    _fails_cleanly(
        tmp_path,
        *("probe-language", "--model", folder / "lm", "--out", "out", "--brain", spec),
        expected=r"meg-masc sub-01 has no session(s) ['2']; sessions found: ['0', '1']",
    )
    remote = tmp_path / "remote-lm"
    shutil.copytree(folder / "lm", remote)
    settings = json.loads((remote / "tokenizer_config.json").read_text())
    settings["auto_map"] = {"AutoTokenizer": ["my_tokenizer.Tokenizer", None]}
    (remote / "tokenizer_config.json").write_text(json.dumps(settings))
    _fails_cleanly(
        tmp_path,
        *("probe-language", "--model", remote, "--out", "out", "--brain", spec),
        expected="the tokenizer needs remote code",
    )


@pytest.mark.slow
def test_a_study_calls_the_probe_with_typed_arguments(workspace, tmp_path):
    """The library call (a study's way in) gives the command's result, with a preloaded model."""
    from pathlib import Path

    from brainalign.probe.language_run import LanguageProbeConfig, probe_language

    folder, latencies, _ = workspace
    config = LanguageProbeConfig(
        model=Path(folder / "lm"),
        brain=(str(folder / "sub-01_words-epo.fif"),),
        words=Path(folder / "words.csv"),
        context_words=8,
        pca=5,
        backend="numpy",
        cache_dir=None,
    )
    run = probe_language(config, model=load_language_model(folder / "lm"), progress=False)
    result = run.summary["results"][0]
    assert result["temporal_score"] > 0.9
    assert np.all(np.abs(np.array(result["t_max"]) - latencies) <= 0.1)
    assert set(run.table["model"]) == {str(folder / "lm")}
    with pytest.raises(ValueError, match="give at least one brain data set"):
        LanguageProbeConfig(model=Path(folder / "lm"), brain=())
