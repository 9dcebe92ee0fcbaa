"""Study C: per-word features of a causal language model, scored against word-locked MEG.

Example::

    words = WordSequence.from_table(pd.read_csv("words.csv"), "words.csv")
    model = load_language_model("models/pythia-14m")  # a Hugging Face folder on disk
    features = extract_word_features(model, words, layers=select_layers(model.depth, DEPTHS))

Each word is read by the model with its preceding ``context_words`` words of the same story
(50 by default, as in Study C) and represented by the hidden state of its *last* token, per
layer (block outputs, ``hidden_states[layer + 1]``). A story boundary resets the context.
Scoring (:func:`score_language`) keeps the content words (noun, verb, adjective, adverb by
default) that have an MEG epoch, reduces each layer to ``n_components`` PCA components (50) and
maps MEG to features with one decoder per time sample (brain -> model, Study C's published
direction; ``direction="encoding"`` fits model -> every (channel, time)), alphas 1e-4..1e8. The
temporal score is Study A's: Pearson r between layer depth and T_max.

The word table is :mod:`brainalign.probe.words` and the model folder
:mod:`brainalign.probe.language_model` (both re-exported here); this module extracts the
features and scores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from brainalign.probe.brain_data import BrainData
from brainalign.probe.cache import FeatureCache, features_through_cache
from brainalign.probe.config import DEFAULT_LANGUAGE_ALPHAS, DEFAULT_LANGUAGE_DEPTHS
from brainalign.probe.features import reduce_features, resolve_device, resolve_dtype
from brainalign.probe.language_model import (
    LanguageModel,
    check_language_model_folder,
    load_language_model,
)
from brainalign.probe.metrics.per_group import encoding_ceiling
from brainalign.probe.pipeline import EncodingConfig, ProbeScores, score_layers
from brainalign.probe.words import CONTENT_POS, WordSequence

__all__ = [
    "CONTENT_POS",
    "DEFAULT_LANGUAGE_ALPHAS",
    "DEFAULT_LANGUAGE_DEPTHS",
    "LanguageModel",
    "WordSequence",
    "check_language_model_folder",
    "extract_word_features",
    "length_batches",
    "load_language_model",
    "noise_ceiling_rows",
    "score_language",
]


# ---------------------------------------------------------------------------- features
def extract_word_features(
    model: LanguageModel,
    words: WordSequence,
    *,
    layers: Sequence[int],
    context_words: int = 50,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    sort_by_length: bool = True,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    progress: bool = True,
    cache: FeatureCache | None = None,
) -> dict[int, np.ndarray]:
    """Hidden state of each word's last token, per layer, with its preceding context.

    Parameters
    ----------
    model : LanguageModel
    words : WordSequence
    layers : sequence of int
        Block indices in ``[0, model.depth)``.
    context_words : int
        Words of the same story read before each word (0: the word alone).
    batch_size : int
        Contexts per forward pass (right-padded; the attention mask hides the padding).
    max_batch_tokens : int, optional
        Also cap each batch at this many (padded) tokens, so long contexts come in smaller
        batches (GPU memory grows with batch x length).
    sort_by_length : bool
        Batch contexts of similar token length together, longest first (little padding, and
        an out-of-memory error comes in the first batch); the features do not depend on it.
    device, dtype
        As in :func:`brainalign.probe.features.extract_features` (bf16 autocast on CUDA).
    progress : bool
    cache : FeatureCache, optional
        Layers found in the cache (same weights, tokenizer, words, context and precision) are
        not recomputed; the model does not run when every layer is cached.

    Returns
    -------
    dict of int to ndarray of shape (n_words, hidden_size), float32
    """
    layers = list(dict.fromkeys(int(layer) for layer in layers))
    bad = [layer for layer in layers if not 0 <= layer < model.depth]
    if not layers or bad:
        raise ValueError(f"layers must be indices in [0, {model.depth}); got {layers}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be >= 1 or None, got {max_batch_tokens}")
    target = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, target)

    def compute(missing: list[int]) -> dict[int, np.ndarray]:
        sequences = [model.encode(context) for context in words.contexts(context_words)]
        batches = length_batches(
            [len(ids) for ids in sequences],
            batch_size,
            max_tokens=max_batch_tokens,
            sort=sort_by_length,
        )
        return _run_language_model(
            model, sequences, batches, missing, target, compute_dtype, progress
        )

    return features_through_cache(
        cache,
        layers,
        compute,
        n_rows=len(words),
        model_identity=model.identity,
        preprocess={"context_words": int(context_words), "max_tokens": model.max_tokens},
        pooling="last_token",
        stimulus_hash=words.content_hash,
        feature_kind="language",
        precision=str(compute_dtype).removeprefix("torch."),
    )


def length_batches(
    lengths: Sequence[int], batch_size: int, *, max_tokens: int | None = None, sort: bool = True
) -> list[np.ndarray]:
    """Group sequences into batches, by token length when ``sort``.

    Parameters
    ----------
    lengths : sequence of int, (n_sequences,)
        Token count of each sequence.
    batch_size : int
        At most this many sequences per batch.
    max_tokens : int, optional
        At most this many padded tokens (``len(batch) * longest``) per batch; a sequence longer
        than it gets a batch of its own.
    sort : bool
        Longest first, so that a batch holds sequences of similar length (padding is what a
        right-padded batch wastes); else in the given order.

    Returns
    -------
    list of ndarray of int
        Positions of the sequences of each batch; every position appears once.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable") if sort else np.arange(lengths.size)
    batches: list[np.ndarray] = []
    current: list[int] = []
    longest = 0
    for position in order:
        wider = max(longest, int(lengths[position]))
        full = len(current) >= batch_size
        too_many_tokens = max_tokens is not None and (len(current) + 1) * wider > max_tokens
        if current and (full or too_many_tokens):
            batches.append(np.array(current, dtype=np.int64))
            current, wider = [], int(lengths[position])
        current.append(int(position))
        longest = wider
    if current:
        batches.append(np.array(current, dtype=np.int64))
    return batches


def _run_language_model(
    model: LanguageModel,
    sequences: list[list[int]],
    batches: list[np.ndarray],
    layers: list[int],
    device: torch.device,
    compute_dtype: torch.dtype,
    progress: bool,
) -> dict[int, np.ndarray]:
    """One forward pass per batch for all ``layers``; each word's last-token states, in the
    order of ``sequences`` whatever the batches."""
    module = model.module.to(device)
    outputs: dict[int, np.ndarray] = {}
    autocast = torch.autocast(
        device_type=device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32
    )
    with torch.inference_mode(), autocast:
        for rows_of_batch in tqdm(
            batches, desc=f"words {model.name}", unit="batch", disable=not progress
        ):
            batch = [sequences[row] for row in rows_of_batch]
            lengths = torch.tensor([len(ids) for ids in batch])
            input_ids = torch.zeros((len(batch), int(lengths.max())), dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
            mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
            hidden = module(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                output_hidden_states=True,
            ).hidden_states
            last = (lengths - 1).to(device)  # (B,) index of each word's last token
            rows = torch.arange(len(batch), device=device)
            for layer in layers:
                states = hidden[layer + 1][rows, last].float().cpu().numpy()  # (B, hidden)
                if layer not in outputs:
                    outputs[layer] = np.empty((len(sequences), states.shape[1]), np.float32)
                outputs[layer][rows_of_batch] = states
    return outputs


# ---------------------------------------------------------------------------- scoring
def score_language(
    features: dict[int, np.ndarray],
    depths: dict[int, float],
    words: WordSequence,
    brain: BrainData,
    *,
    n_components: int | None = 50,
    content_only: bool = True,
    config: EncodingConfig | None = None,
    progress: bool = False,
) -> ProbeScores:
    """Score word features against word-locked MEG (Study C).

    Parameters
    ----------
    features : dict of int to ndarray of shape (n_words, hidden_size)
        From :func:`extract_word_features`, rows in ``words`` order.
    depths : dict of int to float
        Relative depth of each layer.
    words : WordSequence
    brain : BrainData, modality "meg"
        One epoch (or averaged epochs) per word token, ``stimulus_ids`` from ``words.ids``.
    n_components : int or None
        PCA components per layer (fitted on the scored words; None keeps every dimension).
    content_only : bool
        Score only the content words (``words.content``).
    config : EncodingConfig
        Default: decoding (brain -> model), alphas 1e-4..1e8, 5 folds.

    Returns
    -------
    ProbeScores
        As :func:`brainalign.probe.pipeline.score_layers`; ``feature_kind`` "language". When
        the core finds a noise ceiling (a declared one, else the split-half reliability of
        ``brain.repeats``, sessions of the same words, restricted to the scored words), its
        rows per time and overall are joined by one ``noise_ceiling`` row per (channel, time)
        (:func:`noise_ceiling_rows`), and the summary gets ``noise_ceiling_words`` (the words
        it was computed on; -1 for a declared ceiling). They are never folded into ``r``.

    Raises
    ------
    ValueError
        MEG epochs of ids that are not in the word table, too few words, not MEG, content
        words asked for where the word table does not say which they are.
    """
    if brain.modality != "meg":
        raise ValueError(f"{brain.subject}: language features are scored against MEG only")
    if content_only and not words.content_known:
        raise ValueError(
            f"{words.source or brain.subject}: which words are content words is unknown (the "
            "data set annotates no part of speech); score every word (--all-words, or "
            "content=all in the spec) or give is_content/pos per word (content_table=words.csv)"
        )
    config = config or EncodingConfig(
        alphas=[float(alpha) for alpha in DEFAULT_LANGUAGE_ALPHAS], direction="decoding"
    )
    unknown = words.unknown_ids(brain.stimulus_ids)
    if unknown:
        raise ValueError(
            f"{brain.subject}: {len(unknown)} MEG stimulus ids are not in the word table, "
            f"e.g. {unknown[:5]}; the epochs' stimulus_id must name word tokens of the table"
        )
    position = {stimulus_id: index for index, stimulus_id in enumerate(words.ids)}
    keep = [
        stimulus_id
        for stimulus_id in brain.stimulus_ids
        if words.content[position[stimulus_id]] or not content_only
    ]
    if len(keep) < 2 * config.n_folds:
        raise ValueError(
            f"{brain.subject}: {len(keep)} scored words are too few for {config.n_folds} folds"
        )
    brain = brain.select_stimuli(keep)
    rows = np.array([position[stimulus_id] for stimulus_id in keep])
    selected = {layer: array[rows] for layer, array in features.items()}
    if n_components is not None:
        limit = min(len(keep), *(array.shape[1] for array in selected.values()))
        selected = reduce_features(selected, min(n_components, limit))
    scores = score_layers(
        selected,
        depths,
        brain,
        config=config,
        feature_kind="language",
        meg_windows=(),
        progress=progress,
        stimulus_ids=keep,
    )
    if "noise_ceiling_source" not in scores.summary:
        return scores
    # the core's ceiling (its rows per time and overall are in the table); here per channel
    ceiling, source = encoding_ceiling(brain)
    rows = noise_ceiling_rows(
        ceiling.reshape(len(brain.targets), len(brain.times)),
        brain,
        columns=list(scores.table.columns),
    )
    n_words = brain.n_stimuli if source == "split_half" else -1
    summary = {**scores.summary, "noise_ceiling_words": n_words}
    table = pd.concat([scores.table, rows], ignore_index=True)
    return replace(scores, table=table, summary=summary)


def noise_ceiling_rows(
    ceiling: np.ndarray, brain: BrainData, *, columns: Sequence[str]
) -> pd.DataFrame:
    """Score-table rows of a word-locked MEG noise ceiling (its own metric, ``layer = -1``).

    Parameters
    ----------
    ceiling : ndarray of shape (n_channels, n_times)
        Split-half reliability (fraction) per channel and time.
    brain : BrainData, modality "meg"
    columns : sequence of str
        The score table's columns (``ci_low``/``ci_high`` are NaN here).

    Returns
    -------
    DataFrame
        ``metric = "noise_ceiling"``; one row per (channel, time) with ``group`` the channel
        (the probe core writes the mean over channels per time, ``group = "time"``, and overall,
        ``group = "all"``).
    """
    ceiling = np.asarray(ceiling, dtype=np.float64)  # (C, T)
    times = np.asarray(brain.times, dtype=np.float64)
    channels = brain.targets["channel"].astype(str).to_numpy()
    frame = pd.DataFrame(
        {
            "subject": brain.subject,
            "modality": brain.modality,
            "feature_kind": "language",
            "layer": -1,
            "depth": np.nan,
            "group": np.repeat(channels, times.size),
            "time": np.tile(times, channels.size),
            "metric": "noise_ceiling",
            "value": ceiling.reshape(-1),
        }
    )
    return frame.reindex(columns=list(columns))
