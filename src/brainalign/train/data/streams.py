"""The batch stream: sources mixed by weight, read from shards or folders, cut into views.

See :mod:`brainalign.train.data` for what a resume restores."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from brainalign.train.augment import MultiCropAugmentation
from brainalign.train.data.sources import (
    AUGMENT_TAG,
    FOLDER_TAG,
    MAX_CONSECUTIVE_FAILURES,
    MIX_BLOCK_SIZE,
    MIX_TAG,
    SHARDS_HINT,
    SHARDS_TAG,
    DataSource,
    DataSourceError,
    SkipCounter,
    decode_image,
    derive_seed,
)
from brainalign.utils.images import IMAGE_EXTENSIONS

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
            rng = np.random.default_rng(derive_seed(self.seed, MIX_TAG, block))
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
        self.skips = SkipCounter(label)
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                self._permutations.pop(next(iter(self._permutations)))
            seed = derive_seed(self.seed, FOLDER_TAG, self.source_index, epoch)
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
        self.skips = SkipCounter(label)
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
            seed = derive_seed(self.seed, SHARDS_TAG, index, stream_id, self.start_step)
            streams[index] = ShardStream(shards, resolved.source.label, seed, self.shuffle_buffer)
        return streams

    def _augment(self, image: Image.Image, position: int) -> dict[str, list[torch.Tensor]]:
        """Crops of one image, seeded from (seed, position) without touching global RNG state."""
        seed = derive_seed(self.seed, AUGMENT_TAG, position)
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


class StepAwareDataLoader(DataLoader):
    """DataLoader that re-reads the start step each time it is iterated (each epoch)."""

    start_step_fn: Callable[[], int] | None = None

    def __iter__(self):  # type: ignore[override]
        if self.start_step_fn is not None:
            self.dataset.start_step = self.start_step_fn()
        return super().__iter__()


class FirstBatches(IterableDataset):
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
