"""Callbacks used by the end-to-end fit tests (loaded by class path from a subprocess)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from brainalign.callbacks import BrainProbeCallback
from brainalign.train.losses import sinkhorn_knopp


class KillAtStep(Callback):
    """Kill the process hard (no cleanup, like a SIGKILL) once ``global_step`` reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.global_step >= self.step:
            os._exit(17)


class RecordSinkhornReduction(Callback):
    """On the first batch, run Sinkhorn-Knopp on rank-specific logits inside the real DDP group.

    Rank r holds 3 + 2r samples; the gathered result of the reduced call must be balanced over
    prototypes across all processes, which a per-rank (unreduced) call is not.
    """

    def __init__(self, out: str) -> None:
        self.out = out

    @staticmethod
    def logits(rank: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(100 + rank)
        logits = torch.randn(3 + 2 * rank, 6, generator=generator) * 0.1
        logits[:, 0] += 0.5  # make prototype 0 popular on every rank
        return logits

    def on_train_batch_end(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.global_step != 1:
            return
        rank, world = trainer.global_rank, trainer.world_size
        logits = self.logits(rank)
        reduced = sinkhorn_knopp(logits, 0.1)
        local = sinkhorn_knopp(logits, 0.1, reduce=False)
        sizes = [None] * world
        dist.all_gather_object(sizes, (reduced.tolist(), local.tolist()))
        if rank == 0:
            reduced_all = torch.tensor([row for part in sizes for row in part[0]])
            local_all = torch.tensor([row for part in sizes for row in part[1]])
            everything = torch.cat([self.logits(r) for r in range(world)])
            single = sinkhorn_knopp(everything, 0.1, reduce=False)
            Path(self.out).write_text(
                json.dumps(
                    {
                        "world_size": world,
                        "distributed": dist.is_initialized(),
                        "reduced_column_sums": reduced_all.sum(0).tolist(),
                        "local_column_sums": local_all.sum(0).tolist(),
                        "n_samples": reduced_all.shape[0],
                        "max_diff_to_single_process": float((reduced_all - single).abs().max()),
                        "max_diff_local_to_single": float((local_all - single).abs().max()),
                    }
                )
            )


class FailingBrainProbe(BrainProbeCallback):
    """A BrainProbeCallback whose features are NaN at the given steps (a failing probe)."""

    def __init__(self, *, fail_at_steps: list[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_at_steps = list(fail_at_steps)
        self._trainer_step = 0

    def on_train_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        self._trainer_step = trainer.global_step
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def _extract(self, model, stimuli, layers, objective, device):
        features = super()._extract(model, stimuli, layers, objective, device)
        if self._trainer_step in self.fail_at_steps:
            return {
                kind: {layer: np.full_like(array, np.nan) for layer, array in arrays.items()}
                for kind, arrays in features.items()
            }
        return features
