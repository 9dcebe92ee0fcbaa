"""brainalign: train self-supervised ViTs and record when they align with the brain."""

__version__ = "0.1.0"
