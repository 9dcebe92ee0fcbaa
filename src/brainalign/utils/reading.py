"""Read a file with a third-party library and report a damaged file by its name.

Libraries fail on a truncated or corrupt file with their own exception types and messages that
rarely name the file (safetensors: "Error while deserializing header", torch: "PytorchStreamReader
failed", MNE: a struct error deep in the FIF reader). :func:`read_file` turns any such failure
into one ``ValueError`` that names the file, what it should have been and what to do, keeping
the library's message as the cause.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

__all__ = ["read_file"]

T = TypeVar("T")


def read_file(
    read: Callable[[], T],
    path: str | os.PathLike[str],
    what: str,
    remedy: str = "",
    *,
    passthrough: tuple[type[BaseException], ...] = (),
) -> T:
    """Return ``read()``; on failure raise ``ValueError`` naming ``path`` and ``what``.

    Parameters
    ----------
    read : callable with no arguments
        The library call, e.g. ``lambda: np.load(path)``.
    path : path-like
        The file being read, named in the error.
    what : str
        What the file should be ("an MNE Epochs .fif file").
    remedy : str
        What the user can do, appended to the message; by default "re-create or re-download
        it".
    passthrough : tuple of exception types
        Raised unchanged, for callers that handle them (e.g. ``pickle.UnpicklingError``).

    Raises
    ------
    FileNotFoundError, PermissionError
        Passed through unchanged (they name the file, and the file is not damaged).
    ValueError
        Any other failure of ``read``: ``"<path>: cannot read <what> (<error type>: <first
        line of the library's message>); <remedy>"``.
    """
    try:
        return read()
    except (FileNotFoundError, PermissionError, MemoryError, *passthrough):
        raise
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        raise ValueError(
            f"{path}: cannot read {what} ({reason}); the file may be truncated or damaged, "
            f"{remedy or 're-create or re-download it'}"
        ) from error
