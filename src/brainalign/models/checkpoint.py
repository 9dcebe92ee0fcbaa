"""Reading Lightning checkpoints without running code from them, and their backbones.

:func:`read_checkpoint` is the one reader: training's resume checks, probing (a ``.ckpt`` as a
model spec) and the gradient objective (heads and teacher of a checkpoint) all use it. It
refuses, with one line naming the file:

- a missing file, a folder, or a file that is not a zip archive (an empty or truncated file
  from an interrupted write, a text file renamed ``.ckpt``): "not a complete checkpoint";
- a pickle holding more than tensors and plain values (functions, classes: loading it could run
  code stored in the file), unless ``allow_pickle``; brainalign's own config dataclasses are
  rebuilt as inert records (:func:`brainalign.models.weights.safe_torch_load`);
- a readable file without a ``state_dict`` entry: "not a Lightning checkpoint".

Tensors are memory-mapped, so reading a large checkpoint's hyper-parameters does not load its
weights.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from brainalign.models.backbone import DinoBackbone, create_backbone
from brainalign.models.export import load_state_dict_checked
from brainalign.models.weights import safe_torch_load

__all__ = [
    "LightningCheckpoint",
    "load_lightning_backbone",
    "read_checkpoint",
    "read_lightning_checkpoint",
    "weights_under",
]

_REMEDY = "use another checkpoint (e.g. an earlier one in the same checkpoints/ folder)"


def read_checkpoint(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> dict[str, Any]:
    """The contents of a Lightning checkpoint file, read safely (tensors memory-mapped).

    Parameters
    ----------
    path : path-like
        A ``.ckpt`` file written by Lightning (``trainer.save_checkpoint``).
    allow_pickle : bool
        Load other pickled objects too (runs code stored in the file: only for files you
        trust).

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
    checkpoint = safe_torch_load(path, allow_pickle=allow_pickle, mmap=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(
            f"checkpoint {str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry); "
            f"give a .ckpt file from a run's checkpoints/ folder"
        )
    return checkpoint


class LightningCheckpoint:
    """The parts of a Lightning checkpoint that brainalign reads.

    Attributes
    ----------
    path : Path
    state_dict : dict of str to Tensor
    hyper_parameters : dict
        The module's saved hyper-parameters (config dataclasses as inert records).
    """

    def __init__(self, path: Path, state_dict: dict[str, Tensor], hyper: Mapping[str, Any]):
        self.path = path
        self.state_dict = state_dict
        self.hyper_parameters = dict(hyper)

    def has(self, prefix: str) -> bool:
        """Whether some weight name starts with ``prefix``."""
        return any(key.startswith(prefix) for key in self.state_dict)

    def backbone(self, prefix: str = "teacher.backbone.") -> DinoBackbone:
        """The :class:`DinoBackbone` stored under ``prefix``, built from the hyper-parameters.

        Raises
        ------
        ValueError
            No backbone name in the hyper-parameters, no weights under ``prefix``, or weights
            that do not fit the named architecture.
        """
        architecture = self.hyper_parameters.get("backbone")
        if not isinstance(architecture, str):
            raise ValueError(
                f"{self.path}: hyper_parameters has no 'backbone' name; was it written by "
                "brainalign's DINOv3Module? (other checkpoints: use timm:/torchvision: specs "
                "with weights=)"
            )
        state = weights_under(self.state_dict, prefix)
        if not state:
            found = sorted({key.split(".")[0] for key in self.state_dict})
            raise ValueError(
                f"{self.path}: no weights under {prefix!r} in state_dict (top-level names: {found})"
            )
        backbone = create_backbone(architecture, img_size=self.hyper_parameters.get("img_size"))
        load_state_dict_checked(backbone, state, source=f"{self.path} [{prefix}*]")
        return backbone.eval()


def weights_under(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The weights whose names start with ``prefix``, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def read_lightning_checkpoint(
    path: str | Path, *, allow_pickle: bool = False
) -> LightningCheckpoint:
    """Read a ``.ckpt`` file safely (``weights_only``; brainalign configs as inert records).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, not a torch file, pickled objects without ``allow_pickle``, or no
        ``state_dict`` entry.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, allow_pickle=allow_pickle)
    state = checkpoint["state_dict"]
    hyper = checkpoint.get("hyper_parameters") or {}
    hyper = hyper if isinstance(hyper, Mapping) else vars(hyper)
    return LightningCheckpoint(path, state, hyper)


def load_lightning_backbone(
    path: str | Path,
    *,
    network: Literal["teacher", "student"] = "teacher",
    allow_pickle: bool = False,
) -> DinoBackbone:
    """The teacher (or student) backbone of a brainalign Lightning checkpoint.

    The architecture comes from ``hyper_parameters["backbone"]`` (and ``img_size``), the
    weights from the ``state_dict`` keys under ``teacher.backbone.`` (or ``student.backbone.``).
    """
    if network not in ("teacher", "student"):
        raise ValueError(f"network must be 'teacher' or 'student', got {network!r}")
    checkpoint = read_lightning_checkpoint(path, allow_pickle=allow_pickle)
    return checkpoint.backbone(f"{network}.backbone.")
