"""Thin Lightning adapters: checkpoint schedules and the brain-probe callback."""

from brainalign.callbacks.brain_probe import BrainProbeCallback, probe_steps
from brainalign.callbacks.checkpoint_schedule import LogSpacedCheckpoint, log_spaced_steps

__all__ = ["BrainProbeCallback", "LogSpacedCheckpoint", "log_spaced_steps", "probe_steps"]
