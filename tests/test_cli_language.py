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
