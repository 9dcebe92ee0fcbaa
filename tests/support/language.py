"""Tiny language models and word-locked MEG with planted layer latencies, for Study C tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

VOCABULARY = [f"w{index}" for index in range(60)]
FUNCTION_WORDS = {"w0", "w1", "w2", "w3", "w4", "w5"}  # tagged DET: context only, never scored


def save_tiny_language_model(folder: Path, *, n_layer: int = 6, seed: int = 0) -> Path:
    """A randomly initialised GPT-2 (32-d) and a word-level tokenizer, saved as an HF folder."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = ["[UNK]", *VOCABULARY]
    tokenizer = Tokenizer(
        models.WordLevel({word: i for i, word in enumerate(vocabulary)}, unk_token="[UNK]")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    config = transformers.GPT2Config(
        vocab_size=len(vocabulary),
        n_positions=64,
        n_embd=32,
        n_layer=n_layer,
        n_head=2,
        initializer_range=0.5,  # blocks that change the residual stream: distinct layers
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    transformers.GPT2Model(config).save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]"
    ).save_pretrained(folder)
    return folder


def word_table(n_words: int, n_stories: int = 4, seed: int = 0) -> pd.DataFrame:
    """Random words in ``n_stories`` stories, POS-tagged (DET for function words, else NOUN)."""
    rng = np.random.default_rng(seed)
    words = rng.choice(VOCABULARY, size=n_words)
    return pd.DataFrame(
        {
            "stimulus_id": [f"word{index:04d}" for index in range(n_words)],
            "word": words,
            "story": np.repeat([f"story{i}" for i in range(n_stories)], -(-n_words // n_stories))[
                :n_words
            ],
            "pos": ["DET" if word in FUNCTION_WORDS else "NOUN" for word in words],
        }
    )


def planted_word_meg(
    layer_components: list[np.ndarray],
    latencies: list[float],
    times: np.ndarray,
    *,
    n_channels: int = 24,
    signal: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """MEG trials where each layer's components peak on the sensors at its own latency.

    Parameters
    ----------
    layer_components : list of ndarray of shape (n_words, k)
        Per layer, the components to plant (e.g. its top PCA components).
    latencies : list of float, seconds
        Peak time of each layer (a Gaussian bump of 30 ms sd).
    times : ndarray of shape (n_times,)

    Returns
    -------
    ndarray of shape (n_words, n_channels, n_times), float32: unit noise + planted signal.
    """
    rng = np.random.default_rng(seed)
    n_words = layer_components[0].shape[0]
    data = rng.standard_normal((n_words, n_channels, times.size))
    for components, latency in zip(layer_components, latencies):
        z = (components - components.mean(0)) / components.std(0)
        mixing = rng.standard_normal((z.shape[1], n_channels))
        bump = np.exp(-0.5 * ((times - latency) / 0.03) ** 2)  # (n_times,)
        data += signal * (z @ mixing)[:, :, None] * bump[None, None, :]
    return data.astype(np.float32)
