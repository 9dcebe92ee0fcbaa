"""Teacher-backbone exports: ``model.safetensors`` + ``meta.json`` in one folder.

An export is what offline probing reads: small (backbone only, no heads or optimiser), safe to
load (safetensors holds tensors only, nothing is unpickled) and self-describing (the JSON names
the architecture, the step and the fraction of training).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from brainalign.models.backbone import DinoBackbone, create_backbone
from brainalign.utils.atomic import atomic_directory
from brainalign.utils.reading import read_file

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"


def save_teacher_export(
    backbone: DinoBackbone, path: str | Path, metadata: dict[str, Any], *, overwrite: bool = True
) -> Path:
    """Write ``backbone``'s weights and metadata to the folder ``path`` atomically.

    Parameters
    ----------
    backbone : DinoBackbone
    path : str or Path
        Folder to create.
    metadata : dict
        JSON-serialisable; ``architecture``, ``embed_dim``, ``depth`` and ``patch_size`` are
        added from the backbone.

    Returns
    -------
    Path
        The export folder.
    """
    meta = {
        "format": "brainalign-teacher-export",
        "version": 1,
        "architecture": backbone.name,
        "embed_dim": backbone.embed_dim,
        "depth": backbone.depth,
        "patch_size": backbone.patch_size,
        "img_size": int(backbone.vit.patch_embed.img_size[0]),
        **metadata,
    }
    state = {key: value.detach().cpu().contiguous() for key, value in backbone.state_dict().items()}
    with atomic_directory(path, overwrite=overwrite) as folder:
        save_file(state, str(folder / WEIGHTS_FILE))
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return Path(path)


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """Read ``meta.json`` of an export folder, with a clear error when it is not one."""
    folder = Path(path)
    meta_path = folder / META_FILE
    if not (folder / WEIGHTS_FILE).is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a brainalign teacher export: expected {WEIGHTS_FILE} and "
            f"{META_FILE} in it (exports are written under <run>/exports/ during training)"
        )
    return read_file(
        lambda: json.loads(meta_path.read_text()), meta_path, "the export's JSON metadata"
    )


def load_teacher_export(path: str | Path) -> tuple[DinoBackbone, dict[str, Any]]:
    """Build the backbone named in ``meta.json`` and load its safetensors weights.

    Raises
    ------
    ValueError
        If the weights do not fit the architecture named in the metadata.
    """
    folder = Path(path)
    meta = read_export_metadata(folder)
    backbone = create_backbone(meta["architecture"], img_size=meta.get("img_size"))
    weights = folder / WEIGHTS_FILE
    state = read_file(lambda: load_file(str(weights)), weights, "a safetensors weights file")
    load_state_dict_checked(backbone, state, source=str(folder / WEIGHTS_FILE))
    backbone.eval()
    return backbone, meta


def load_state_dict_checked(module: Any, state: dict[str, Any], *, source: str) -> None:
    """``load_state_dict`` with an error that says which keys or shapes disagree and where from."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append("shape mismatches: " + "; ".join(mismatched[:5]))
        if missing:
            parts.append(f"missing keys ({len(missing)}): " + ", ".join(missing[:5]))
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:5]))
        raise ValueError(
            f"weights in {source} do not fit the {type(module).__name__} architecture ("
            + " | ".join(parts)
            + "); was the checkpoint written for a different model size?"
        )
    module.load_state_dict(state)
