"""Save ``last.ckpt`` when a run is told to stop (SIGTERM, SIGUSR1), so that it resumes there.

A cluster stops a job with SIGTERM (SLURM also sends SIGUSR1 ahead of the time limit with
``--signal=SIGUSR1@120``). Lightning's own handling is used: its SIGTERM handler marks the
trainer, the training loop finishes the current step and raises ``SIGTERMException``, and the
callbacks' ``on_exception`` hooks run. :class:`CheckpointOnSignal` saves ``last.ckpt`` there,
next to the periodic checkpoints of every ``ModelCheckpoint``, so ``--ckpt_path last`` picks it
up. SIGUSR1 is routed to the same path, unless a handler is already set for it (SLURM's
auto-requeue handler of ``SLURMEnvironment(auto_requeue=True)``, which requeues the job; SLURM
then sends SIGTERM and the checkpoint is saved as above).

The checkpoint is written at a step boundary, after the step's callbacks ran, so the resumed run
continues with the next step exactly as an uninterrupted run would.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["CheckpointOnSignal"]


class CheckpointOnSignal(Callback):
    """On SIGTERM or SIGUSR1: finish the step, save ``last.ckpt``, stop.

    Attributes
    ----------
    received : int or None
        The first stop signal received.
    saved : list of str
        The checkpoint files written when the run stopped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: int | None = None
        self.saved: list[str] = []
        self._start_step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers its handlers in Trainer._run, before this hook.
        self._start_step = trainer.global_step
        if threading.current_thread() is not threading.main_thread():
            return
        lightning_handler = signal.getsignal(signal.SIGTERM)
        if not callable(lightning_handler):
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.received = self.received or signum
            lightning_handler(signal.SIGTERM, frame)

        signal.signal(signal.SIGTERM, on_signal)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, on_signal)
        # Lightning's teardown puts back the handlers that were set before the run.

    @staticmethod
    def _checkpointers(trainer: L.Trainer) -> list[ModelCheckpoint]:
        return [
            callback
            for callback in trainer.checkpoint_callbacks
            if isinstance(callback, ModelCheckpoint) and callback.dirpath
        ]

    @staticmethod
    def _last_path(callback: ModelCheckpoint) -> str:
        return os.path.join(
            callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION
        )

    def last_paths(self, trainer: L.Trainer) -> list[str]:
        """Where ``last.ckpt`` goes: the folder of every ``ModelCheckpoint`` (or the run's)."""
        paths = {self._last_path(callback) for callback in self._checkpointers(trainer)}
        if not paths:
            run_dir = trainer.log_dir or trainer.default_root_dir
            paths.add(os.path.join(run_dir, "checkpoints", "last.ckpt"))
        return sorted(paths)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or self._start_step is None:
            return
        self.received = self.received or signal.SIGTERM
        if trainer.global_step == self._start_step:
            return  # no step since the start (or the resume): nothing new to save
        for callback in self._checkpointers(trainer):
            # part of the saved state: the resumed run then updates this file rather than
            # writing last-v1.ckpt beside it
            callback.last_model_path = self._last_path(callback)
        for path in self.last_paths(trainer):
            trainer.save_checkpoint(path)
            self.saved.append(path)
