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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from brainalign.models.weights import hash_weights
from brainalign.probe.brain_data import BrainData
from brainalign.probe.cache import FeatureCache, features_through_cache
from brainalign.probe.config import DEFAULT_LANGUAGE_ALPHAS, DEFAULT_LANGUAGE_DEPTHS
from brainalign.probe.features import reduce_features, resolve_device, resolve_dtype
from brainalign.probe.metrics.per_group import encoding_ceiling
from brainalign.probe.pipeline import EncodingConfig, ProbeScores, score_layers

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

CONTENT_POS: tuple[str, ...] = ("NOUN", "VERB", "ADJ", "ADV")
"""Universal POS tags of content words (Study C keeps nouns, verbs, adjectives, adverbs)."""


_TOKENIZER_EXTRA_FILES = ("merges.txt", "tokenizer_config.json", "special_tokens_map.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt", "spiece.model")


# ---------------------------------------------------------------------------- words
@dataclass(frozen=True)
class WordSequence:
    """Words in presentation order, each with the stimulus id of its MEG epoch.

    Attributes
    ----------
    ids : tuple of str, (n_words,)
        Unique stimulus id per word token (the ``stimulus_id`` of its epochs).
    words : tuple of str, (n_words,)
    stories : tuple of str, (n_words,)
        Story (or run) of each word; context never crosses a story boundary.
    content : ndarray of bool, shape (n_words,)
        Whether the word is scored (content words); every word serves as context.
    content_known : bool
        False when nothing says which words are content words (a data set without
        part-of-speech annotation): ``content`` is then all True, and scoring content words
        only is refused (:func:`score_language`).
    source : str
        Where the words come from, for messages.
    """

    ids: tuple[str, ...]
    words: tuple[str, ...]
    stories: tuple[str, ...]
    content: np.ndarray
    content_known: bool = True
    source: str = ""

    @classmethod
    def from_table(
        cls, table: pd.DataFrame, source: str, *, content_pos: Sequence[str] = CONTENT_POS
    ) -> WordSequence:
        """Read a table with ``stimulus_id`` and ``word`` columns, rows in presentation order.

        Optional columns: ``story`` (else one story), and ``is_content`` (bool) or ``pos``
        (content = ``pos`` in ``content_pos``); without either, every word is a content word.

        Raises
        ------
        ValueError
            Missing columns, empty or repeated ids, empty words; ``source`` names the table.
        """
        missing = [column for column in ("stimulus_id", "word") if column not in table.columns]
        if missing:
            raise ValueError(
                f"{source}: the word table needs the column(s) {missing} (one row per word "
                f"token in presentation order); columns present: {list(table.columns)}"
            )
        if table.empty:
            raise ValueError(f"{source}: the word table has no rows")
        ids = table["stimulus_id"].astype(str)
        repeated = ids[ids.duplicated()].unique().tolist()
        if repeated:
            raise ValueError(
                f"{source}: stimulus_id must be unique per word token; repeated: {repeated[:5]}"
            )
        words = table["word"].fillna("").astype(str).str.strip()
        empty = ids[words == ""].tolist()
        if empty:
            raise ValueError(f"{source}: empty word for stimulus_id {empty[:5]}")
        stories = table["story"].astype(str) if "story" in table.columns else ["0"] * len(table)
        if "is_content" in table.columns:
            content = table["is_content"].astype(bool).to_numpy()
        elif "pos" in table.columns:
            allowed = {tag.upper() for tag in content_pos}
            content = table["pos"].astype(str).str.upper().isin(allowed).to_numpy()
        else:
            content = np.ones(len(table), dtype=bool)
        return cls(tuple(ids), tuple(words), tuple(stories), content, source=source)

    def __len__(self) -> int:
        return len(self.ids)

    def unknown_ids(self, ids: Sequence[str]) -> list[str]:
        """The ids (e.g. of MEG epochs) that name no word of this sequence, in order."""
        known = set(self.ids)
        return [stimulus_id for stimulus_id in ids if stimulus_id not in known]

    @property
    def content_hash(self) -> str:
        """sha256 (hex) of the ids, words and stories (what the features depend on)."""
        text = json.dumps([self.ids, self.words, self.stories], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def contexts(self, context_words: int) -> list[list[str]]:
        """Per word, the words the model reads: up to ``context_words`` before it, then it.

        Returns
        -------
        list of n_words lists of str, each ending with the word itself.
        """
        if context_words < 0:
            raise ValueError(f"context_words must be >= 0, got {context_words}")
        contexts, story_start = [], 0
        for index, story in enumerate(self.stories):
            if index and story != self.stories[index - 1]:
                story_start = index
            start = max(story_start, index - context_words)
            contexts.append(list(self.words[start : index + 1]))
        return contexts


# ---------------------------------------------------------------------------- model
class LanguageModel:
    """A causal (or any) text transformer and its tokenizer, read through hidden states.

    Parameters
    ----------
    module : nn.Module
        Called as ``module(input_ids=..., attention_mask=..., output_hidden_states=True)``.
    tokenizer : callable
        ``tokenizer(text, add_special_tokens=False)["input_ids"]`` gives a list of ids.
    name : str
    depth : int
        Number of blocks (``len(hidden_states) - 1``).
    max_tokens : int
        Longest input the model takes; longer contexts lose their oldest tokens.
    tokenizer_identity : str, optional
        Hash of the tokenizer files; default a hash of the tokenizer's vocabulary.
    """

    def __init__(
        self,
        module: nn.Module,
        tokenizer: Any,
        *,
        name: str,
        depth: int,
        max_tokens: int,
        tokenizer_identity: str | None = None,
    ) -> None:
        self.module = module.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.depth = depth
        self.max_tokens = max_tokens
        if tokenizer_identity is None:
            vocabulary = json.dumps(sorted(tokenizer.get_vocab().items()))
            tokenizer_identity = hashlib.sha256(vocabulary.encode()).hexdigest()
        self.tokenizer_identity = tokenizer_identity

    @property
    def identity(self) -> str:
        """sha256 (hex) of the architecture name, the weights and the tokenizer."""
        description = {"name": self.name, "tokenizer": self.tokenizer_identity}
        return hash_weights(description, self.module.state_dict())

    @property
    def relative_depths(self) -> list[float]:
        """Relative depth of each block, ``layer / (depth - 1)``."""
        return [layer / max(self.depth - 1, 1) for layer in range(self.depth)]

    def encode(self, words: Sequence[str]) -> list[int]:
        """Token ids of the words joined by spaces, oldest tokens cut beyond ``max_tokens``."""
        ids = list(self.tokenizer(" ".join(words), add_special_tokens=False)["input_ids"])
        if not ids:
            raise ValueError(f"the tokenizer gave no tokens for {' '.join(words)[-60:]!r}")
        return ids[-self.max_tokens :]


def check_language_model_folder(folder: str | Path) -> Path:
    """Cheap checks of a language model folder, before anything heavy is read.

    ``config.json`` must be there, and neither it nor ``tokenizer_config.json`` may ask for
    remote code (``auto_map`` or ``trust_remote_code``): brainalign never runs code shipped
    with a model.

    Raises
    ------
    FileNotFoundError
        No ``config.json`` in the folder.
    ValueError
        A file that needs remote code, or that is not JSON; the message names the file.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a Hugging Face model folder: expected config.json, the weights "
            "and the tokenizer files in it (nothing is downloaded)"
        )
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            settings = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a JSON file ({error})") from None
        if not isinstance(settings, dict):
            continue
        needs = [key for key in ("auto_map", "trust_remote_code") if key in settings]
        if needs:
            what = "tokenizer" if name.startswith("tokenizer") else "model"
            raise ValueError(
                f"{path}: the {what} needs remote code ({needs[0]}: {settings[needs[0]]}), which "
                f"brainalign never runs; save a {what} that transformers implements itself "
                f"into the folder (e.g. {what}.save_pretrained(folder) from a built-in class)"
            )
    return folder


def load_language_model(folder: str | Path) -> LanguageModel:
    """A Hugging Face model folder on disk (config, weights, tokenizer files); nothing downloaded.

    Weights are read with safetensors, or ``torch.load(weights_only=True)`` for
    ``pytorch_model.bin``; remote code is never run (:func:`check_language_model_folder`);
    weights that do not fit the config are refused (see
    :func:`brainalign.probe.models.load_probe_model`).
    """
    from brainalign.probe.models import load_huggingface_module

    folder = check_language_model_folder(folder)
    module, config = load_huggingface_module(folder)  # raises first when transformers is absent
    import transformers

    present = [name for name in _TOKENIZER_FILES if (folder / name).is_file()]
    error_text = ""
    if present:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True
            )
        except (OSError, ValueError) as error:
            error_text = f": {str(error).splitlines()[0]}"
    # transformers builds an empty-vocabulary tokenizer when the files are missing: refuse it
    if not present or error_text or len(tokenizer.get_vocab()) <= len(tokenizer.all_special_ids):
        raise ValueError(
            f"{folder}: no usable tokenizer files next to the weights (looked for "
            f"{', '.join(_TOKENIZER_FILES)}){error_text}; save the tokenizer into the folder "
            "with tokenizer.save_pretrained(folder)"
        )
    with torch.no_grad():
        probe = torch.tensor([[0]], dtype=torch.long)
        n_hidden = len(module(input_ids=probe, output_hidden_states=True).hidden_states)
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name in _TOKENIZER_FILES or path.name in _TOKENIZER_EXTRA_FILES:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return LanguageModel(
        module,
        tokenizer,
        name=f"hf:{type(module).__name__}:{getattr(config, 'model_type', '')}",
        depth=n_hidden - 1,
        max_tokens=int(positions or 2048),
        tokenizer_identity=digest.hexdigest(),
    )


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
