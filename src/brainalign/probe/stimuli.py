"""Stimulus sets: ordered stimulus ids and the images shown for them.

A :class:`StimulusSet` holds ids and one of three image sources: image files, rows of an HDF5
dataset (read lazily, a few rows at a time, as NSD's ``imgBrick``), or a uint8 array in memory.
Its :attr:`StimulusSet.content_hash` (sha256 over ids and image bytes) enters feature cache keys.

Example::

    stimuli = StimulusSet.from_table("my_data/stimuli.csv")
    images = stimuli.load([0, 1, 2])  # list of PIL.Image, RGB
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from brainalign.utils.images import IMAGE_SUFFIXES

__all__ = [
    "IMAGE_SUFFIXES",
    "StimulusSet",
    "check_unique_ids",
    "format_id_list",
    "resolve_image_path",
    "stimulus_id_strings",
]

_HASH_CHUNK_ROWS = 64


def stimulus_id_strings(column: pd.Series) -> list[str]:
    """Stimulus ids read from a table as strings (integer-valued floats without a '.0')."""
    if pd.api.types.is_float_dtype(column) and np.all(np.mod(column.dropna(), 1) == 0):
        column = column.astype("Int64")
    return [str(value) for value in column]


def format_id_list(missing: Sequence[str], total: int, *, shown: int = 5) -> str:
    """Format ids for an error message: ``'x12', 'x40' (2 of 300)``.

    Parameters
    ----------
    missing : sequence of str
        The ids to report.
    total : int
        The size of the set they were looked up in.
    shown : int
        How many ids to spell out; the rest are summarised by the count.

    Returns
    -------
    text : str
    """
    listed = ", ".join(repr(str(stimulus_id)) for stimulus_id in missing[:shown])
    more = ", ..." if len(missing) > shown else ""
    return f"{listed}{more} ({len(missing)} of {total})"


def resolve_image_path(folder: Path, value: object, *, where: str) -> Path:
    """The image file that a table's ``image_path`` value names, inside the table's folder.

    ``value`` is a relative path, resolved against ``folder`` (the folder of the table that
    holds it). Absolute paths, and relative ones that climb out of ``folder`` with ``..``, are
    refused: a data table names files of its own data set, never others on the machine. The
    check is on the path as written (``images/../a.png`` is ``a.png``); symbolic links inside
    ``folder`` are followed, so that whoever sets a data set up can link its images in from
    another disk.

    Parameters
    ----------
    folder : Path
        The table's folder.
    value : object
        The ``image_path`` cell (a str; NaN or empty when the cell is blank).
    where : str
        The table and row, for the error message (``"stimuli.csv, row 3 (stimulus 'x2')"``).

    Returns
    -------
    path : Path
        ``folder / value``, normalised.

    Raises
    ------
    ValueError
        For a blank, absolute or escaping value: one line naming ``where``, the value and what
        is accepted.
    """
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    normal = os.path.normpath(text) if text.strip() else ""
    if not normal:
        problem = "is empty"
    elif Path(text).is_absolute() or Path(text).drive:
        problem = "is an absolute path"
    elif normal == os.pardir or normal.startswith(os.pardir + os.sep):
        problem = "leaves the table's folder"
    elif normal == os.curdir:
        problem = "names the folder itself, not an image file"
    else:
        return folder / normal
    raise ValueError(
        f"{where}: image_path {text!r} {problem}; give a path relative to {folder} that stays "
        "inside it, such as 'images/<id>.png' (absolute paths and '..' out of the folder are "
        "refused)"
    )


@dataclass(frozen=True)
class _PathSource:
    paths: tuple[Path, ...]

    def take(self, rows: np.ndarray) -> _PathSource:
        return _PathSource(tuple(self.paths[row] for row in rows))

    def load_one(self, row: int) -> Image.Image:
        with Image.open(self.paths[row]) as image:
            return image.convert("RGB")

    def hash_bytes(self, rows: np.ndarray) -> Iterable[bytes]:
        for row in rows:
            yield self.paths[row].read_bytes()

    def row_digests(self, rows: np.ndarray) -> list[str]:
        return [hashlib.sha256(self.paths[row].read_bytes()).hexdigest() for row in rows]


@dataclass(frozen=True)
class _ArraySource:
    array: np.ndarray  # (n, H, W, 3) uint8

    def take(self, rows: np.ndarray) -> _ArraySource:
        return _ArraySource(self.array[rows])

    def load_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]

    def hash_bytes(self, rows: np.ndarray) -> Iterable[bytes]:
        yield str(self.array.shape[1:]).encode()
        for start in range(0, len(rows), _HASH_CHUNK_ROWS):
            yield np.ascontiguousarray(self.array[rows[start : start + _HASH_CHUNK_ROWS]]).data

    def row_digests(self, rows: np.ndarray) -> list[str]:
        return _pixel_digests(self.load_rows, rows)


@dataclass(frozen=True)
class _HDF5Source:
    path: Path
    key: str
    dataset_rows: np.ndarray  # (n,) row of the HDF5 dataset for each stimulus

    def take(self, rows: np.ndarray) -> _HDF5Source:
        return _HDF5Source(self.path, self.key, self.dataset_rows[rows])

    def load_rows(self, rows: np.ndarray) -> np.ndarray:
        import h5py

        wanted = self.dataset_rows[rows]
        # h5py fancy indexing needs increasing, unique indices: read sorted, then reorder.
        unique_rows, inverse = np.unique(wanted, return_inverse=True)
        with h5py.File(self.path, "r") as handle:
            block = handle[self.key][unique_rows]  # (n_unique, H, W, 3)
        return np.asarray(block[inverse], dtype=np.uint8)

    def hash_bytes(self, rows: np.ndarray) -> Iterable[bytes]:
        for start in range(0, len(rows), _HASH_CHUNK_ROWS):
            yield np.ascontiguousarray(self.load_rows(rows[start : start + _HASH_CHUNK_ROWS])).data

    def row_digests(self, rows: np.ndarray) -> list[str]:
        return _pixel_digests(self.load_rows, rows)


def _pixel_digests(load_rows: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> list[str]:
    """sha256 of each image's shape and raw pixels, read a chunk of rows at a time."""
    digests = []
    for start in range(0, len(rows), _HASH_CHUNK_ROWS):
        for image in load_rows(rows[start : start + _HASH_CHUNK_ROWS]):
            image = np.ascontiguousarray(image)
            digests.append(hashlib.sha256(str(image.shape).encode() + image.data).hexdigest())
    return digests


_Source = _PathSource | _ArraySource | _HDF5Source


class StimulusSet:
    """Ordered stimulus ids and their images.

    Build one with :meth:`from_paths`, :meth:`from_array`, :meth:`from_hdf5`,
    :meth:`from_folder` or :meth:`from_table` rather than with the constructor.

    Parameters
    ----------
    ids : sequence of str
        Unique stimulus ids, in order.
    source : image source
        One of the private sources built by the ``from_*`` constructors.
    """

    def __init__(self, ids: Sequence[str], source: _Source) -> None:
        self.ids: list[str] = [str(stimulus_id) for stimulus_id in ids]
        check_unique_ids(self.ids)
        self._source = source
        self._content_hash: str | None = None
        self._row_digests: list[str] | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_paths(cls, ids: Sequence[str], paths: Sequence[str | Path]) -> StimulusSet:
        """Stimuli stored as image files, one path per id.

        Raises
        ------
        FileNotFoundError
            When image files are missing; the message names up to 5 ids and the count.
        """
        if len(ids) != len(paths):
            raise ValueError(f"got {len(ids)} stimulus ids but {len(paths)} image paths")
        resolved = tuple(Path(path) for path in paths)
        missing = [str(i) for i, path in zip(ids, resolved) if not path.is_file()]
        if missing:
            first_missing = resolved[[str(i) for i in ids].index(missing[0])]
            raise FileNotFoundError(
                "image files missing for stimulus ids "
                f"{format_id_list(missing, len(ids))}; first looked for at {first_missing}"
            )
        return cls(ids, _PathSource(resolved))

    @classmethod
    def from_array(cls, ids: Sequence[str], images: np.ndarray) -> StimulusSet:
        """Stimuli held in memory.

        Parameters
        ----------
        ids : sequence of str
        images : ndarray of shape (n_stimuli, height, width, 3), uint8
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                "images must be a uint8 array of shape (n_stimuli, height, width, 3); "
                f"got dtype {images.dtype} and shape {images.shape}"
            )
        if len(ids) != len(images):
            raise ValueError(f"got {len(ids)} stimulus ids but {len(images)} images")
        return cls(ids, _ArraySource(images))

    @classmethod
    def from_hdf5(
        cls,
        ids: Sequence[str],
        path: str | Path,
        key: str,
        rows: Sequence[int] | np.ndarray | None = None,
    ) -> StimulusSet:
        """Stimuli stored as rows of an HDF5 dataset of shape (n_images, height, width, 3).

        Only the rows asked for are read, when asked for.

        Parameters
        ----------
        ids : sequence of str
        path : path to the ``.hdf5`` file
        key : name of the dataset inside the file (NSD: ``"imgBrick"``)
        rows : sequence of int of length n_stimuli, optional
            0-based dataset row of each stimulus; default ``0 .. n_stimuli - 1``.
        """
        import h5py

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"HDF5 stimulus file not found: {path}")
        dataset_rows = np.arange(len(ids)) if rows is None else np.asarray(rows, dtype=np.int64)
        if dataset_rows.shape != (len(ids),):
            raise ValueError(f"got {len(ids)} stimulus ids but {dataset_rows.size} HDF5 rows")
        with h5py.File(path, "r") as handle:
            if key not in handle:
                raise KeyError(f"no dataset {key!r} in {path}; it holds {sorted(handle.keys())}")
            shape = handle[key].shape
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{path}[{key!r}] has shape {shape}; expected (n, height, width, 3)")
        if dataset_rows.size and (dataset_rows.min() < 0 or dataset_rows.max() >= shape[0]):
            raise IndexError(
                f"HDF5 rows must lie in [0, {shape[0]}) for {path}[{key!r}]; "
                f"got {dataset_rows.min()}..{dataset_rows.max()}"
            )
        return cls(ids, _HDF5Source(path, key, dataset_rows))

    @classmethod
    def from_folder(cls, folder: str | Path, ids: Sequence[str] | None = None) -> StimulusSet:
        """Stimuli stored as image files in one folder; the id of a file is its name stem.

        Parameters
        ----------
        folder : path
        ids : sequence of str, optional
            Which stimuli, in which order. Default: every image in the folder, sorted by name.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {folder}")
        by_stem: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                if path.stem in by_stem:
                    raise ValueError(
                        f"two images share the stimulus id {path.stem!r} in {folder}: "
                        f"{by_stem[path.stem].name} and {path.name}"
                    )
                by_stem[path.stem] = path
        if ids is None:
            if not by_stem:
                raise FileNotFoundError(
                    f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}"
                )
            return cls(list(by_stem), _PathSource(tuple(by_stem.values())))
        ids = [str(stimulus_id) for stimulus_id in ids]
        missing = [stimulus_id for stimulus_id in ids if stimulus_id not in by_stem]
        if missing:
            raise FileNotFoundError(
                f"image files missing in {folder} for stimulus ids "
                f"{format_id_list(missing, len(ids))}; each id needs a file named <id>.png "
                "(or another image suffix)"
            )
        return cls(ids, _PathSource(tuple(by_stem[stimulus_id] for stimulus_id in ids)))

    @classmethod
    def from_table(cls, table_path: str | Path) -> StimulusSet:
        """Stimuli listed in a CSV with ``stimulus_id`` and ``image_path`` columns.

        ``image_path`` is relative to the CSV's folder and must stay inside it (see
        :func:`resolve_image_path`).
        """
        table_path = Path(table_path)
        if not table_path.is_file():
            raise FileNotFoundError(f"stimulus table not found: {table_path}")
        table = pd.read_csv(table_path, dtype={"stimulus_id": str, "image_path": str})
        missing_columns = [c for c in ("stimulus_id", "image_path") if c not in table.columns]
        if missing_columns:
            raise ValueError(
                f"{table_path} lacks the column(s) {missing_columns}; it has {list(table.columns)}"
            )
        ids = list(table["stimulus_id"])
        paths = [
            resolve_image_path(
                table_path.parent,
                relative,
                where=f"{table_path}, row {row + 1} (stimulus {str(ids[row])!r})",
            )
            for row, relative in enumerate(table["image_path"])
        ]
        return cls.from_paths(ids, paths)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        kind = type(self._source).__name__.strip("_").removesuffix("Source").lower()
        return f"StimulusSet(n_stimuli={len(self)}, source={kind})"

    @property
    def image_paths(self) -> list[Path] | None:
        """The image file of each stimulus, or None when images are not stored as files."""
        if isinstance(self._source, _PathSource):
            return list(self._source.paths)
        return None

    def index_of(self, ids: Sequence[str]) -> np.ndarray:
        """Positions of ``ids`` in this set.

        Returns
        -------
        positions : ndarray of shape (len(ids),), int

        Raises
        ------
        KeyError
            When some ids are not in the set (the message names them).
        """
        position = {stimulus_id: i for i, stimulus_id in enumerate(self.ids)}
        ids = [str(stimulus_id) for stimulus_id in ids]
        missing = [stimulus_id for stimulus_id in ids if stimulus_id not in position]
        if missing:
            raise KeyError(f"stimulus ids missing from images: {format_id_list(missing, len(ids))}")
        return np.array([position[stimulus_id] for stimulus_id in ids], dtype=np.int64)

    def subset(self, ids: Sequence[str]) -> StimulusSet:
        """A new set with the given ids, in the given order."""
        rows = self.index_of(ids)
        subset = StimulusSet([self.ids[row] for row in rows], self._source.take(rows))
        if self._row_digests is not None:  # already read: no second pass over the images
            subset._row_digests = [self._row_digests[row] for row in rows]
        return subset

    def _rows(self, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
        rows = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"indices must be one-dimensional; got shape {rows.shape}")
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"stimulus indices out of range for a set of {len(self)}")
        return rows % max(len(self), 1)

    def load(self, indices: Sequence[int] | np.ndarray | None = None) -> list[Image.Image]:
        """Load images as RGB PIL images.

        Parameters
        ----------
        indices : sequence of int, optional
            Positions in this set; default all.

        Returns
        -------
        images : list of PIL.Image.Image
        """
        rows = self._rows(indices)
        if isinstance(self._source, _PathSource):
            return [self._source.load_one(int(row)) for row in rows]
        return [Image.fromarray(image) for image in self._source.load_rows(rows)]

    def load_array(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Load images as one uint8 array; all images must share one size.

        Returns
        -------
        images : ndarray of shape (n, height, width, 3), uint8
        """
        rows = self._rows(indices)
        if not isinstance(self._source, _PathSource):
            return np.ascontiguousarray(self._source.load_rows(rows))
        arrays = [np.asarray(image) for image in self.load(rows)]
        sizes = sorted({array.shape for array in arrays})
        if len(sizes) > 1:
            raise ValueError(
                f"images differ in size ({sizes[:3]}...); use load() for PIL images "
                "and resize them, or store images of one size"
            )
        if not arrays:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        return np.stack(arrays).astype(np.uint8, copy=False)  # (n, H, W, 3)

    @property
    def content_hash(self) -> str:
        """sha256 (hex) over the ids and the image bytes, computed once.

        Files are hashed as stored (encoded bytes); arrays and HDF5 rows as raw pixels, so the
        same images in two storage kinds hash differently (a cache miss, never a wrong hit).
        """
        if self._content_hash is None:
            digest = hashlib.sha256()
            digest.update(type(self._source).__name__.encode())
            for stimulus_id in self.ids:
                digest.update(stimulus_id.encode("utf-8") + b"\0")
            for chunk in self._source.hash_bytes(np.arange(len(self))):
                digest.update(chunk)
            self._content_hash = digest.hexdigest()
        return self._content_hash

    @property
    def row_digests(self) -> list[str]:
        """sha256 (hex) of each stimulus's image, in set order, computed once.

        Files are hashed as stored (encoded bytes), arrays and HDF5 rows as shape + raw pixels.
        """
        if self._row_digests is None:
            self._row_digests = self._source.row_digests(np.arange(len(self)))
        return self._row_digests

    @property
    def set_hash(self) -> str:
        """sha256 (hex) of the *set* of (id, image) pairs: the same whatever the order.

        Feature caches are keyed on it and store rows in :meth:`canonical_order`, so fMRI and
        MEG data listing the same images in different orders share one extraction.
        """
        digest = hashlib.sha256(type(self._source).__name__.encode())
        for row in self.canonical_order():
            digest.update(f"{self.ids[row]}\0{self.row_digests[row]}\0".encode())
        return digest.hexdigest()

    def canonical_order(self) -> np.ndarray:
        """Positions of the stimuli sorted by id: the row order of cached features.

        Returns
        -------
        ndarray of shape (n_stimuli,), int64
        """
        return np.argsort(np.asarray(self.ids, dtype=object), kind="stable").astype(np.int64)


def check_unique_ids(ids: list[str]) -> None:
    """Raise ValueError naming duplicated ids (up to 5) and their count."""
    duplicated = pd.Index(ids)
    duplicated = list(dict.fromkeys(duplicated[duplicated.duplicated()]))
    if duplicated:
        raise ValueError(f"duplicate stimulus ids: {format_id_list(duplicated, len(ids))}")
