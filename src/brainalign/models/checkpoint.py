"""Reading brainalign Lightning checkpoints safely: their hyper-parameters and backbones.

Used by probing (a ``.ckpt`` as a model spec) and by training's gradient objective (the heads
and teacher of a checkpoint). Files are read with :func:`brainalign.models.weights.safe_torch_load`.
"""

from __future__ import annotations

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
    "read_lightning_checkpoint",
    "weights_under",
]


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
    checkpoint = safe_torch_load(path, allow_pickle=allow_pickle)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a Lightning checkpoint: it has no 'state_dict' entry")
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
