"""Write webdataset shards: from an image folder, or from procedural images (the demo data).

Each sample has a ``__key__``, the encoded image under its format's extension (``jpg``, ``png``,
``gif``, ``tif``...; folder images keep the bytes they have on disk) and a ``json`` record (for a
folder: ``path`` relative to the folder, plus ``label`` and ``class_index`` when the image sits in
a sub-folder; for procedural images: ``stimulus_id`` and all latents). A ``manifest.json`` next to
the shards records what was written. Output is written to a temporary folder beside ``out_dir``
and moved into place only when complete, so a failure leaves no half-written shards.

Usage::

    write_image_shards(Path("images/"), Path("shards/"), max_count=1000)
    write_procedural_shards(Path("data/procedural"), n_images=20000, size=32, seed=0)
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm
from webdataset import TarWriter

from brainalign.synthetic.images import (
    GENERATOR_VERSION,
    IMAGE_TYPES,
    iter_images,
    normalize_image_type_weights,
)
from brainalign.utils.atomic import folder_lock, temporary_folder
from brainalign.utils.images import IMAGE_SUFFIXES as IMAGE_FILE_EXTENSIONS
from brainalign.utils.images import PIL_FORMAT_EXTENSIONS

__all__ = [
    "IMAGE_FILE_EXTENSIONS",
    "LATENTS_NAME",
    "MANIFEST_NAME",
    "write_image_shards",
    "write_procedural_shards",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LATENTS_NAME = "latents.csv"
FORMAT_VERSION = 1
DEFAULT_PATTERN = "shard-%06d.tar"

_TAR_MTIME = 0.0  # fixed member times: the same input gives byte-identical shards
# Parameters that must agree for existing procedural shards to be reused.
_PROCEDURAL_KEYS = (
    "kind",
    "format_version",
    "generator_version",
    "n_images",
    "image_types",
    "size",
    "seed",
    "max_count",
    "pattern",
)

Sample = dict[str, Any]


def read_error_text(error: BaseException) -> str:
    """Why a file could not be read, on one line (PIL's "cannot identify" said plainly)."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image file that PIL can decode"
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _progress_off(progress: bool) -> bool | None:
    """tqdm's ``disable``: off if not wanted, else shown only on a terminal (not in logs)."""
    return None if progress else True


def _check_pattern(pattern: str) -> None:
    directives = re.findall(r"%0?\d*d", pattern)
    if len(directives) != 1 or "/" in pattern or "\\" in pattern or not pattern.endswith(".tar"):
        raise ValueError(
            f"pattern must be a file name ending in '.tar' with exactly one integer field such "
            f"as 'shard-%06d.tar', got {pattern!r}"
        )


def _check_max_count(max_count: int) -> None:
    if isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1:
        raise ValueError(
            f"max_count (samples per shard) must be a positive integer, got {max_count!r}"
        )


def _existing_output(out_dir: Path) -> list[Path]:
    """Shards and manifest directly inside out_dir (what a new write would replace)."""
    if not out_dir.is_dir():
        return []
    owned = [path for path in out_dir.iterdir() if path.is_file() and path.suffix == ".tar"]
    owned += [
        out_dir / name for name in (MANIFEST_NAME, LATENTS_NAME) if (out_dir / name).is_file()
    ]
    return sorted(owned)


def _refuse_existing(out_dir: Path, existing: Sequence[Path]) -> None:
    shown = ", ".join(path.name for path in existing[:3]) + (", ..." if len(existing) > 3 else "")
    raise FileExistsError(
        f"output folder {str(out_dir)!r} already holds shards ({shown}); pass overwrite=True "
        f"(`--overwrite` on the command line) to replace them, or choose another folder"
    )


def _write_tar_shards(
    samples: Iterable[Sample], folder: Path, *, pattern: str, max_count: int
) -> tuple[list[str], list[int]]:
    """Write samples into consecutive shards of at most max_count samples.

    Returns
    -------
    names, counts : the shard file names and the number of samples in each
    """
    names: list[str] = []
    counts: list[int] = []
    writer: TarWriter | None = None
    try:
        for sample in samples:
            if writer is None or counts[-1] >= max_count:
                if writer is not None:
                    writer.close()
                names.append(pattern % len(names))
                counts.append(0)
                writer = TarWriter(str(folder / names[-1]), mtime=_TAR_MTIME)
            writer.write(sample)
            counts[-1] += 1
    finally:
        if writer is not None:
            writer.close()
    return names, counts


@contextlib.contextmanager
def _one_writer(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock of out_dir's parent while shards there are checked and written.

    Runs of a study, and DDP jobs started together, share a procedural source: without the
    lock each would find no manifest, write the same shards and replace the others' files
    while they read them. With it the first writes, the others wait and then reuse its shards.
    Parent folders made for the output are removed again if the write fails.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output path {str(out_dir)!r} exists and is not a folder")
    created = [parent for parent in out_dir.parents if not parent.exists()]  # deepest first
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    succeeded = False
    try:
        with folder_lock(out_dir.parent):
            yield
        succeeded = True
    finally:
        if not succeeded:
            for parent in created:  # the folders made for the output, if still empty
                try:
                    parent.rmdir()
                except OSError:
                    break


def _publish(out_dir: Path, *, overwrite: bool, write: Callable[[Path], None]) -> None:
    """Run ``write(folder)`` on a temporary folder beside out_dir, then move its files in place.

    Called under :func:`_one_writer`.
    """
    existing = _existing_output(out_dir)
    if existing and not overwrite:
        _refuse_existing(out_dir, existing)
    staging = temporary_folder(out_dir)
    try:
        write(staging)
        if not out_dir.exists():
            staging.rename(out_dir)
        else:
            for path in _existing_output(out_dir):
                path.unlink()
            for path in sorted(staging.iterdir()):
                path.replace(out_dir / path.name)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _find_images(image_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in image_dir.rglob("*")
        if path.suffix.lower() in IMAGE_FILE_EXTENSIONS
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(image_dir).parts)
    )


def _image_key(path: Path, data: bytes) -> str:
    """Extension key of an encoded image, from its content; raise naming the file if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
    except Exception as error:  # PIL raises several types for corrupt files
        raise ValueError(
            f"image file {str(path)!r} cannot be read as an image ({read_error_text(error)}); "
            "replace it or move it out of the folder"
        ) from None
    if image_format not in PIL_FORMAT_EXTENSIONS:
        raise ValueError(
            f"image file {str(path)!r} holds a {image_format} image; supported formats are "
            f"{sorted(PIL_FORMAT_EXTENSIONS)} (convert it, or move it out of the folder)"
        )
    return PIL_FORMAT_EXTENSIONS[image_format]


def write_image_shards(
    image_dir: Path,
    out_dir: Path,
    *,
    max_count: int = 1000,
    pattern: str = DEFAULT_PATTERN,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Pack a folder of images (searched recursively) into webdataset tar shards.

    Images are taken in sorted order of their relative paths; hidden files and folders are
    skipped. Each sample's key is its zero-padded index, its image bytes are copied unchanged
    (under ``jpg``, ``png``, ``gif``, ``tif``... from the file's actual format) and its ``json``
    holds ``path`` (relative, with ``/``) and, for images in a sub-folder, ``label`` (the parent
    folder's name) and ``class_index`` (the label's rank among the sorted labels).

    Parameters
    ----------
    image_dir : Path
        Folder of image files (suffixes in :data:`brainalign.utils.images.IMAGE_SUFFIXES`).
    out_dir : Path
        Folder that receives the shards and ``manifest.json``; created if needed.
    max_count : int
        Samples per shard.
    pattern : str
        Shard file name with one integer field.
    overwrite : bool
        Replace shards already in ``out_dir`` (otherwise they are an error).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    shards : list of Path
        The shard files written, in order.
    """
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    _check_max_count(max_count)
    _check_pattern(pattern)
    if not image_dir.exists():
        raise FileNotFoundError(f"image folder {str(image_dir)!r} does not exist")
    if not image_dir.is_dir():
        raise NotADirectoryError(f"image folder {str(image_dir)!r} is not a folder")
    files = _find_images(image_dir)
    if not files:
        raise ValueError(
            f"no images found in {str(image_dir)!r} (searched recursively for files ending in "
            f"{', '.join(IMAGE_FILE_EXTENSIONS)}, any case)"
        )
    relative_paths = [file.relative_to(image_dir) for file in files]
    labels = sorted({path.parent.name for path in relative_paths if path.parent != Path(".")})
    class_index = {label: index for index, label in enumerate(labels)}

    def samples() -> Iterable[Sample]:
        for index, (file, relative) in enumerate(
            tqdm(
                list(zip(files, relative_paths)),
                desc="shards",
                unit="img",
                disable=_progress_off(progress),
            )
        ):
            data = file.read_bytes()
            record: dict[str, Any] = {"path": relative.as_posix()}
            if relative.parent != Path("."):
                record["label"] = relative.parent.name
                record["class_index"] = class_index[relative.parent.name]
            yield {"__key__": f"{index:08d}", _image_key(file, data): data, "json": record}

    shard_names: list[str] = []

    def write(folder: Path) -> None:
        names, counts = _write_tar_shards(samples(), folder, pattern=pattern, max_count=max_count)
        shard_names.extend(names)
        manifest = {
            "kind": "image_folder",
            "format_version": FORMAT_VERSION,
            "source": str(image_dir.resolve()),
            "n_images": len(files),
            "classes": labels,
            "max_count": max_count,
            "pattern": pattern,
            "shards": names,
            "counts": counts,
        }
        _write_manifest(folder, manifest)

    with _one_writer(out_dir):
        _publish(out_dir, overwrite=overwrite, write=write)
    log.info("wrote %d images into %d shards in %s", len(files), len(shard_names), out_dir)
    return [out_dir / name for name in shard_names]


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        log.warning("ignoring unreadable manifest %s: %s", path, error)
        return None
    return manifest if isinstance(manifest, dict) else None


def _same_parameter(on_disk: Any, requested: Any) -> bool:
    """Equal, with mixture weights compared to rounding error (they come from divisions)."""
    if isinstance(on_disk, dict) and isinstance(requested, dict):
        return on_disk.keys() == requested.keys() and all(
            isinstance(on_disk[name], (int, float))
            and math.isclose(on_disk[name], requested[name], rel_tol=1e-9)
            for name in requested
        )
    return on_disk == requested


def _procedural_on_disk(
    out_dir: Path, parameters: Mapping[str, Any], *, overwrite: bool
) -> tuple[list[Path] | None, bool]:
    """Shards in out_dir made with these parameters, if all are there; and whether to overwrite.

    Shards listed by a matching manifest but missing are this generator's own incomplete output,
    so they are overwritten; a manifest with other parameters is an error unless ``overwrite``.
    """
    manifest = _read_manifest(out_dir)
    if manifest is None or manifest.get("kind") != "procedural":
        return None, overwrite
    differences = [
        f"{key}: {manifest.get(key)!r} on disk, {parameters[key]!r} requested"
        for key in _PROCEDURAL_KEYS
        if not _same_parameter(manifest.get(key), parameters[key])
    ]
    if not differences:
        shards = [out_dir / name for name in manifest.get("shards", [])]
        if shards and all(shard.is_file() for shard in shards):
            return shards, overwrite
        log.warning("procedural shards listed in %s are missing; regenerating", out_dir)
        return None, True
    if not overwrite:
        raise FileExistsError(
            f"output folder {str(out_dir)!r} holds procedural shards made with other "
            f"parameters ({'; '.join(differences)}); pass overwrite=True to replace them, "
            f"or choose another folder"
        )
    return None, True


def _encode_png(image: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def write_procedural_shards(
    out_dir: Path,
    *,
    n_images: int,
    image_types: Sequence[str] | Mapping[str, float] = IMAGE_TYPES,
    size: int = 64,
    seed: int = 0,
    max_count: int = 1000,
    pattern: str = DEFAULT_PATTERN,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write procedural images (see ``brainalign.synthetic.images``) as PNG webdataset shards.

    Writes the shards, ``manifest.json`` (the generation parameters, shard names and counts) and
    ``latents.csv`` (one row per image: its latents and shard). When ``out_dir`` already holds a
    manifest with the same parameters and all its shards, nothing is written and the existing
    shards are returned.

    Parameters
    ----------
    out_dir : Path
        Folder for the shards; created if needed.
    n_images : int
        Number of images.
    image_types : sequence of str or mapping of str to float
        Image types, or their mixture weights.
    size : int
        Side of the images in pixels.
    seed : int
        Generation seed.
    max_count : int
        Samples per shard.
    pattern : str
        Shard file name with one integer field.
    overwrite : bool
        Replace shards made with other parameters (otherwise they are an error).
    progress : bool
        Show a tqdm progress bar while generating.

    Returns
    -------
    shards : list of Path
        The shard files, in order.
    """
    out_dir = Path(out_dir)
    _check_max_count(max_count)
    _check_pattern(pattern)
    weights = normalize_image_type_weights(image_types)
    stream = iter_images(n_images, image_types=weights, size=size, seed=seed)  # checks arguments
    parameters = {
        "kind": "procedural",
        "format_version": FORMAT_VERSION,
        "generator_version": GENERATOR_VERSION,
        "n_images": int(n_images),
        "image_types": weights,
        "size": int(size),
        "seed": int(seed),
        "max_count": max_count,
        "pattern": pattern,
    }

    rows: list[dict[str, Any]] = []

    def samples() -> Iterable[Sample]:
        for index, (stimulus_id, image, latents) in enumerate(
            tqdm(
                stream,
                total=n_images,
                desc="procedural shards",
                unit="img",
                disable=_progress_off(progress),
            )
        ):
            rows.append(
                {"stimulus_id": stimulus_id, **latents, "shard": pattern % (index // max_count)}
            )
            record = {"stimulus_id": stimulus_id, **latents}
            yield {"__key__": stimulus_id, "png": _encode_png(image), "json": record}

    shard_names: list[str] = []

    def write(folder: Path) -> None:
        names, counts = _write_tar_shards(samples(), folder, pattern=pattern, max_count=max_count)
        shard_names.extend(names)
        pd.DataFrame(rows).to_csv(folder / LATENTS_NAME, index=False)
        _write_manifest(folder, {**parameters, "shards": names, "counts": counts})

    with _one_writer(out_dir):
        reusable, overwrite = _procedural_on_disk(out_dir, parameters, overwrite=overwrite)
        if reusable is not None:
            log.info("reusing %d procedural shards in %s", len(reusable), out_dir)
            return reusable
        _publish(out_dir, overwrite=overwrite, write=write)
    log.info("wrote %d procedural images into %d shards in %s", n_images, len(shard_names), out_dir)
    return [out_dir / name for name in shard_names]
