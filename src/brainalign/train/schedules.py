"""Step-based schedules: warmup then cosine, constant or linear, as a function of the step.

A schedule is a pure function of the global step (and of the run's total steps), so resuming at
step ``k`` restores every scheduled value exactly, with no state to save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass
class Schedule:
    """A scheduled scalar.

    Parameters
    ----------
    start : float
        Value after warmup (cosine/linear start from here).
    end : float
        Final value at the last step (ignored by ``constant``).
    kind : {"cosine", "linear", "constant"}
        Shape after warmup.
    warmup_fraction : float
        Fraction of training spent rising linearly from ``warmup_start`` to ``start``.
    warmup_start : float
        Value at step 0 when there is a warmup.
    """

    start: float
    end: float | None = None
    kind: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_fraction: float = 0.0
    warmup_start: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.kind not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule kind must be cosine, linear or constant, got {self.kind!r}")

    def __call__(self, step: int, total_steps: int) -> float:
        """Value at ``step`` of a run of ``total_steps`` steps."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        warmup_steps = round(self.warmup_fraction * total_steps)
        if step < warmup_steps:
            return self.warmup_start + (self.start - self.warmup_start) * step / warmup_steps
        end = self.start if self.end is None else self.end
        if self.kind == "constant":
            return self.start
        span = max(total_steps - warmup_steps, 1)
        progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
        if self.kind == "linear":
            return self.start + (end - self.start) * progress
        return end + 0.5 * (self.start - end) * (1.0 + math.cos(math.pi * progress))
