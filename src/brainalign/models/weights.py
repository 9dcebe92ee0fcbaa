"""Reading weights files safely, and hashing weights: shared by training and probing.

Files are untrusted. ``.safetensors`` holds tensors only; ``.pth/.pt/.bin/.ckpt`` files are read
with ``torch.load(weights_only=True)``, which refuses pickled Python objects. brainalign's own
Lightning checkpoints store config dataclasses in their hyper-parameters: those (and only
those, named ``brainalign.*``) are rebuilt as inert records that keep their fields and run
nothing. Anything else needs an explicit ``allow_pickle=True``.

Example::

    state = read_weights_file("resnet18.safetensors")
    checkpoint = safe_torch_load(Path("last.ckpt"), allow_pickle=False)
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from brainalign.utils.reading import read_file

__all__ = [
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIX",
    "hash_weights",
    "read_weights_file",
    "safe_torch_load",
    "version_stamp",
]

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PROTOCOL = 0x80  # first byte of a legacy torch.save / pickle (protocol >= 2) file


def _check_torch_file(path: Path) -> None:
    """Refuse a file that is neither a zip nor a pickle stream before torch reads it.

    Without this check a text file named ``.ckpt`` fails inside the unpickler with "invalid
    load key", which reads as if it held pickled objects and invites ``allow_pickle``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(_ZIP_MAGIC) or (head and head[0] == _PICKLE_PROTOCOL):
        return
    shown = head.decode("ascii", errors="replace") if head else "an empty file"
    raise ValueError(
        f"{path} is not a PyTorch checkpoint or weights file (it starts with {shown!r}, not a "
        "torch.save archive); check the path, or re-save the weights with torch.save or as "
        ".safetensors"
    )


def safe_torch_load(path: Path, *, allow_pickle: bool = False, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``; brainalign config objects are read as inert records.

    Parameters
    ----------
    path : Path
        A ``torch.save`` file.
    allow_pickle : bool
        Fall back to ``weights_only=False`` (runs code stored in the file) for files holding
        other Python objects. Only for files you trust; a warning is emitted.
    mmap : bool
        Memory-map the tensors (zip files): reading the metadata of a large checkpoint does not
        load its weights.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Not a torch file, a damaged file, or pickled objects without ``allow_pickle``.
    """
    path = Path(path)
    _check_torch_file(path)
    try:
        return read_file(
            lambda: torch.load(path, map_location="cpu", weights_only=True, mmap=mmap),
            path,
            "a PyTorch weights file",
            passthrough=(pickle.UnpicklingError,),
        )
    except pickle.UnpicklingError as error:
        first_error = error
    unsafe = _unsafe_globals(path)
    if unsafe and all(name.startswith("brainalign.") for name in unsafe):
        placeholders = [(_inert_record_class(name), name) for name in unsafe]
        with torch.serialization.safe_globals(placeholders):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    if allow_pickle:
        warnings.warn(
            f"loading {path} with allow_pickle=True: unpickling can run arbitrary code",
            stacklevel=3,
        )
        return torch.load(path, map_location="cpu", weights_only=False)
    listed = ", ".join(unsafe[:6]) if unsafe else str(first_error).splitlines()[0]
    raise ValueError(
        f"{path} was refused: it holds pickled Python objects besides tensors ({listed}), and "
        "loading them would run code stored in the file. If you trust where it came from, pass "
        "allow_pickle=True (CLI: --allow-pickle) at your own risk; better, re-save the weights "
        "as .safetensors."
    ) from first_error


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy (non-zip) files cannot be scanned
        return []


def _inert_record_class(qualified_name: str) -> type:
    """A class that stores whatever the unpickler gives it and does nothing else."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self.__dict__.update({"args": args, **kwargs})

    short = qualified_name.rsplit(".", 1)[-1]
    return type(short, (), {"__init__": __init__, "__module__": "brainalign.models.weights"})


def read_weights_file(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Tensor]:
    """Read a flat ``{name: tensor}`` state dict from a local file, safely.

    ``.safetensors`` files are read with safetensors; ``.pth/.pt/.bin/.ckpt`` with
    ``torch.load(weights_only=True)``. Common wrappers are unwrapped (``state_dict``, ``model``,
    ``module``) and a DDP ``module.`` prefix is stripped.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, unknown suffix, no tensors, or pickled objects without ``allow_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        return read_file(lambda: load_file(str(path)), path, "a safetensors weights file")
    if path.suffix not in PICKLE_SUFFIXES:
        raise ValueError(
            f"unknown weights format {path.suffix!r} for {path}: use .safetensors "
            f"or one of {', '.join(PICKLE_SUFFIXES)}"
        )
    loaded = safe_torch_load(path, allow_pickle=allow_pickle)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors")
    state = {str(key): value for key, value in loaded.items() if isinstance(value, Tensor)}
    if not state:
        raise ValueError(f"{path} holds no tensors (keys: {list(loaded)[:8]})")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def hash_weights(description: dict[str, Any], state: dict[str, Tensor]) -> str:
    """sha256 (hex) of a JSON description and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for key in sorted(state):
        tensor = state[key].detach()
        digest.update(f"\0{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        flat = tensor.to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    return digest.hexdigest()


def version_stamp(state: dict[str, Tensor]) -> tuple[tuple[int, int], ...] | None:
    """(id, in-place version) of every tensor; None when some tensor has no version counter.

    Lets a caller skip re-hashing weights that have not changed since the last hash.
    """
    try:
        return tuple((id(tensor), tensor._version) for tensor in state.values())
    except RuntimeError:  # inference-mode tensors track no versions: always rehash
        return None
