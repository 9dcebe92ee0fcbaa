"""Malicious data files for the security tests: unpickling them creates a marker file.

Each writer builds a file in a real format (``.npy``, a PyTorch zip or legacy checkpoint) whose
pickle calls ``open(marker, "w")`` when it is unpickled. A safe reader must refuse the file and
leave no marker; :func:`unpickle_unsafely` shows that the same file does run its payload when
loaded without protection, so a missing marker means the reader refused it.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class MarkerPayload:
    """An object whose unpickling creates ``marker`` (proof that code from the file ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


class BrainalignGlobalPayload:
    """A payload that calls a function of brainalign itself (here one that makes a folder).

    Readers that let ``brainalign.*`` names through (as inert records) must not call them.
    It calls ``brainalign.utils.atomic._new_folder``; if that is renamed, the sanity test
    ``test_payload_files_run_when_loaded_unsafely`` fails and says so.
    """

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        from brainalign.utils import atomic

        return (atomic._new_folder, (self.marker,))


def payload_pickle(marker: Path) -> bytes:
    return pickle.dumps(MarkerPayload(marker))


def write_npy_payload(path: Path, marker: Path, *, inside_dict: bool = False) -> Path:
    """A ``.npy`` 0-d object array (as ``np.save`` writes it) holding the payload.

    ``inside_dict`` hides it as a value of ``{1: "V1v", 2: payload}``, the layout of a label
    mapping.
    """
    content: Any = {1: "V1v", 2: MarkerPayload(marker)} if inside_dict else MarkerPayload(marker)
    holder = np.empty((), dtype=object)
    holder[()] = content
    np.save(path, holder, allow_pickle=True)
    return path


def write_npy_header_then_pickle(path: Path, marker: Path) -> Path:
    """A valid ``.npy`` header for a 0-d object array, followed by a bare payload pickle."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|O", "fortran_order": False, "shape": ()}
    )
    path.write_bytes(buffer.getvalue() + payload_pickle(marker))  # header includes the magic
    return path


def write_torch_payload(
    path: Path,
    marker: Path,
    *,
    legacy: bool = False,
    payload: type = MarkerPayload,
    tensors: dict[str, Any] | None = None,
) -> Path:
    """A PyTorch checkpoint (zip, or the legacy format) whose dict also holds the payload."""
    import torch

    content = {"state_dict": dict(tensors or {}), "hyper_parameters": payload(marker)}
    torch.save(content, path, _use_new_zipfile_serialization=not legacy)
    return path


def unpickle_unsafely(path: Path) -> None:
    """Load a payload file the unsafe way (what the readers must never do)."""
    import torch

    if path.suffix == ".npy":
        np.load(path, allow_pickle=True)
    else:
        torch.load(path, map_location="cpu", weights_only=False)
