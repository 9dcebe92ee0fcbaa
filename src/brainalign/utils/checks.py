"""Argument checks shared by the study statistics, so every error reads alike."""

from __future__ import annotations

import numpy as np


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """An integer (not a bool) of at least ``minimum``, else a TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def paired_vectors(
    x: object, y: object, names: tuple[str, str] = ("x", "y")
) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 1-D arrays of the same length, else a ValueError naming both."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must be 1-D of the same length, got shapes {x.shape} "
            f"and {y.shape}"
        )
    return x, y
