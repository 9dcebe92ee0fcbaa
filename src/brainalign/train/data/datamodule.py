"""The Lightning data module of self-supervised training (see :mod:`brainalign.train.data`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from brainalign.train.augment import MultiCropAugmentation
from brainalign.train.data.sources import (
    DataSource,
    ProceduralSpec,
    check_source,
    list_images,
    list_shards,
)
from brainalign.train.data.streams import (
    FirstBatches,
    ResolvedSource,
    SourceMixer,
    SSLBatchStream,
    StepAwareDataLoader,
)

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
        loader = StepAwareDataLoader(
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
        return DataLoader(FirstBatches(stream, self.val_batches), batch_size=None, num_workers=0)

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
