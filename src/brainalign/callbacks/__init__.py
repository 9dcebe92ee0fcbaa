"""Thin Lightning adapters: checkpoint schedules and the brain-probe callback."""

from brainalign.callbacks.checkpoint_schedule import LogSpacedCheckpoint, log_spaced_steps

__all__ = ["LogSpacedCheckpoint", "log_spaced_steps"]
