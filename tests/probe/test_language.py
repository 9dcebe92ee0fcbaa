"""Study C: word tables, per-word language-model features, and scores on planted MEG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")

from language import planted_word_meg, save_tiny_language_model, word_table

from brainalign.probe.brain_data import BrainData
from brainalign.probe.features import reduce_features, select_layers
from brainalign.probe.language import (
    DEFAULT_LANGUAGE_DEPTHS,
    WordSequence,
    extract_word_features,
    load_language_model,
    score_language,
)
from brainalign.probe.pipeline import EncodingConfig


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return save_tiny_language_model(tmp_path_factory.mktemp("lm") / "gpt2-tiny")


@pytest.fixture(scope="module")
def model(model_folder):
    return load_language_model(model_folder)


# ---------------------------------------------------------------------------- words
def test_word_table_columns_and_content_words():
    table = pd.DataFrame(
        {"stimulus_id": [1, 2, 3], "word": ["the", "cat", "sat"], "pos": ["DET", "NOUN", "verb"]}
    )
    words = WordSequence.from_table(table, "words.csv")
    assert words.ids == ("1", "2", "3")
    assert words.content.tolist() == [False, True, True]  # case-insensitive tags
    assert words.stories == ("0", "0", "0")
    flagged = WordSequence.from_table(table.assign(is_content=[1, 0, 0]), "words.csv")
    assert flagged.content.tolist() == [True, False, False]  # is_content wins over pos


@pytest.mark.parametrize(
    "table, message",
    [
        (pd.DataFrame({"stimulus_id": ["a"]}), r"words\.csv: .*column\(s\) \['word'\]"),
        (pd.DataFrame({"stimulus_id": ["a", "a"], "word": ["x", "y"]}), "repeated: \\['a'\\]"),
        (pd.DataFrame({"stimulus_id": ["a", "b"], "word": ["x", " "]}), "empty word .*\\['b'\\]"),
        (pd.DataFrame({"stimulus_id": [], "word": []}), "no rows"),
    ],
)
def test_word_table_errors_name_the_table(table, message):
    with pytest.raises(ValueError, match=message):
        WordSequence.from_table(table, "words.csv")


def test_contexts_stop_at_story_boundaries_and_at_the_context_length():
    table = pd.DataFrame(
        {
            "stimulus_id": list("abcdef"),
            "word": ["w1", "w2", "w3", "w4", "w5", "w6"],
            "story": ["s1", "s1", "s1", "s1", "s2", "s2"],
        }
    )
    words = WordSequence.from_table(table, "t")
    assert words.contexts(2) == [
        ["w1"],
        ["w1", "w2"],
        ["w1", "w2", "w3"],
        ["w2", "w3", "w4"],
        ["w5"],  # a new story starts without context
        ["w5", "w6"],
    ]
    assert words.contexts(0) == [[word] for word in words.words]


# ---------------------------------------------------------------------------- features
def _plain_loop(model_folder, words, context_words, layer):
    """The straightforward way: one forward pass per word on its context, last token."""
    import transformers

    module = transformers.AutoModel.from_pretrained(str(model_folder)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_folder))
    rows = []
    for context in words.contexts(context_words):
        ids = tokenizer(" ".join(context), add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            hidden = module(**ids, output_hidden_states=True).hidden_states
        rows.append(hidden[layer + 1][0, -1].numpy())
    return np.stack(rows)


def test_batched_features_equal_a_plain_loop_over_words(model_folder, model):
    words = WordSequence.from_table(word_table(40, n_stories=3), "t")
    assert model.depth == 6
    features = extract_word_features(
        model, words, layers=[1, 4], context_words=6, batch_size=7, progress=False
    )
    assert features[4].shape == (40, 32)
    np.testing.assert_allclose(
        features[4], _plain_loop(model_folder, words, 6, 4), rtol=1e-4, atol=1e-4
    )
    single = extract_word_features(model, words, layers=[1], context_words=6, batch_size=1)
    np.testing.assert_allclose(single[1], features[1], rtol=1e-5, atol=1e-5)


def test_features_never_see_later_words(model):
    table = word_table(12, n_stories=1)
    changed = table.copy()
    changed.loc[8, "word"] = "w59" if table.loc[8, "word"] != "w59" else "w58"
    before = extract_word_features(
        model, WordSequence.from_table(table, "t"), layers=[5], context_words=20, progress=False
    )[5]
    after = extract_word_features(
        model, WordSequence.from_table(changed, "t"), layers=[5], context_words=20, progress=False
    )[5]
    np.testing.assert_array_equal(before[:8], after[:8])  # words before the change
    assert not np.allclose(before[8:], after[8:])  # the changed word and those after it


def test_contexts_longer_than_the_model_keep_the_newest_tokens(model_folder, model):
    words = WordSequence.from_table(word_table(80, n_stories=1), "t")
    assert model.max_tokens == 64
    long = extract_word_features(model, words, layers=[2], context_words=100, progress=False)[2]
    capped = extract_word_features(model, words, layers=[2], context_words=63, progress=False)[2]
    np.testing.assert_allclose(long, capped, atol=1e-5)  # one token per word: same 64 tokens


def test_cached_word_features_skip_the_model(model, tmp_path, monkeypatch):
    from brainalign.probe.cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    words = WordSequence.from_table(word_table(20), "t")
    first = extract_word_features(
        model, words, layers=[1, 3], context_words=4, cache=cache, progress=False
    )

    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran although every layer is cached")

    monkeypatch.setattr(model.module, "forward", no_forward)
    again = extract_word_features(
        model, words, layers=[3, 1], context_words=4, cache=cache, progress=False
    )
    np.testing.assert_array_equal(again[1], first[1])
    np.testing.assert_array_equal(again[3], first[3])
    with pytest.raises(AssertionError, match="the model ran"):  # another context: a miss
        extract_word_features(model, words, layers=[1], context_words=5, cache=cache)
    other_words = WordSequence.from_table(word_table(20, seed=1), "t")
    with pytest.raises(AssertionError, match="the model ran"):  # other words: a miss
        extract_word_features(model, other_words, layers=[1], context_words=4, cache=cache)


def test_a_folder_without_tokenizer_files_is_refused(tmp_path, model_folder):
    import shutil

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(model_folder, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(ValueError, match="no-tokenizer: no usable tokenizer files"):
        load_language_model(folder)


# ---------------------------------------------------------------------------- scores
N_WORDS, TIMES = 400, np.arange(-3, 24) / 30.0  # -0.1 .. 0.77 s at 30 Hz


@pytest.fixture(scope="module")
def planted(model):
    table = word_table(N_WORDS)
    words = WordSequence.from_table(table, "t")
    layers = select_layers(model.depth, list(DEFAULT_LANGUAGE_DEPTHS))
    features = extract_word_features(model, words, layers=layers, context_words=8, progress=False)
    content = np.flatnonzero(words.content)
    components = reduce_features({layer: features[layer][content] for layer in layers}, 5)
    return words, layers, features, content, components


def _brain(words, content, data):
    return BrainData(
        modality="meg",
        subject="listener",
        stimulus_ids=[words.ids[index] for index in content],
        data=data,
        times=TIMES,
        targets=pd.DataFrame({"channel": [f"MEG{i:03d}" for i in range(data.shape[1])]}),
    )


@pytest.mark.parametrize("direction, sign", [("forward", 1.0), ("reversed", -1.0)])
def test_planted_latencies_give_the_temporal_score(model, planted, direction, sign):
    """Each layer's top 5 components peak on the sensors at its own latency (0.1 s, 0.2 s...
    with depth, or the reverse); decoding them back per time sample must find that order."""
    words, layers, features, content, components = planted
    latencies = [0.1 + 0.1 * index for index in range(len(layers))]
    if direction == "reversed":
        latencies = latencies[::-1]
    data = planted_word_meg([components[layer] for layer in layers], latencies, TIMES)
    depths = {layer: model.relative_depths[layer] for layer in layers}
    config = EncodingConfig(backend="numpy", direction="decoding", alphas=[1e-2, 1e0, 1e2, 1e4])
    scores = score_language(
        features, depths, words, _brain(words, content, data), n_components=5, config=config
    )
    summary = scores.summary
    assert summary["n_stimuli"] == len(content) < N_WORDS  # function words are not scored
    assert sign * summary["temporal_score"] > 0.9
    peaks = np.array(summary["t_max"])
    assert np.all(np.abs(peaks - np.array(latencies)) <= 0.1), (peaks, latencies)
    assert set(scores.table["feature_kind"]) == {"language"}


def test_meg_ids_missing_from_the_word_table_are_named(model, planted):
    words, layers, features, content, _ = planted
    brain = _brain(words, content, np.zeros((len(content), 4, TIMES.size), dtype=np.float32))
    brain.stimulus_ids[-1] = "not-a-word"
    with pytest.raises(ValueError, match=r"1 MEG stimulus ids are not in the word table.*not-a"):
        score_language(features, {layer: 0.5 for layer in layers}, words, brain)


# ---------------------------------------------------------------------------- batching
def test_batches_by_length_pad_less_and_cover_every_word():
    from brainalign.probe.language import length_batches

    lengths = [3, 40, 5, 38, 4, 41, 6, 39]
    unsorted = length_batches(lengths, 2, sort=False)
    by_length = length_batches(lengths, 2)

    def padding(batches):
        widths = [len(b) * max(lengths[i] for i in b) for b in batches]
        return sum(widths) - sum(lengths)

    assert sorted(np.concatenate(by_length).tolist()) == list(range(8))
    assert [lengths[i] for i in by_length[0]] == [41, 40]  # longest first: memory errors early
    assert padding(by_length) == 4 < padding(unsorted) == 140
    capped = length_batches(lengths, 8, max_tokens=80)
    assert all(len(b) * max(lengths[i] for i in b) <= 80 for b in capped if len(b) > 1)
    assert sorted(np.concatenate(capped).tolist()) == list(range(8))


def test_features_batched_by_length_equal_the_unsorted_order(model):
    rng = np.random.default_rng(3)
    table = word_table(60, n_stories=5)
    table["story"] = rng.choice(["a", "b", "c"], size=60)  # many story changes: lengths vary
    words = WordSequence.from_table(table.sort_values("story", kind="stable"), "t")
    options = dict(layers=[0, 3, 5], context_words=10, batch_size=8, progress=False)
    by_length = extract_word_features(model, words, **options)
    unsorted = extract_word_features(model, words, sort_by_length=False, **options)
    capped = extract_word_features(model, words, max_batch_tokens=24, **options)
    for layer in (0, 3, 5):
        np.testing.assert_allclose(by_length[layer], unsorted[layer], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(capped[layer], unsorted[layer], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- model folders
@pytest.mark.parametrize("name", ["tokenizer_config.json", "config.json"])
def test_a_folder_that_needs_remote_code_is_refused_before_the_weights(
    tmp_path, model_folder, monkeypatch, name
):
    import json
    import shutil

    from brainalign.probe import models

    folder = tmp_path / "remote"
    shutil.copytree(model_folder, folder)
    settings = json.loads((folder / name).read_text())
    settings["auto_map"] = {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}
    (folder / name).write_text(json.dumps(settings))

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were read before the folder was checked")

    monkeypatch.setattr(models, "load_huggingface_module", no_weights)
    what = "tokenizer" if name.startswith("tokenizer") else "model"
    with pytest.raises(ValueError, match=rf"{name}: the {what} needs remote code \(auto_map"):
        load_language_model(folder)


# ---------------------------------------------------------------------------- content, ceiling
def test_unknown_content_words_are_refused_unless_every_word_is_scored(model, planted):
    words, layers, features, _, _ = planted
    unknown = WordSequence(words.ids, words.words, words.stories, words.content, False, "x.tsv")
    brain = _brain(unknown, np.arange(len(words)), np.zeros((len(words), 2, 27), np.float32))
    with pytest.raises(ValueError, match="x.tsv: which words are content words is unknown"):
        score_language(features, {layer: 0.5 for layer in layers}, unknown, brain)


@pytest.mark.slow
def test_noise_ceiling_rows_stand_beside_the_scores(model, planted):
    """Two planted 'sessions': the r rows are those of their mean, the ceiling its own rows."""
    words, layers, features, content, components = planted
    latencies = [0.1 + 0.1 * index for index in range(len(layers))]
    rng = np.random.default_rng(1)
    signal = planted_word_meg([components[layer] for layer in layers], latencies, TIMES)
    sessions = signal[None] + rng.standard_normal((2, *signal.shape)).astype(np.float32)
    mean = sessions.mean(axis=0)
    depths = {layer: model.relative_depths[layer] for layer in layers}
    config = EncodingConfig(backend="numpy", direction="decoding", alphas=[1e-2, 1e0, 1e2])
    kwargs = dict(n_components=5, config=config)
    plain = score_language(features, depths, words, _brain(words, content, mean), **kwargs)
    with_repeats = _brain(words, content, mean)
    with_repeats.repeats = sessions
    scored = score_language(features, depths, words, with_repeats, **kwargs)
    is_ceiling = scored.table["metric"].isin(["noise_ceiling", "noise_ceiling_r"])
    ceiling_rows = scored.table[scored.table["metric"] == "noise_ceiling"]
    pd.testing.assert_frame_equal(
        scored.table[~is_ceiling].reset_index(drop=True),
        plain.table.reset_index(drop=True),
    )  # never folded into the scores
    # per (channel, time) from the language probe, per time and overall from the core, once
    assert len(ceiling_rows) == (24 + 1) * TIMES.size + 1
    assert not ceiling_rows.duplicated(["group", "time"]).any()
    flat = sessions.reshape(2, len(content), -1).astype(np.float64)
    r = np.array([np.corrcoef(flat[0, :, j], flat[1, :, j])[0, 1] for j in range(flat.shape[2])])
    per_channel = ceiling_rows[ceiling_rows["group"] == "MEG003"].sort_values("time")
    np.testing.assert_allclose(
        per_channel["value"], (2 * r / (1 + r)).reshape(24, -1)[3], rtol=1e-4, atol=1e-6
    )
    assert scored.summary["noise_ceiling_words"] == len(content)
    assert scored.summary["noise_ceiling"] == pytest.approx(np.mean(2 * r / (1 + r)), abs=1e-5)


def test_bf16_autocast_features_are_cached_apart_and_close(model, tmp_path):
    """The GPU path's precision on CPU: bf16 autocast changes the cache key, not the answer
    beyond bf16 rounding."""
    from brainalign.probe.cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    words = WordSequence.from_table(word_table(30, n_stories=2), "t")
    options = dict(layers=[2], context_words=6, progress=False, device="cpu", cache=cache)
    full = extract_word_features(model, words, dtype="float32", **options)[2]
    half = extract_word_features(model, words, dtype="bfloat16", **options)[2]
    assert not np.array_equal(full, half)  # computed again, in bf16: not the cached float32
    correlation = np.corrcoef(full.ravel(), half.ravel())[0, 1]
    assert correlation > 0.99
