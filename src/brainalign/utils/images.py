"""The image files brainalign reads: one list for stimulus folders, training folders and shards.

A folder of images means the same set of files to :meth:`brainalign.probe.stimuli.StimulusSet.
from_folder`, the training folder source (:func:`brainalign.train.data.list_images`) and
``brainalign shards`` (:func:`brainalign.train.shards.write_image_shards`): files whose suffix,
in any case, is one of :data:`IMAGE_SUFFIXES`.
"""

from __future__ import annotations

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_SUFFIXES", "PIL_FORMAT_EXTENSIONS", "is_image_name"]

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)
"""File name suffixes of images (compared in lower case)."""

IMAGE_EXTENSIONS: frozenset[str] = frozenset(suffix[1:] for suffix in IMAGE_SUFFIXES)
"""The same suffixes without the dot: webdataset sample keys (``jpg``, ``png``...)."""

PIL_FORMAT_EXTENSIONS: dict[str, str] = {
    "JPEG": "jpg",
    "MPO": "jpg",  # multi-picture JPEG (camera files): PIL names it MPO, its first frame is a JPEG
    "PNG": "png",
    "WEBP": "webp",
    "BMP": "bmp",
    "GIF": "gif",
    "TIFF": "tif",
    "PPM": "ppm",  # PIL reads .ppm and .pgm as the "PPM" format
}
"""PIL format name of each readable image format -> the extension that stores it in a shard."""


def is_image_name(name: str) -> bool:
    """Whether a file name ends in one of :data:`IMAGE_SUFFIXES` (any case)."""
    return name.lower().endswith(IMAGE_SUFFIXES)
