"""Checkpoints at log-spaced steps (dense early), each with a small teacher-backbone export.

The chronology of alignment needs early points: a run of 100k steps gets checkpoints at steps
0, 1, 2, 4, ..., 100k rather than every 10k. Each scheduled step writes

- ``<run>/checkpoints/step_0000100.ckpt``: the full Lightning checkpoint (optional), and
- ``<run>/exports/step_0000100/``: ``model.safetensors`` + ``meta.json`` of the EMA teacher's
  backbone, which ``brainalign probe`` and ``brainalign chronology`` read offline.

Resume (``--ckpt_path last``) uses Lightning's own ``ModelCheckpoint(save_last=True)``; this
callback only adds the schedule, and its ``state_dict`` records which steps are done so that a
resumed run neither repeats nor skips one. Its ``state_key`` holds its settings, so several
instances with different schedules can run (and resume) together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from brainalign.models.export import save_teacher_export


def log_spaced_steps(max_steps: int, n_points: int, *, include_zero: bool = True) -> list[int]:
    """Integer steps from 1 to ``max_steps``, evenly spaced in log scale, deduplicated.

    Parameters
    ----------
    max_steps : int
        Last step (always included).
    n_points : int
        Number of log-spaced points requested (fewer come back when they collide early).
    include_zero : bool
        Prepend step 0, the untrained network.

    Returns
    -------
    list of int
        Sorted, unique steps.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if n_points < 1:
        raise ValueError(f"n_points must be >= 1, got {n_points}")
    steps = {round(s) for s in np.geomspace(1, max_steps, n_points)}
    steps.add(max_steps)
    if include_zero:
        steps.add(0)
    return sorted(steps)


class LogSpacedCheckpoint(Callback):
    """Save checkpoints and teacher exports at log-spaced global steps.

    Parameters
    ----------
    n_checkpoints : int
        Number of log-spaced points between step 1 and ``trainer.max_steps``.
    include_step_zero : bool
        Also export the untrained network (the first point of every chronology).
    save_full_checkpoint : bool
        Write a full Lightning checkpoint next to each export (large for big models).
    """

    def __init__(
        self,
        *,
        n_checkpoints: int = 20,
        include_step_zero: bool = True,
        save_full_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if n_checkpoints < 1:
            raise ValueError(f"n_checkpoints must be >= 1, got {n_checkpoints}")
        self.n_checkpoints = n_checkpoints
        self.include_step_zero = include_step_zero
        self.save_full_checkpoint = save_full_checkpoint
        self.done_steps: list[int] = []

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint, built from its settings.

        Two instances with different settings (say a dense export schedule and a sparse one
        with full checkpoints) keep their own done steps through a save and a resume.
        """
        return self._generate_state_key(
            n_checkpoints=self.n_checkpoints,
            include_step_zero=self.include_step_zero,
            save_full_checkpoint=self.save_full_checkpoint,
        )

    def schedule(self, trainer: L.Trainer) -> list[int]:
        return log_spaced_steps(
            trainer.max_steps, self.n_checkpoints, include_zero=self.include_step_zero
        )

    @staticmethod
    def run_dir(trainer: L.Trainer) -> Path:
        return Path(trainer.log_dir or trainer.default_root_dir)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_due(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self._save_if_due(trainer, pl_module)

    def _save_if_due(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        if step not in self.schedule(trainer) or step in self.done_steps:
            return
        self.done_steps.append(step)
        run_dir = self.run_dir(trainer)
        if self.save_full_checkpoint:
            trainer.save_checkpoint(run_dir / "checkpoints" / f"step_{step:07d}.ckpt")
        if trainer.is_global_zero:
            metadata = {
                "step": step,
                "max_steps": trainer.max_steps,
                "train_fraction": step / trainer.max_steps,
                "run": str(run_dir),
                "network": "teacher",
            }
            metadata.update(getattr(pl_module, "export_metadata", lambda: {})())
            save_teacher_export(
                pl_module.teacher_backbone, run_dir / "exports" / f"step_{step:07d}", metadata
            )

    def state_dict(self) -> dict[str, Any]:
        return {"done_steps": list(self.done_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done_steps = list(state_dict.get("done_steps", []))

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Read checkpoints written before the state key held the settings (one instance)."""
        states = checkpoint.get("callbacks") or {}
        if self.state_key not in states and type(self).__qualname__ in states:
            self.load_state_dict(states[type(self).__qualname__])
