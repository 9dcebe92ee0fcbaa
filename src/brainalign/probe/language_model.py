"""A Hugging Face text model folder on disk, checked and loaded for its hidden states."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainalign.models.weights import hash_weights

__all__ = ["LanguageModel", "check_language_model_folder", "load_language_model"]

_TOKENIZER_EXTRA_FILES = ("merges.txt", "tokenizer_config.json", "special_tokens_map.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt", "spiece.model")


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
