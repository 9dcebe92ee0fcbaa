"""Read ``.npy`` data files without ever running code stored in them.

``np.load`` with ``allow_pickle`` set unpickles object arrays, and unpickling calls whatever
the file names: a crafted data file runs its payload. brainalign reads data files with:

- :func:`load_array`: arrays of numbers (or strings), ``allow_pickle=False``; a file of Python
  objects is refused with a message that says why, instead of numpy's hint to allow pickles.
- :func:`load_label_mapping`: the one pickled layout real data sets ship (Algonauts 2023's
  ``mapping_*.npy``: a 0-d object array holding a dict of label value to name). The pickle is
  read by an unpickler that can build nothing but NumPy arrays, dtypes and scalars; any other
  global (``os.system``, ``builtins.eval``...) stops the read before it is called.

Example::

    responses = load_array("responses.npy")
    names = load_label_mapping("roi_masks/mapping_prf-visualrois.npy")  # {1: "V1v", ...}
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from brainalign.utils.reading import read_file

__all__ = ["load_array", "load_label_mapping"]

_NEVER_UNPICKLED = "brainalign never unpickles data files (unpickling can run code in the file)"

_HEADER_READERS: dict[tuple[int, int], Callable[[BinaryIO], tuple[Any, bool, np.dtype]]] = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}

_RECONSTRUCT = np.empty(()).__reduce__()[0]  # numpy's C function that rebuilds an ndarray
_SCALAR = np.float64(0.0).__reduce__()[0]  # ... and the one that rebuilds a numpy scalar
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    # the names numpy 1.x (numpy.core) and numpy 2.x (numpy._core) write for them
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _Refused(ValueError):
    """A data file refused on purpose (its message is final: not re-worded by read_file)."""


class _ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild NumPy arrays and scalars.

    Hand-written because neither numpy nor the standard library offers a restricted loader for
    object arrays; the allow-list is the set of globals ``np.save`` writes for a 0-d object
    array of a dict of ints and strings (numpy 1.x and 2.x spellings), nothing more.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(module, name) from None


def _read_header(
    handle: BinaryIO, path: Path, what: str
) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype from a ``.npy`` header; None for a format version read only by np.load."""
    try:
        version = np.lib.format.read_magic(handle)
    except ValueError:
        raise _Refused(
            f"{path}: cannot read {what} (the file does not start with a .npy header, so it is "
            "not a NumPy .npy file); re-create it with np.save"
        ) from None
    if version not in _HEADER_READERS:
        return None
    shape, _, dtype = _HEADER_READERS[version](handle)
    return tuple(shape), dtype


def _load_plain(path: Path, what: str, mmap_mode: str | None) -> np.ndarray:
    with open(path, "rb") as handle:
        header = _read_header(handle, path, what)
    if header is not None and header[1].hasobject:
        raise _Refused(
            f"{path}: holds Python objects (dtype {header[1]}), not an array of numbers; "
            f"{_NEVER_UNPICKLED}: save the values as numbers, e.g. "
            "np.save(path, values.astype(np.float32))"
        )
    return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)


def load_array(
    path: str | os.PathLike[str], *, what: str = "a NumPy .npy array", mmap_mode: str | None = None
) -> np.ndarray:
    """``np.load(path, allow_pickle=False)``, with errors that name the file.

    Parameters
    ----------
    path : path-like
        A ``.npy`` file.
    what : str
        What the file should be, for the error message.
    mmap_mode : {None, "r", "r+", "c"}
        As in :func:`numpy.load`.

    Returns
    -------
    array : ndarray (a memory map when ``mmap_mode`` is given)

    Raises
    ------
    FileNotFoundError
        When the file is missing.
    ValueError
        Not a ``.npy`` file, an array of Python objects (never unpickled), or a damaged file.
    """
    path = Path(path)
    return read_file(
        lambda: _load_plain(path, what, mmap_mode), path, what, passthrough=(_Refused,)
    )


def _unpickle_numpy_only(path: Path, what: str) -> Any:
    with open(path, "rb") as handle:
        header = _read_header(handle, path, what)
        if header is None or header[0] != () or header[1] != np.dtype(object):
            found = "an unreadable header" if header is None else f"shape {header[0]}"
            dtype = "" if header is None else f", dtype {header[1]}"
            raise _Refused(
                f"{path}: should hold a dict {{label value: name}} saved with np.save (a 0-d "
                f"object array); found {found}{dtype}"
            )
        try:
            return _NumpyOnlyUnpickler(handle).load()
        except _ForbiddenGlobal as error:
            raise _Refused(
                f"{path}: refused: its pickle calls {error.qualified_name}, and only NumPy's "
                f"array reconstruction is accepted in a label mapping; {_NEVER_UNPICKLED}. "
                "Re-download the file, or write the mapping as JSON"
            ) from None


def _is_label_value(key: Any) -> bool:
    return isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_)


def load_label_mapping(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read a ``.npy`` label mapping ``{label value: name}`` without running code from it.

    The file is what ``np.save(path, {1: "V1v", 2: "V1d"})`` writes: a ``.npy`` header for a
    0-d object array, then a pickle. The pickle is read by an unpickler that can only build
    NumPy arrays, dtypes and scalars, and the result must be a dict of integers to strings.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    mapping : dict of int to str

    Raises
    ------
    FileNotFoundError
        When the file is missing.
    ValueError
        One line naming the file: not a ``.npy`` file, another shape or dtype, a pickle that
        asks for anything but NumPy's reconstruction functions, a damaged pickle, or content
        other than a dict of int to str.
    """
    path = Path(path)
    what = "a pickled label mapping"
    loaded = read_file(
        lambda: _unpickle_numpy_only(path, what), path, what, passthrough=(_Refused,)
    )
    content = loaded.item() if isinstance(loaded, np.ndarray) and loaded.shape == () else loaded
    if not isinstance(content, dict):
        raise ValueError(
            f"{path}: should hold a dict {{label value: name}}; it holds {type(content).__name__}"
        )
    wrong = [(k, v) for k, v in content.items() if not _is_label_value(k) or not isinstance(v, str)]
    if wrong:
        key, value = wrong[0]
        raise ValueError(
            f"{path}: should map integer label values to names (str); found {key!r}: "
            f"{value!r} ({type(key).__name__}: {type(value).__name__})"
        )
    return {int(key): str(value) for key, value in content.items()}
