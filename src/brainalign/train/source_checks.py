"""Cheap content checks of data sources, run when the data module is built (before any run).

Listing a source only proves that files exist. These checks open a few of them, so that a folder
of damaged images, a shard that is not a tar archive or a shard without images is reported by
name before Lightning creates a run folder, rather than after the first batch fails:

- a folder source: up to :data:`FILES_TRIED` image files spread over the sorted list are decoded;
  the check passes at the first that decodes (training skips the others and counts them);
- a shards source: up to :data:`SHARDS_TRIED` shards spread over the list are opened with
  :mod:`tarfile` and must each hold a decodable image among their first :data:`MEMBERS_TRIED`
  members;
- a procedural source: the generation parameters are checked (the images are written later, by
  ``prepare_data``).

The images are decoded with the same function the training stream uses.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence

import numpy as np

from brainalign.synthetic.images import iter_images
from brainalign.train.data import SHARDS_HINT, DataSource, ProceduralSpec, decode_image
from brainalign.train.shards import read_error_text
from brainalign.utils.images import IMAGE_EXTENSIONS

__all__ = [
    "FILES_TRIED",
    "MEMBERS_TRIED",
    "SHARDS_TRIED",
    "check_images_decode",
    "check_procedural_spec",
    "check_shards_hold_images",
]

FILES_TRIED = 16
SHARDS_TRIED = 4
MEMBERS_TRIED = 64


def _spread(items: Sequence[str], n: int) -> list[str]:
    """Up to ``n`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= n:
        return list(items)
    indices = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in indices]


def check_images_decode(source: DataSource, files: Sequence[str]) -> None:
    """Raise ``ValueError`` if none of the image files tried from a folder source decodes.

    Parameters
    ----------
    source : DataSource
        The folder source (named in the message).
    files : sequence of str
        Its image files, sorted (as :func:`brainalign.train.data.list_images` returns them).
    """
    tried = _spread(files, FILES_TRIED)
    first_error: tuple[str, BaseException] | None = None
    for path in tried:
        try:
            with open(path, "rb") as file:
                decode_image(file.read())
            return
        except Exception as error:  # any failure to read or decode counts as a damaged file
            first_error = first_error or (path, error)
    assert first_error is not None
    which = f"its {len(tried)}" if len(tried) == len(files) else f"{len(tried)} of its {len(files)}"
    raise ValueError(
        f"data source {source.label!r}: none of {which} image files under {source.path!r} can be "
        f"decoded (e.g. {first_error[0]!r}: {read_error_text(first_error[1])}); replace the "
        "damaged files or point the source at a folder of images"
    )


def _shard_has_image(shard: str) -> bool:
    """Whether one of the first members of a tar shard is an image that decodes."""
    with tarfile.open(shard, "r") as tar:
        for index, member in enumerate(tar):
            if index >= MEMBERS_TRIED:
                return False
            extension = member.name.rsplit(".", 1)[-1].lower()
            if not member.isfile() or extension not in IMAGE_EXTENSIONS:
                continue
            stream = tar.extractfile(member)
            if stream is None:
                continue
            try:
                decode_image(stream.read())
                return True
            except Exception:  # a damaged sample; the next member may still decode
                continue
    return False


def check_shards_hold_images(source: DataSource, shards: Sequence[str]) -> None:
    """Raise ``ValueError`` naming a shard that is not a tar archive or holds no image.

    Parameters
    ----------
    source : DataSource
        The shards source (named in the message).
    shards : sequence of str
        Its shard files (as :func:`brainalign.train.data.list_shards` returns them).
    """
    for shard in _spread(shards, SHARDS_TRIED):
        try:
            has_image = _shard_has_image(shard)
        except (tarfile.TarError, OSError, EOFError) as error:
            raise ValueError(
                f"data source {source.label!r}: shard {shard!r} is not a readable tar archive "
                f"({read_error_text(error)}); rewrite it ({SHARDS_HINT}) or remove it"
            ) from None
        if not has_image:
            raise ValueError(
                f"data source {source.label!r}: shard {shard!r} holds no decodable image among "
                f"its first {MEMBERS_TRIED} members (image keys: "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}); {SHARDS_HINT}"
            )


def check_procedural_spec(source: DataSource) -> None:
    """Raise ``ValueError`` naming the source if its generation parameters are invalid."""
    spec = source.procedural or ProceduralSpec()
    try:
        iter_images(
            spec.n_images, image_types=dict(spec.image_types), size=spec.image_size, seed=spec.seed
        )
    except ValueError as error:
        raise ValueError(f"data source {source.label!r} (procedural): {error}") from None
