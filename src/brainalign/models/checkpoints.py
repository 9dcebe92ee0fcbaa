"""Read a Lightning checkpoint file without running code from it, and say plainly what is wrong.

A ``.ckpt`` written by ``torch.save`` is a zip archive holding a pickle of plain values plus the
tensor data. :func:`read_checkpoint` refuses, with one line naming the file:

- a file that is not a zip archive: an empty or truncated file (an interrupted write) or
  anything else (a text file renamed ``.ckpt``) is "not a complete checkpoint";
- a pickle that needs more than tensors and plain values (functions, classes: loading it could
  run code stored in the file): refused, never loaded (``torch.load(weights_only=True)``);
- a readable file without a ``state_dict`` entry: "not a Lightning checkpoint".

The tensors are memory-mapped (``mmap=True``), so reading a large checkpoint to look at its
hyper-parameters does not load its weights.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from brainalign.utils.reading import read_file

__all__ = ["read_checkpoint"]

_REMEDY = "use another checkpoint (e.g. an earlier one in the same checkpoints/ folder)"


def _unsafe_globals(path: Path) -> list[str]:
    """Names a pickle needs beyond weights_only's allow-list (empty if they cannot be listed)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # older torch, or a file torch cannot scan: the message names no globals
        return []


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of a Lightning checkpoint file, read safely (tensors memory-mapped).

    Parameters
    ----------
    path : path-like
        A ``.ckpt`` file written by Lightning (``trainer.save_checkpoint``).

    Returns
    -------
    dict
        At least ``state_dict``; usually also ``global_step``, ``hyper_parameters``,
        ``callbacks``, ``optimizer_states`` and ``loops``.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    IsADirectoryError
        ``path`` is a folder (a sharded checkpoint is not read here).
    ValueError
        Not a complete checkpoint, pickled objects besides plain values, or no ``state_dict``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {str(path)!r} is a folder, not a .ckpt file")
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        what = "is empty" if size == 0 else f"({size} bytes) is not a zip archive"
        raise ValueError(
            f"checkpoint {str(path)!r} {what}, so it is not a complete checkpoint written by "
            f"torch.save (a truncated file from an interrupted write, or another kind of "
            f"file); {_REMEDY}"
        )
    try:
        checkpoint = read_file(
            lambda: torch.load(path, map_location="cpu", weights_only=True, mmap=True),
            path,
            "a Lightning checkpoint",
            _REMEDY,
            passthrough=(pickle.UnpicklingError,),
        )
    except pickle.UnpicklingError:
        names = _unsafe_globals(path)
        listed = f" ({', '.join(names[:4])})" if names else ""
        raise ValueError(
            f"checkpoint {str(path)!r} was refused: besides tensors and plain values it holds "
            f"pickled Python objects{listed}, and loading them could run code stored in the "
            f"file; brainalign never loads those. Use a checkpoint written by `brainalign fit`"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(
            f"checkpoint {str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry); "
            f"give a .ckpt file from a run's checkpoints/ folder"
        )
    return checkpoint
