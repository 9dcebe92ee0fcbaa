"""Self-supervised training data: webdataset shards and image folders, mixed by weight.

YAML for ``brainalign fit`` (LightningCLI)::

    data:
      class_path: brainalign.train.data.SSLDataModule
      init_args:
        batch_size: 64
        sources:
          - {path: data/shards/objects, weight: 0.9}
          - {path: data/my_images, kind: folder, weight: 0.1}

Each batch is ``{"global_crops": (2, B, 3, G, G), "local_crops": (L, B, 3, g, g) or None,
"n_skipped": int}``; ``n_skipped`` counts the corrupt samples skipped while building that batch
(each skip is counted in exactly one batch, so summing it over batches gives the running total).

The stream, and what a resume restores
--------------------------------------
The stream is infinite and cut into global positions 0, 1, 2, ...  Global step t uses positions
``[t * B * W, (t + 1) * B * W)`` (B = batch_size per process, W = world size); rank r takes the B
consecutive positions starting at ``(t * W + r) * B``. Dataloader worker w of n builds the batches
of steps ``start + w, start + w + n, ...`` and the DataLoader hands them out in step order, so a
batch never depends on the number of workers. Which source feeds position p (a seeded weighted
interleave with exact proportions per block of positions) and the random crops of position p
(augmentation seeded from ``(seed, p)``) are functions of ``(seed, p)`` only.

- Folder sources (``kind="folder"``) are EXACT: the image at a position is also a function of
  ``(seed, p)`` (one seeded permutation of the files per pass). Batches are identical for any
  ``num_workers``; a run resumed at global step k sees exactly batches k, k+1, ... of an
  uninterrupted run, also under another world size if the global batch B * W is unchanged.
- Shard sources (``kind="shards"``) are NOT restored exactly: each (rank, worker) reads its own
  shards in a seeded shuffled order (an infinite resampled stream) through a shuffle buffer, and
  neither the position inside the shards nor the shuffle buffer is saved. A resumed run keeps the
  source proportions and draws fresh samples (seeded from the resume step).

The start step is read from the attached trainer when the dataloader is iterated:
``trainer.global_step * trainer.accumulate_grad_batches`` (Lightning restores ``global_step``
before it builds the dataloaders on resume). This counts batches exactly when every optimizer
step consumed ``accumulate_grad_batches`` batches (one optimizer, automatic optimisation).
"""

from __future__ import annotations

import io
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import webdataset as wds
from braceexpand import braceexpand
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from brainalign.train.augment import MultiCropAugmentation
from brainalign.utils.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

SHARDS_HINT = "make shards with `brainalign shards IMAGE_DIR OUT_DIR`"
MAX_CONSECUTIVE_FAILURES = 1000
MIX_BLOCK_SIZE = 10_000

# Tags that keep the seeded random streams of different purposes apart.
_AUGMENT_TAG, _MIX_TAG, _FOLDER_TAG, _SHARDS_TAG = range(4)


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


class _SkipCounter:
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


# --------------------------------------------------------------------------- mixing sources


class SourceMixer:
    """Deterministic weighted interleave of sources over stream positions.

    Positions are cut into blocks of ``block_size``; each block holds a fixed number of slots per
    source (weights rounded by largest remainder) in a seeded random order. Position p therefore
    maps to (source, position within that source) as a function of (seed, p) only.

    Parameters
    ----------
    weights : sequence of float
        Relative weight of each source (> 0).
    seed : int
        Seed of the slot order.
    block_size : int
        Positions per block; the smallest share a source may have is 1 / block_size.
    """

    def __init__(self, weights: Sequence[float], seed: int, block_size: int = MIX_BLOCK_SIZE):
        shares = np.asarray(weights, dtype=np.float64) / np.sum(weights) * block_size
        counts = np.floor(shares).astype(np.int64)
        remainder_order = np.argsort(-(shares - counts), kind="stable")
        counts[remainder_order[: block_size - counts.sum()]] += 1
        if np.any(counts == 0):
            raise ValueError(
                f"source weights {list(weights)} give some source less than 1/{block_size} of "
                "the samples; raise its weight"
            )
        self.counts = counts
        self.seed = seed
        self.block_size = block_size
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        if block not in self._cache:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            rng = np.random.default_rng(derive_seed(self.seed, _MIX_TAG, block))
            source_of_slot = rng.permutation(np.repeat(np.arange(len(self.counts)), self.counts))
            rank_in_source = np.empty(self.block_size, dtype=np.int64)
            by_source = np.argsort(source_of_slot, kind="stable")
            rank_in_source[by_source] = np.concatenate([np.arange(c) for c in self.counts])
            self._cache[block] = (source_of_slot, rank_in_source)
        return self._cache[block]

    def locate(self, position: int) -> tuple[int, int]:
        """Return (source index, position within that source's own stream)."""
        if len(self.counts) == 1:
            return 0, position
        block, offset = divmod(position, self.block_size)
        source_of_slot, rank_in_source = self._block(block)
        source = int(source_of_slot[offset])
        return source, block * int(self.counts[source]) + int(rank_in_source[offset])


# --------------------------------------------------------------------------- reading sources


class FolderImages:
    """Images of a folder as an endless sequence: pass e is a seeded permutation of the files.

    Parameters
    ----------
    files : list of str
        Image paths (sorted).
    label : str
        Source name for messages.
    seed : int
        Seed of the permutations (combined with ``source_index``).
    source_index : int
        Index of the source, so two folders with the same files are not read in step.
    """

    def __init__(self, files: list[str], label: str, seed: int, source_index: int) -> None:
        self.files = files
        self.label = label
        self.seed = seed
        self.source_index = source_index
        self.skips = _SkipCounter(label)
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                self._permutations.pop(next(iter(self._permutations)))
            seed = derive_seed(self.seed, _FOLDER_TAG, self.source_index, epoch)
            self._permutations[epoch] = np.random.default_rng(seed).permutation(len(self.files))
        return self._permutations[epoch]

    def image_at(self, position: int) -> Image.Image:
        """The image at a position of this folder's stream.

        An unreadable file is skipped (and counted in ``self.skips``) in favour of the next file
        of the same pass, so the result is still a function of the position.
        """
        epoch, index = divmod(position, len(self.files))
        permutation = self._permutation(epoch)
        for attempt in range(len(self.files)):
            path = self.files[permutation[(index + attempt) % len(self.files)]]
            try:
                with open(path, "rb") as file:
                    return decode_image(file.read())
            except Exception as error:  # any undecodable file is skipped, never fatal
                self.skips.skip(f"cannot read image {path!r}: {error}")
        raise DataSourceError(
            f"data source {self.label!r}: none of its {len(self.files)} image files can be read"
        )


def select_image(sample: dict[str, Any]) -> bytes | None:
    """The encoded image of a webdataset sample (first image key in sorted order) or None."""
    for key in sorted(sample):
        if not key.startswith("__") and key.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS:
            return sample[key]
    return None


def shards_for_stream(
    shards: list[str], *, rank: int, world_size: int, worker: int, n_workers: int
) -> list[str]:
    """The shards that one (rank, worker) reads.

    Each (rank, worker) gets a distinct subset when there are at least ``world_size *
    n_workers`` shards; with fewer, each rank gets its own subset shared by its workers; with
    fewer shards than ranks, everyone reads all shards (in different seeded orders).
    """
    n_streams = world_size * n_workers
    if len(shards) >= n_streams:
        return shards[rank * n_workers + worker :: n_streams]
    if len(shards) >= world_size:
        return shards[rank::world_size]
    return list(shards)


class ShardStream:
    """Endless stream of decoded images from a list of shards, for one (rank, worker).

    Shards are read in a new seeded random order on every pass, samples go through a shuffle
    buffer of encoded bytes, and are decoded when drawn. Corrupt samples (undecodable bytes, no
    image key, unreadable tar members) are skipped and counted in ``self.skips``.

    Parameters
    ----------
    shards : list of str
        Shard paths this stream reads.
    label : str
        Source name for messages.
    seed : int
        Seed of the shard order and of the shuffle buffer.
    shuffle_buffer : int
        Samples held in the shuffle buffer (0: no shuffling within shards).
    """

    def __init__(self, shards: list[str], label: str, seed: int, shuffle_buffer: int) -> None:
        self.shards = shards
        self.label = label
        self.skips = _SkipCounter(label)
        self._rng = random.Random(seed)
        self._samples_in_pass = 0
        samples = self._count(wds.tarfile_to_samples(handler=self._on_read_error)(self._urls()))
        if shuffle_buffer > 0:
            initial = min(100, shuffle_buffer)
            samples = wds.shuffle(shuffle_buffer, initial, rng=self._rng)(samples)
        self._samples = iter(samples)

    def _on_read_error(self, error: Exception) -> bool:
        self.skips.skip(f"error reading shard data: {error!r}")
        return True  # continue with the next sample or shard

    def _urls(self) -> Iterator[dict[str, str]]:
        first_pass = True
        while True:
            if not first_pass and self._samples_in_pass == 0:
                raise DataSourceError(
                    f"data source {self.label!r}: a whole pass over its shards "
                    f"{self.shards[:3]}{'...' if len(self.shards) > 3 else ''} gave no samples; "
                    f"check the shard files ({SHARDS_HINT})"
                )
            first_pass, self._samples_in_pass = False, 0
            order = list(self.shards)
            self._rng.shuffle(order)
            for shard in order:
                yield {"url": shard}

    def _count(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for sample in samples:
            self._samples_in_pass += 1
            yield sample

    def next_image(self) -> Image.Image:
        """The next decodable image of the stream."""
        for _ in range(MAX_CONSECUTIVE_FAILURES):
            sample = next(self._samples)
            where = f"sample {sample.get('__key__')!r} of {sample.get('__url__')!r}"
            encoded = select_image(sample)
            if encoded is None:
                keys = sorted(k for k in sample if not k.startswith("__"))
                self.skips.skip(f"{where} has no image (keys: {keys})")
                continue
            try:
                return decode_image(encoded)
            except Exception as error:  # any undecodable sample is skipped, never fatal
                self.skips.skip(f"{where} cannot be decoded: {error}")
        raise DataSourceError(
            f"data source {self.label!r}: {MAX_CONSECUTIVE_FAILURES} consecutive samples could "
            f"not be decoded; check the shards ({SHARDS_HINT})"
        )


@dataclass
class ResolvedSource:
    """A source with its files listed: image files (folder) or shard files (shards)."""

    source: DataSource
    files: list[str]


# --------------------------------------------------------------------------- the batch stream


def collate_views(views: list[dict[str, list[torch.Tensor]]], n_skipped: int) -> dict[str, Any]:
    """Stack the crops of B images into a batch.

    Parameters
    ----------
    views : list of dict
        One :class:`MultiCropAugmentation` output per image.
    n_skipped : int
        Corrupt samples skipped while building the batch.

    Returns
    -------
    batch : dict
        ``global_crops`` Tensor of shape (2, B, 3, G, G); ``local_crops`` Tensor of shape
        (L, B, 3, g, g) or None when L = 0; ``n_skipped`` int.
    """
    n_global = len(views[0]["global_crops"])
    n_local = len(views[0]["local_crops"])
    global_crops = torch.stack(
        [torch.stack([v["global_crops"][i] for v in views]) for i in range(n_global)]
    )  # (2, B, 3, G, G)
    local_crops = None
    if n_local > 0:
        local_crops = torch.stack(
            [torch.stack([v["local_crops"][i] for v in views]) for i in range(n_local)]
        )  # (L, B, 3, g, g)
    return {"global_crops": global_crops, "local_crops": local_crops, "n_skipped": n_skipped}


class SSLBatchStream(IterableDataset):
    """Endless stream of multi-crop batches of one rank, starting at a given global step.

    Use with ``DataLoader(stream, batch_size=None)``: the stream yields whole batches. See the
    module docstring for how positions are laid out and what is exact.

    Parameters
    ----------
    sources : list of ResolvedSource
        The sources with their files.
    augmentation : MultiCropAugmentation
        Makes the crops of one image.
    batch_size : int
        Images per batch of this rank (B).
    seed : int
        Seed of everything random in the stream.
    rank, world_size : int
        This process and the number of processes.
    start_step : int
        Global step (batch index of every rank) the stream starts at.
    shuffle_buffer : int
        Shuffle-buffer size of shard sources.
    """

    def __init__(
        self,
        *,
        sources: list[ResolvedSource],
        augmentation: MultiCropAugmentation,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        shuffle_buffer: int = 1000,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.sources = sources
        self.augmentation = augmentation
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step
        self.shuffle_buffer = shuffle_buffer
        self.mixer = SourceMixer([s.source.weight for s in sources], seed)
        self.folders = {
            index: FolderImages(s.files, s.source.label, seed, index)
            for index, s in enumerate(sources)
            if s.source.kind == "folder"
        }

    def positions(self, step: int) -> range:
        """Global stream positions of this rank's batch at a global step."""
        first = (step * self.world_size + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def _open_shard_streams(self, worker: int, n_workers: int) -> dict[int, ShardStream]:
        streams = {}
        for index, resolved in enumerate(self.sources):
            if resolved.source.kind == "folder":
                continue
            shards = shards_for_stream(
                resolved.files,
                rank=self.rank,
                world_size=self.world_size,
                worker=worker,
                n_workers=n_workers,
            )
            stream_id = self.rank * n_workers + worker
            seed = derive_seed(self.seed, _SHARDS_TAG, index, stream_id, self.start_step)
            streams[index] = ShardStream(shards, resolved.source.label, seed, self.shuffle_buffer)
        return streams

    def _augment(self, image: Image.Image, position: int) -> dict[str, list[torch.Tensor]]:
        """Crops of one image, seeded from (seed, position) without touching global RNG state."""
        seed = derive_seed(self.seed, _AUGMENT_TAG, position)
        python_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                # the CPU generator only: torch.manual_seed would also reseed CUDA generators
                torch.default_generator.manual_seed(seed)
                random.seed(seed)
                return self.augmentation(image)
        finally:
            random.setstate(python_state)

    def _skipped_total(self, shard_streams: dict[int, ShardStream]) -> int:
        readers = [*self.folders.values(), *shard_streams.values()]
        return sum(reader.skips.count for reader in readers)

    def make_batch(self, step: int, shard_streams: dict[int, ShardStream]) -> dict[str, Any]:
        """Build this rank's batch of a global step (see :func:`collate_views`)."""
        skipped_before = self._skipped_total(shard_streams)
        views = []
        for position in self.positions(step):
            source, source_position = self.mixer.locate(position)
            if source in self.folders:
                image = self.folders[source].image_at(source_position)
            else:
                image = shard_streams[source].next_image()
            views.append(self._augment(image, position))
        return collate_views(views, self._skipped_total(shard_streams) - skipped_before)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        shard_streams = self._open_shard_streams(worker, n_workers)
        step = self.start_step + worker
        while True:
            yield self.make_batch(step, shard_streams)
            step += n_workers


class _StepAwareDataLoader(DataLoader):
    """DataLoader that re-reads the start step each time it is iterated (each epoch)."""

    start_step_fn: Callable[[], int] | None = None

    def __iter__(self):  # type: ignore[override]
        if self.start_step_fn is not None:
            self.dataset.start_step = self.start_step_fn()
        return super().__iter__()


class _FirstBatches(IterableDataset):
    """The first ``n`` batches of a stream (validation)."""

    def __init__(self, stream: IterableDataset, n: int) -> None:
        self.stream = stream
        self.n = n

    def __iter__(self) -> Iterator[Any]:
        for index, batch in enumerate(self.stream):
            if index >= self.n:
                return
            yield batch

    def __len__(self) -> int:
        return self.n


# --------------------------------------------------------------------------- the datamodule


class SSLDataModule(L.LightningDataModule):
    """Multi-crop batches from webdataset shards and image folders, mixed by weight.

    Parameters
    ----------
    sources : list of DataSource
        Where the images come from, with their relative weights.
    batch_size : int
        Images per batch and per process (B).
    num_workers : int
        Dataloader worker processes per process (0: load in the main process).
    global_size, local_size : int
        Side of the global (G) and local (g) crops in pixels.
    n_local_crops : int
        Local crops per image (L, 0 allowed).
    global_scale, local_scale : tuple of float
        (min, max) area fraction of global / local crops.
    shuffle_buffer : int
        Shuffle-buffer size (samples) of each shard stream; 0 disables it.
    seed : int
        Seed of the data stream (source mixing, folder order, crops, shard order).
    val_batches : int
        Batches of the validation stream (``brainalign validate``, and validation during fit
        with ``trainer.val_check_interval``); 0 disables validation.
    """

    def __init__(
        self,
        *,
        sources: list[DataSource],
        batch_size: int = 64,
        num_workers: int = 4,
        global_size: int = 224,
        local_size: int = 96,
        n_local_crops: int = 8,
        global_scale: tuple[float, float] = (0.32, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.32),
        shuffle_buffer: int = 1000,
        seed: int = 0,
        val_batches: int = 0,
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("sources is empty: give at least one DataSource (path, kind, weight)")
        for name, value, minimum in (
            ("val_batches", val_batches, 0),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("shuffle_buffer", shuffle_buffer, 0),
            ("seed", seed, 0),
        ):
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        for source in sources:
            check_source(source)
        SourceMixer([source.weight for source in sources], seed)  # checks the weights mix
        self.sources = list(sources)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.val_batches = val_batches
        self.augmentation = MultiCropAugmentation(
            global_size=global_size,
            local_size=local_size,
            n_local_crops=n_local_crops,
            global_scale=global_scale,
            local_scale=local_scale,
        )
        self._resolved: list[ResolvedSource] | None = None
        self._listed: dict[int, list[str]] = {}

    @property
    def n_local_crops(self) -> int:
        """Local crops per image (L)."""
        return self.augmentation.n_local_crops

    def prepare_data(self) -> None:
        """Write the shards of procedural sources once (rank 0); later runs reuse them."""
        for source in self.sources:
            if source.kind != "procedural":
                continue
            from brainalign.train.shards import write_procedural_shards

            spec = source.procedural or ProceduralSpec()
            write_procedural_shards(
                Path(os.path.expanduser(source.path)),
                n_images=spec.n_images,
                image_types=dict(spec.image_types),
                size=spec.image_size,
                seed=spec.seed,
            )

    def describe_sources(self) -> list[dict[str, object]]:
        """The data mixture as plain values (recorded in exports and TensorBoard hparams)."""
        described = []
        for source in self.sources:
            entry: dict[str, object] = {
                "name": source.label,
                "kind": source.kind,
                "weight": source.weight,
                "path": source.path,
            }
            if source.kind == "procedural":
                entry["image_types"] = dict((source.procedural or ProceduralSpec()).image_types)
            described.append(entry)
        return described

    def check_inputs(self) -> None:
        """List every folder and shards source and decode a few of its images.

        Raises ``ValueError`` (or ``FileNotFoundError``) naming the source when a folder's
        images do not decode, a shard is not a tar archive or holds no image, or a procedural
        source's parameters are invalid (see :mod:`brainalign.train.source_checks`).
        ``brainalign fit`` calls this before the run folder is created; :meth:`setup` reuses
        the lists. Without it, the same problems surface (as skipped samples, then an error)
        when the first batches are read.
        """
        from brainalign.train import source_checks  # it imports this module

        for index, source in enumerate(self.sources):
            if source.kind == "procedural":
                source_checks.check_procedural_spec(source)
            elif source.kind == "folder":
                self._listed[index] = list_images(source)
                source_checks.check_images_decode(source, self._listed[index])
            else:
                self._listed[index] = list_shards(source)
                source_checks.check_shards_hold_images(source, self._listed[index])

    def setup(self, stage: str | None = None) -> None:
        """List the shards and images of every source (raises if one has none)."""
        if self._resolved is None:
            self._resolved = [
                ResolvedSource(source, self._listed.get(index) or self._list(source))
                for index, source in enumerate(self.sources)
            ]

    @staticmethod
    def _list(source: DataSource) -> list[str]:
        return list_images(source) if source.kind == "folder" else list_shards(source)

    def _placement(self) -> tuple[int, int, int]:
        """(start step in batches, rank, world size) from the attached trainer, if any."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 1
        batches_per_step = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        return trainer.global_step * batches_per_step, trainer.global_rank, trainer.world_size

    def make_stream(
        self, *, start_step: int = 0, rank: int = 0, world_size: int = 1
    ) -> SSLBatchStream:
        """The batch stream of one rank starting at a global step (lists sources if needed)."""
        self.setup()
        assert self._resolved is not None
        return SSLBatchStream(
            sources=self._resolved,
            augmentation=self.augmentation,
            batch_size=self.batch_size,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            start_step=start_step,
            shuffle_buffer=self.shuffle_buffer,
        )

    def _warn_if_few_shards(self, world_size: int) -> None:
        n_streams = world_size * max(1, self.num_workers)
        for resolved in self._resolved or []:
            n_shards = len(resolved.files)
            if resolved.source.kind == "folder" or n_shards >= n_streams:
                continue
            fallback = (
                "each process reads its own shards, shared by its workers"
                if n_shards >= world_size
                else "every process reads all shards, so processes see the same samples"
            )
            rank_zero_warn(
                f"data source {resolved.source.label!r} has {n_shards} shards for {world_size} "
                f"process(es) x {max(1, self.num_workers)} worker(s): {fallback}. Write at "
                f"least {n_streams} shards for distinct shards per worker."
            )

    def train_dataloader(self) -> DataLoader:
        """Endless loader of batches; starts at the trainer's global step (see module doc)."""
        start_step, rank, world_size = self._placement()
        stream = self.make_stream(start_step=start_step, rank=rank, world_size=world_size)
        self._warn_if_few_shards(world_size)
        loader = _StepAwareDataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        if self.trainer is not None:
            loader.start_step_fn = lambda: self._placement()[0]
        return loader

    def val_dataloader(self) -> DataLoader | list:
        """``val_batches`` fixed batches (another seed, from position 0) for ``validate``.

        The validation loss of a self-supervised run is the same DINO + iBOT + KoLeo objective
        on held-back crops; with ``val_batches: 0`` (the default) there is no validation loop.
        """
        if self.val_batches == 0:
            return []
        _, rank, world_size = self._placement()
        self.setup()
        assert self._resolved is not None
        stream = SSLBatchStream(
            sources=self._resolved,
            augmentation=self.augmentation,
            batch_size=self.batch_size,
            seed=self.seed + 1_000_003,
            rank=rank,
            world_size=world_size,
            start_step=0,
            shuffle_buffer=self.shuffle_buffer,
        )
        return DataLoader(_FirstBatches(stream, self.val_batches), batch_size=None, num_workers=0)

    def state_dict(self) -> dict[str, Any]:
        """What the stream depends on, to warn when a resumed run changed it."""
        world_size = self._placement()[2]
        return {
            "seed": self.seed,
            "global_batch_size": self.batch_size * world_size,
            "sources": [[s.path, s.kind, float(s.weight)] for s in self.sources],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Warn if the stream settings differ from the checkpoint's (resume would not match)."""
        current = self.state_dict()
        changed = [key for key in current if key in state_dict and state_dict[key] != current[key]]
        if changed:
            details = ", ".join(f"{key}: {state_dict[key]} -> {current[key]}" for key in changed)
            rank_zero_warn(
                f"data settings changed since the checkpoint ({details}); the resumed data "
                "stream will not continue the original one"
            )
