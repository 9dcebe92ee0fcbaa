"""Checks the offline commands run before any work, in the order the work would meet them.

1. The output folder (:func:`check_new_output`, then :func:`reserve_output`, which creates the
   hidden temporary folder at once: a second command writing the same ``--out`` fails
   immediately, and a read-only, full or misplaced location fails before anything is read).
2. The feature cache folder can be written (:func:`check_cache_dir`).
3. Once the brain data are read: options that depend on them (:func:`check_against_targets`:
   ``--pca`` against the number of stimuli).
4. Once the model is loaded, before any feature is extracted (:func:`check_against_model`:
   ``--layers`` against the model's depth, the pooling against its tokens, ``--pca`` against
   its feature width).

Every error names the option (dotted key and flag) and the value.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "check_against_model",
    "check_against_targets",
    "check_cache_dir",
    "check_new_output",
    "check_writable_folder",
    "reserve_output",
]


def check_new_output(out: Path, *, overwrite: bool, option: str = "--out") -> None:
    """``out`` may be written: absent, or an existing folder with ``overwrite``.

    Raises
    ------
    FileExistsError
        ``out`` exists and ``overwrite`` is False, or ``out`` is a file.
    """
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if os.path.lexists(out) and not out.is_dir():
        raise FileExistsError(f"{option} {out} is a file, not a folder; choose another path")


def reserve_output(
    stack: contextlib.ExitStack, out: Path, *, overwrite: bool, option: str = "--out"
) -> Path:
    """Enter :func:`~brainalign.utils.atomic.atomic_directory` for ``out`` on ``stack``.

    The temporary folder exists from now on (the reservation); it is published as ``out``
    when ``stack`` closes without an error, and removed otherwise.

    Returns
    -------
    Path
        The temporary folder to write the results into.

    Raises
    ------
    FileExistsError, OSError
        As :func:`~brainalign.utils.atomic.atomic_directory`, with ``option`` in the message.
    """
    from brainalign.utils.atomic import atomic_directory

    try:
        return stack.enter_context(atomic_directory(out, overwrite=overwrite))
    except OSError as error:
        raise _naming(error, option) from None


def check_cache_dir(cache_dir: str | None, option: str = "--cache-dir") -> None:
    """The feature cache folder (when one is configured) is a folder that can be written.

    See :func:`check_writable_folder`; the message says how to disable the cache.
    """
    if cache_dir:
        check_writable_folder(
            cache_dir, option, remedy=f"choose another folder or pass {option} '' to disable it"
        )


def check_writable_folder(
    folder: str | os.PathLike[str], option: str, *, remedy: str = "choose another folder"
) -> None:
    """``folder`` is a folder that can be written, or can be created (nothing is created).

    The nearest existing folder of the path is checked: a file in the way, or a folder that
    cannot be written (permissions, a read-only file system), is an error naming ``option``.

    Raises
    ------
    NotADirectoryError
        The path, or one of its parents, is a file.
    PermissionError
        The folder (or the one it would be created in) cannot be written.
    """
    path = Path(folder).expanduser()
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{option} {folder}: {existing} is a file, not a folder; {remedy}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{option} {folder}: cannot write in {existing} (permission denied or read-only "
            f"file system); {remedy}"
        )


def check_against_targets(config: Any, targets: Sequence[Any]) -> None:
    """Options that depend on the brain data: ``features.pca`` <= each data set's stimuli.

    Parameters
    ----------
    config : ProbeConfig
    targets : sequence of ProbeTarget
    """
    pca = config.features.pca
    for target in targets:
        if pca is not None and pca > target.brain.n_stimuli:
            raise ValueError(
                f"features.pca={pca} (--pca) is more than the {target.brain.n_stimuli} stimuli "
                f"of {target.spec}: PCA keeps at most min(n_stimuli, n_features) components; "
                f"choose {target.brain.n_stimuli} or fewer"
            )


def check_against_model(config: Any, model: Any, stimuli: Any) -> list[int]:
    """Options that depend on the model, checked before any feature is extracted.

    ``features.layers`` may not ask for more layers than the model has, the pooling must suit
    its tokens (no ``cls`` without a class token), and ``features.pca`` may not exceed the
    width of any probed layer. The widths are read from one image of ``stimuli`` passed
    through the model (the features' width depends on the source, the layer and the pooling,
    and no model declares it otherwise).

    Parameters
    ----------
    config : ProbeConfig
    model : ProbeModel
    stimuli : StimulusSet
        Any stimulus set of the probe (one image is read).

    Returns
    -------
    list of int
        The layer indices the probe will extract.
    """
    from brainalign.probe.features import check_pooling, extract_features, select_layers

    layers = config.features.layers
    requested = layers if isinstance(layers, int) else None
    if isinstance(layers, list):
        requested = len(layers)
    if requested is not None and requested > model.depth:
        raise ValueError(
            f"features.layers={layers} (--layers) asks for {requested} layers and "
            f"{model.architecture} has {model.depth}: give at most {model.depth} (or all)"
        )
    try:
        check_pooling(model.token_layout, config.features.pooling)
    except ValueError as error:
        raise ValueError(f"features.pooling (--pooling): {error}") from None
    indices = select_layers(model.depth, layers)
    pca = config.features.pca
    if pca is not None and len(stimuli):
        first = stimuli.subset(list(stimuli.ids[:1]))
        widths = extract_features(
            model,
            first,
            layers=indices,
            pooling=config.features.pooling,
            batch_size=1,
            device=config.device,
            dtype=config.precision,
            progress=False,
        )
        narrow = {layer: array.shape[1] for layer, array in widths.items() if array.shape[1] < pca}
        if narrow:
            layer, width = min(narrow.items(), key=lambda item: item[1])
            raise ValueError(
                f"features.pca={pca} (--pca) is more than the {width} features of layer {layer} "
                f"of {model.architecture}: choose {width} or fewer"
            )
    return indices


def _naming(error: OSError, option: str) -> OSError:
    """``error`` (same type) with ``option`` in front of its message."""
    return type(error)(f"{option}: {error}")
