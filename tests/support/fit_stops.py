"""Callbacks that stop or break a `brainalign fit` run on purpose (loaded by class path)."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class WaitForSignalAtStep(Callback):
    """At global step ``step``: write the file ``ready``, then wait for a stop signal.

    The test sends SIGTERM or SIGUSR1 from outside once ``ready`` exists; the run then stops at
    exactly this step (Lightning finishes the step before it stops). Gives up after ``timeout``
    seconds so that a broken test does not hang.
    """

    def __init__(self, step: int, ready: str, timeout: float = 120.0) -> None:
        self.step = step
        self.ready = ready
        self.timeout = timeout

    def on_train_batch_end(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.global_step != self.step:
            return
        Path(self.ready).write_text(str(self.step))
        deadline = time.monotonic() + self.timeout
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)


class FailAtTrainStart(Callback):
    """Raise a ValueError when training starts (after the run folder was written)."""

    def on_train_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        raise ValueError("planted failure at the start of training")
