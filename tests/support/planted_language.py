"""GPT-2 folders whose layers carry a planted hierarchy of word features, and MEG that carries it.

The plant, for the language-study tests:

- **A latent hierarchy.** Every word of the vocabulary has ``n_levels`` latent features
  ``f_k(word)`` of ``LEVEL_DIMS`` dimensions each (independent standard normal draws).
- **MEG** (:func:`hierarchy_meg`): each subject's word epochs carry ``f_k`` on the sensors
  (a subject-specific random sensor pattern) as a Gaussian bump at latency ``t_k``, growing
  with ``k``, over unit white noise. Every subject hears the same words; patterns and noise
  differ.
- **Models** (:func:`save_hierarchy_model`): GPT-2 models with set (not trained) weights whose
  block ``k`` leaves ``f_k(word) + noise * e_k(word)`` in a readout subspace of the residual
  stream, with a gain that makes that subspace the layer's top principal components; ``e_k``
  is word-specific detail no MEG carries (drawn per model). With a small ``noise`` the layer
  at depth ``k`` is decoded best from the MEG at ``t_k`` (temporal score near 1); with a large
  one the layers carry mostly ``e_k``, T_max wanders and the temporal score falls towards 0.
  The *width* of the model (``n_embd``) sets its size (parameters); which noise goes with
  which width is the test's choice: the plant, not something the pipeline could know.

How the weights do it: the residual stream lives in a random orthonormal basis ``Q`` of
``R^width`` whose first axis is the all-ones direction, left empty so LayerNorm subtracts
nothing; the position embedding puts a large constant ``C`` on the second axis of every
token, so that LayerNorm divides by nearly the same ``C / sqrt(width)`` for every word (its
only nonlinearity, kept to about 1%); the token embedding stores every ``f_k`` and ``e_k``
at unit scale on their own axes. Attention is switched off (zero weights: a word's features
do not depend on its context or position). Block ``k``'s MLP, with ReLU pairs
(``relu(u) - relu(-u) = u``), is linear: it writes ``GAIN * (f_k + noise * e_k)`` into the
readout axes and removes what they held. The last layer is read after ``ln_f``, a scaling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

LEVEL_DIMS = 2
GAIN = 4.0  # readout scale over the unit-scale codes: the readout is the top PCA subspace
CONSTANT = 400.0  # LayerNorm's near-constant scale (the codes and readout are ~ 1-20)


def hierarchy(n_vocabulary: int, n_levels: int, *, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """A vocabulary and each word's latent features per level.

    Returns
    -------
    words : list of str, (n_vocabulary,)
    latent : ndarray of shape (n_vocabulary, n_levels, LEVEL_DIMS)
    """
    rng = np.random.default_rng(seed)
    words = [f"p{index:03d}" for index in range(n_vocabulary)]
    return words, rng.standard_normal((n_vocabulary, n_levels, LEVEL_DIMS))


def _axes(width: int, n_levels: int) -> dict[str, np.ndarray]:
    """Basis columns of the constant, the codes of f and e, and the readout."""
    n_codes = n_levels * LEVEL_DIMS
    needed = 2 + 2 * n_codes + LEVEL_DIMS
    if width < needed:
        raise ValueError(f"width {width} is too narrow for {n_levels} levels (needs {needed})")
    return {
        "constant": np.array([1]),
        "f": 2 + np.arange(n_codes).reshape(n_levels, LEVEL_DIMS),
        "e": 2 + n_codes + np.arange(n_codes).reshape(n_levels, LEVEL_DIMS),
        "readout": 2 + 2 * n_codes + np.arange(LEVEL_DIMS),
    }


def _basis(width: int, rng: np.random.Generator) -> np.ndarray:
    """Orthonormal (width, width) basis whose first column is the all-ones direction."""
    start = np.column_stack([np.ones(width), rng.standard_normal((width, width - 1))])
    basis, _ = np.linalg.qr(start)
    return basis * np.sign(basis[0, 0])  # column 0 = +ones / sqrt(width)


def save_hierarchy_model(
    folder: Path,
    words: list[str],
    latent: np.ndarray,
    *,
    width: int,
    noise: float,
    seed: int = 0,
) -> Path:
    """A GPT-2 folder (weights and word-level tokenizer) whose block ``k`` carries level ``k``.

    Parameters
    ----------
    folder : Path
    words : list of str, (n_vocabulary,)
    latent : ndarray of shape (n_vocabulary, n_levels, LEVEL_DIMS)
        From :func:`hierarchy`; the model has ``n_levels`` blocks.
    width : int
        ``n_embd``: the model's size.
    noise : float
        Scale of the word-specific detail ``e_k`` mixed into each level's readout.
    seed : int
        Draws the basis and ``e_k``.
    """
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    n_vocabulary, n_levels, _ = latent.shape
    rng = np.random.default_rng(seed)
    basis = _basis(width, rng)
    axes = _axes(width, n_levels)
    detail = rng.standard_normal(latent.shape)  # e_k(word): no MEG carries it
    codes = np.zeros((n_vocabulary + 1, width))  # row 0: [UNK]
    codes[1:, axes["f"].ravel()] = latent.reshape(n_vocabulary, -1)
    codes[1:, axes["e"].ravel()] = detail.reshape(n_vocabulary, -1)
    config = transformers.GPT2Config(
        vocab_size=n_vocabulary + 1,
        n_positions=64,
        n_embd=width,
        n_layer=n_levels,
        n_head=2,
        activation_function="relu",
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2Model(config)
    scale = CONSTANT / np.sqrt(width)  # what LayerNorm divides by
    readout = basis[:, axes["readout"]]  # (width, LEVEL_DIMS)
    state = {"wte.weight": codes @ basis.T}
    state["wpe.weight"] = np.tile(CONSTANT * basis[:, 1], (config.n_positions, 1))
    for level in range(n_levels):
        # read: GAIN * (f_k + noise * e_k) minus the readout's current content, per dim
        read = GAIN * (basis[:, axes["f"][level]] + noise * basis[:, axes["e"][level]])
        read = scale * (read - readout)  # (width, LEVEL_DIMS)
        fc = np.zeros((width, 4 * width))
        fc[:, :LEVEL_DIMS], fc[:, LEVEL_DIMS : 2 * LEVEL_DIMS] = read, -read
        projection = np.zeros((4 * width, width))
        projection[:LEVEL_DIMS], projection[LEVEL_DIMS : 2 * LEVEL_DIMS] = readout.T, -readout.T
        prefix = f"h.{level}."
        state[prefix + "mlp.c_fc.weight"] = fc
        state[prefix + "mlp.c_proj.weight"] = projection
        for name in ("attn.c_attn.weight", "attn.c_proj.weight"):
            state[prefix + name] = np.zeros(tuple(model.state_dict()[prefix + name].shape))
    with torch.no_grad():
        current = model.state_dict()
        for name, tensor in current.items():
            if name.endswith(".bias") and "ln_" not in name:
                tensor.zero_()
        for name, value in state.items():
            current[name].copy_(torch.as_tensor(value, dtype=torch.float32))
    model.save_pretrained(folder)
    vocabulary = ["[UNK]", *words]
    tokenizer = Tokenizer(
        models.WordLevel({word: i for i, word in enumerate(vocabulary)}, unk_token="[UNK]")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]"
    ).save_pretrained(folder)
    return folder


def hierarchy_meg(
    latent_of_words: np.ndarray,
    latencies: list[float],
    times: np.ndarray,
    *,
    n_channels: int,
    signal: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """One subject's word epochs: level ``k`` on the sensors at ``latencies[k]``.

    Parameters
    ----------
    latent_of_words : ndarray of shape (n_words, n_levels, LEVEL_DIMS)
        The latent features of each word token heard, in order.
    latencies : list of float, seconds, one per level
    times : ndarray of shape (n_times,)
    seed : int
        The subject: its sensor patterns and noise.

    Returns
    -------
    ndarray of shape (n_words, n_channels, n_times): unit noise + the planted bumps.
    """
    rng = np.random.default_rng(seed)
    n_words, n_levels, dims = latent_of_words.shape
    data = rng.standard_normal((n_words, n_channels, times.size))
    for level, latency in zip(range(n_levels), latencies):
        values = latent_of_words[:, level]
        values = (values - values.mean(0)) / values.std(0)
        pattern = rng.standard_normal((dims, n_channels))
        bump = np.exp(-0.5 * ((times - latency) / 0.03) ** 2)  # (n_times,)
        data += signal * (values @ pattern)[:, :, None] * bump[None, None, :]
    return data


def write_hierarchy_subjects(
    folder: Path,
    words: list[str],
    latent: np.ndarray,
    *,
    n_subjects: int,
    n_tokens: int,
    latencies: list[float],
    times: np.ndarray,
    n_channels: int = 12,
    seed: int = 0,
) -> list[Path]:
    """``sub-NN_words-epo.fif`` per subject: the same story of ``n_tokens`` words for all.

    The epochs' metadata are the word table (``word``, ``story``; every word scored).
    """
    from brainalign.probe.formats import write_meg_epochs

    rng = np.random.default_rng(seed)
    order = rng.choice(len(words), size=n_tokens, replace=n_tokens > len(words))
    ids = [f"word{index:04d}" for index in range(n_tokens)]
    metadata = pd.DataFrame({"word": [words[i] for i in order], "story": "story0"})
    channels = [f"MEG{index:03d}" for index in range(n_channels)]
    sfreq = 1.0 / float(times[1] - times[0])
    paths = []
    for subject in range(1, n_subjects + 1):
        data = hierarchy_meg(
            latent[order], latencies, times, n_channels=n_channels, seed=seed + 100 * subject
        )
        paths.append(
            write_meg_epochs(
                folder / f"sub-{subject:02d}_words-epo.fif",
                (data * 1e-13).astype(np.float32),
                times,
                channels,
                sfreq,
                ids,
                metadata=metadata,
            )
        )
    return paths
