"""Stacks of representations ("sets") that the metrics compare, checked once.

A *set* is one representation of the same stimuli: a layer's features (n_stimuli, n_features),
an ROI's voxels (n_stimuli, n_voxels) or the MEG sensors at one time sample
(n_stimuli, n_channels). With repeats, a set is (n_repeats, n_stimuli, n_targets). The metrics
take many sets at once, as one array (sets of equal width) or a list (widths may differ), and
every set must describe the same stimuli in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

DType = Literal["float32", "float64"]
_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_option(value: Any, allowed: Sequence[str], name: str) -> str:
    """Return ``value`` when it is one of ``allowed``, else raise one clear ValueError."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def as_sets(
    data: np.ndarray | Sequence[np.ndarray],
    *,
    name: str,
    repeats: bool = False,
    min_stimuli: int = 3,
) -> list[np.ndarray]:
    """Validate a stack or list of sets; return them as a list of float arrays.

    Parameters
    ----------
    data : ndarray of shape (n_sets, n_stimuli, n_features), or a sequence of arrays of shape
        (n_stimuli, n_features_i); with ``repeats``: (n_sets, n_repeats, n_stimuli, n_features)
        or a sequence of (n_repeats_i, n_stimuli, n_features_i).
    name : str
        What the data are, for error messages ("features", "brain").
    repeats : bool
        Whether each set holds repeats (at least 2).
    min_stimuli : int
        Fewest stimuli the metric is defined for.

    Returns
    -------
    sets : list of ndarrays, each 2-D (3-D with repeats), with the same n_stimuli.

    Raises
    ------
    ValueError
        Wrong number of dimensions (e.g. data without repeats given to a metric that needs
        them), sets with different numbers of stimuli, too few stimuli or repeats, an empty
        feature axis, or NaN / infinite values.
    """
    set_ndim = 3 if repeats else 2
    shape_text = "(n_repeats, n_stimuli, n_features)" if repeats else "(n_stimuli, n_features)"
    if isinstance(data, np.ndarray) or isinstance(data, torch.Tensor):
        array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data
        if array.ndim != set_ndim + 1:
            hint = (
                "; this metric needs repeats: pass (n_sets, n_repeats, n_stimuli, n_features) "
                "or a list of (n_repeats, n_stimuli, n_features) arrays"
                if repeats and array.ndim == 3
                else f"; for a single set pass [{name}] or {name}[None]"
                if array.ndim == set_ndim
                else ""
            )
            raise ValueError(
                f"{name} must be an array of shape (n_sets, {shape_text[1:]} or a list of "
                f"{shape_text} arrays; got an array of shape {array.shape}{hint}"
            )
        sets = list(array)
    else:
        sets = [np.asarray(item) for item in data]
    if not sets:
        raise ValueError(f"{name} holds no set; pass at least one {shape_text} array")
    checked = []
    for index, item in enumerate(sets):
        if item.ndim != set_ndim:
            hint = (
                " (this metric needs repeats; without repeats use a metric such as "
                "'correlation' or 'euclidean', or linear_cka)"
                if repeats and item.ndim == 2
                else ""
            )
            raise ValueError(
                f"{name}[{index}] must have shape {shape_text}; got shape {item.shape}{hint}"
            )
        if not np.issubdtype(item.dtype, np.number):
            raise ValueError(f"{name}[{index}] must be numeric; got dtype {item.dtype}")
        if item.shape[-1] == 0:
            raise ValueError(f"{name}[{index}] has no feature column (shape {item.shape})")
        if repeats and item.shape[0] < 2:
            raise ValueError(
                f"{name}[{index}] has {item.shape[0]} repeat(s); this metric needs at least 2 "
                "independent repeats per stimulus"
            )
        if not np.isfinite(item).all():
            n_bad = int((~np.isfinite(item)).sum())
            raise ValueError(
                f"{name}[{index}] has {n_bad} NaN or infinite value(s); drop or impute those "
                "stimuli or columns first"
            )
        checked.append(item)
    n_stimuli = [item.shape[-2] for item in checked]
    if len(set(n_stimuli)) > 1:
        first_other = next(i for i, n in enumerate(n_stimuli) if n != n_stimuli[0])
        raise ValueError(
            f"{name} sets describe different numbers of stimuli: {name}[0] has "
            f"{n_stimuli[0]} and {name}[{first_other}] has {n_stimuli[first_other]}; every set "
            "needs one row per stimulus, in the same order"
        )
    if n_stimuli[0] < min_stimuli:
        raise ValueError(
            f"{name} has {n_stimuli[0]} stimuli; this metric needs at least {min_stimuli}"
        )
    return checked


def check_same_stimuli(first: list[np.ndarray], second: list[np.ndarray], names: str) -> None:
    """Raise when two lists of sets do not describe the same number of stimuli."""
    n_first, n_second = first[0].shape[-2], second[0].shape[-2]
    if n_first != n_second:
        raise ValueError(
            f"{names}: the first has {n_first} stimuli and the second {n_second}; both need "
            "one row per stimulus, in the same order"
        )


def resolve_torch(device: str | torch.device, dtype: DType) -> tuple[torch.device, torch.dtype]:
    """Torch device and dtype of a metric computation (CUDA asked for but absent: an error)."""
    check_option(dtype, tuple(_TORCH_DTYPES), "dtype")
    if str(device) == "cpu":  # the common case, without importing the feature module
        return torch.device("cpu"), _TORCH_DTYPES[dtype]
    from brainalign.probe.features import resolve_device

    return resolve_device(device), _TORCH_DTYPES[dtype]


def to_tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``array`` on ``device`` in ``dtype`` (no copy when it already is)."""
    return torch.as_tensor(np.asarray(array), device=device).to(dtype)
