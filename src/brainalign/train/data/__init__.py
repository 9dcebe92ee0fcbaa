"""Self-supervised training data: webdataset shards and image folders, mixed by weight.

The package: ``sources`` (what a source is; listing and checking its files), ``streams`` (the
seeded batch stream) and ``datamodule`` (:class:`SSLDataModule`).

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

from brainalign.train.data.datamodule import (
    SSLDataModule,
)
from brainalign.train.data.sources import (
    MAX_CONSECUTIVE_FAILURES,
    MIX_BLOCK_SIZE,
    SHARDS_HINT,
    DataSource,
    DataSourceError,
    ProceduralSpec,
    SkipCounter,
    check_source,
    decode_image,
    derive_seed,
    list_images,
    list_shards,
)
from brainalign.train.data.streams import (
    FirstBatches,
    FolderImages,
    ResolvedSource,
    ShardStream,
    SourceMixer,
    SSLBatchStream,
    StepAwareDataLoader,
    collate_views,
    select_image,
    shards_for_stream,
)

__all__ = [
    "MAX_CONSECUTIVE_FAILURES",
    "MIX_BLOCK_SIZE",
    "SHARDS_HINT",
    "DataSource",
    "DataSourceError",
    "FirstBatches",
    "FolderImages",
    "ProceduralSpec",
    "ResolvedSource",
    "SSLBatchStream",
    "SSLDataModule",
    "ShardStream",
    "SkipCounter",
    "SourceMixer",
    "StepAwareDataLoader",
    "check_source",
    "collate_views",
    "decode_image",
    "derive_seed",
    "list_images",
    "list_shards",
    "select_image",
    "shards_for_stream",
]
