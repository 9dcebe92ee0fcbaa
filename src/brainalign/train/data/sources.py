"""Training data sources: what a source is, and listing its shards or image files."""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from braceexpand import braceexpand
from PIL import Image

from brainalign.utils.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

SHARDS_HINT = "make shards with `brainalign shards IMAGE_DIR OUT_DIR`"
MAX_CONSECUTIVE_FAILURES = 1000
MIX_BLOCK_SIZE = 10_000

# Tags that keep the seeded random streams of different purposes apart.
AUGMENT_TAG, MIX_TAG, FOLDER_TAG, SHARDS_TAG = range(4)


@dataclass
class ProceduralSpec:
    """What ``kind="procedural"`` generates (see :mod:`brainalign.synthetic.images`).

    Parameters
    ----------
    n_images : int
        Images written to shards once, then reused.
    image_size : int
        Side in pixels.
    image_types : dict of str to float
        Mixture weights of the image types (the data factor).
    seed : int
        Generation seed.
    """

    n_images: int = 20000
    image_size: int = 32
    image_types: dict[str, float] = field(
        default_factory=lambda: {"objects": 1.0, "textures": 1.0, "blobs": 1.0}
    )
    seed: int = 0


@dataclass
class DataSource:
    """One source of training images.

    Parameters
    ----------
    path : str
        ``kind="shards"``: a folder of webdataset ``.tar`` shards (searched recursively), one
        ``.tar`` file, or a brace pattern such as ``shards/train-{000000..000031}.tar``.
        ``kind="folder"``: a folder of image files (searched recursively).
        ``kind="procedural"``: the folder where procedural shards are written on first use
        (``prepare_data``) and reused afterwards.
    kind : {"shards", "folder", "procedural"}
        How the images are stored. Only folders give an exactly resumable stream.
    weight : float
        Relative share of the samples drawn from this source (> 0).
    name : str, optional
        Label used in messages; defaults to the path's last component.
    procedural : ProceduralSpec, optional
        Generation parameters for ``kind="procedural"``.
    """

    path: str
    kind: Literal["shards", "folder", "procedural"] = "shards"
    weight: float = 1.0
    name: str | None = None
    procedural: ProceduralSpec | None = None

    @property
    def label(self) -> str:
        """Name used in messages."""
        return self.name or os.path.basename(os.path.normpath(self.path)) or self.path


class DataSourceError(RuntimeError):
    """A data source stopped giving usable samples while training (every file damaged)."""


def derive_seed(*values: int) -> int:
    """Mix non-negative integers into one 63-bit seed (for torch, random and numpy)."""
    state = np.random.SeedSequence(list(values)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SkipCounter:
    """Counts skipped samples and logs the first few of them (then every 1000th)."""

    def __init__(self, source_label: str) -> None:
        self.source_label = source_label
        self.count = 0

    def skip(self, reason: str) -> None:
        self.count += 1
        if self.count <= 10 or self.count % 1000 == 0:
            log.warning(
                "data source %r: skipped a sample (%d so far): %s",
                self.source_label,
                self.count,
                reason,
            )


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image (raises on undecodable bytes)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


# --------------------------------------------------------------------------- listing sources


def check_source(source: DataSource) -> None:
    """Cheap checks of one source (weight, kind, the path exists); raise ValueError if wrong."""
    if not isinstance(source, DataSource):
        raise TypeError(f"sources must be DataSource objects, got {type(source).__name__}")
    if not source.weight > 0 or not np.isfinite(source.weight):
        raise ValueError(
            f"data source {source.label!r}: weight must be a positive number, got {source.weight}"
        )
    if source.kind not in ("shards", "folder", "procedural"):
        raise ValueError(
            f"data source {source.label!r}: kind must be 'shards', 'folder' or 'procedural', "
            f"got {source.kind!r}"
        )
    if source.kind == "procedural":
        return  # written by prepare_data(); checked as shards in setup()
    path = os.path.expanduser(source.path)
    if source.kind == "shards" and "{" in path:
        return  # a brace pattern: its files are checked by list_shards
    if not os.path.exists(path):
        what = "shard folder or .tar file" if source.kind == "shards" else "image folder"
        hint = f"; {SHARDS_HINT}" if source.kind == "shards" else ""
        raise FileNotFoundError(
            f"data source {source.label!r}: {what} {path!r} does not exist{hint}"
        )
    if source.kind == "folder" and not os.path.isdir(path):
        raise NotADirectoryError(
            f"data source {source.label!r}: {path!r} is not a folder (kind='folder' needs a "
            "folder of images; use kind='shards' for a .tar shard)"
        )


def list_shards(source: DataSource) -> list[str]:
    """Sorted shard files of a shards source; raise if there are none.

    Returns
    -------
    shards : list of str
        Paths of the ``.tar`` files.
    """
    check_source(source)
    path = os.path.expanduser(source.path)
    if "{" in path:
        shards = list(braceexpand(path))
        missing = [shard for shard in shards if not os.path.isfile(shard)]
        if missing:
            raise FileNotFoundError(
                f"data source {source.label!r}: {len(missing)} of {len(shards)} shards of the "
                f"pattern {path!r} do not exist, e.g. {missing[0]!r}; {SHARDS_HINT}"
            )
        return shards
    if os.path.isfile(path):
        if not path.endswith(".tar"):
            raise ValueError(
                f"data source {source.label!r}: {path!r} is not a .tar shard; give a folder of "
                f".tar shards, a .tar file, or use kind='folder' for an image folder"
            )
        return [path]
    shards = []
    for root, dirs, files in os.walk(path, followlinks=True):
        dirs.sort()
        shards.extend(os.path.join(root, name) for name in sorted(files) if name.endswith(".tar"))
    if not shards:
        raise FileNotFoundError(
            f"data source {source.label!r}: no .tar shards found under {path!r} (searched "
            f"recursively); {SHARDS_HINT}, or use kind='folder' for a folder of images"
        )
    return sorted(shards)


def list_images(source: DataSource) -> list[str]:
    """Sorted image files under a folder source (recursive); raise if there are none.

    Returns
    -------
    files : list of str
        Paths of the images, sorted so the order is the same on every machine.
    """
    check_source(source)
    path = os.path.expanduser(source.path)
    files = []
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs.sort()
        files.extend(
            os.path.join(root, name)
            for name in names
            if name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")
        )
    if not files:
        raise FileNotFoundError(
            f"data source {source.label!r}: no images found under {path!r} (searched "
            f"recursively for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return sorted(files)
