"""Per-layer features of a stimulus set: layer choice, token pooling, batched extraction, PCA.

Example::

    model = load_probe_model("runs/demo/exports/step_0000100")
    layers = select_layers(model.depth, 22)  # 22 evenly spaced relative depths, as in Study A
    features = extract_features(model, stimuli, layers=layers, pooling="mean",
                                cache=FeatureCache("~/.cache/brainalign/features"))
    features[layers[-1]].shape  # (n_stimuli, n_features)

All requested layers come from one forward pass per batch. The next batch is loaded and
preprocessed in a background thread while the model runs on the current one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from brainalign.probe.cache import FeatureCache, features_through_cache
from brainalign.probe.models import ProbeModel, TokenLayout
from brainalign.probe.models.preprocess import LoadedBatch
from brainalign.probe.stimuli import StimulusSet

__all__ = [
    "POOLINGS",
    "check_pooling",
    "extract_features",
    "pool_tokens",
    "reduce_features",
    "resolve_device",
    "resolve_dtype",
    "select_layers",
]

Pooling = Literal["cls", "mean", "registers", "cls+mean"]
POOLINGS: tuple[str, ...] = ("cls", "mean", "registers", "cls+mean")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------- layer choice
def select_layers(
    depth: int, relative_depths: Sequence[float] | int | Literal["all"] = "all"
) -> list[int]:
    """Layer indices nearest to the requested relative depths.

    Relative depth ``r`` maps to layer ``floor(r * (depth - 1) + 0.5)``: the nearest layer,
    ties going to the deeper one (depth 12, r = 0.5 -> 5.5 -> layer 6).

    Parameters
    ----------
    depth : int
        Number of layers of the model.
    relative_depths : sequence of float in [0, 1], int or "all"
        Explicit depths; an int ``n >= 2`` means ``n`` evenly spaced depths from 0 to 1 (the
        paper uses 22); ``"all"`` means every layer.

    Returns
    -------
    layers : list of int
        Sorted, without duplicates.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if isinstance(relative_depths, str):
        if relative_depths != "all":
            raise ValueError(
                "relative_depths must be 'all', an int or a list of floats, "
                f"got {relative_depths!r}"
            )
        return list(range(depth))
    if isinstance(relative_depths, (int, np.integer)) and not isinstance(relative_depths, bool):
        if relative_depths < 2:
            raise ValueError(
                f"an int relative_depths counts evenly spaced depths from 0 to 1 and must be "
                f">= 2, got {relative_depths}; pass [1.0] for the last layer only"
            )
        relative_depths = np.linspace(0.0, 1.0, int(relative_depths)).tolist()
    values = [float(value) for value in relative_depths]
    if not values:
        raise ValueError("relative_depths is empty")
    outside = [value for value in values if not 0.0 <= value <= 1.0 or math.isnan(value)]
    if outside:
        raise ValueError(f"relative depths must lie in [0, 1]; got {outside}")
    # The tiny epsilon keeps 0.5 * 11 = 5.4999999... from rounding down.
    return sorted({math.floor(value * (depth - 1) + 0.5 + 1e-9) for value in values})


# ---------------------------------------------------------------------------- pooling
def check_pooling(layout: TokenLayout, pooling: str) -> None:
    """Raise a clear error when ``pooling`` is unknown or impossible for ``layout``."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if pooling in ("cls", "cls+mean") and not layout.has_cls:
        raise ValueError(
            f"pooling {pooling!r} needs a class token, but this model has none ({layout}); "
            "use pooling='mean'"
        )
    if pooling == "registers" and layout.n_registers == 0:
        raise ValueError(
            f"pooling 'registers' needs register tokens, but this model has none ({layout}); "
            "use pooling='mean' or 'cls'"
        )


def pool_tokens(tokens: Tensor, layout: TokenLayout, pooling: str) -> Tensor:
    """Pool one layer's tokens into one vector per image.

    Parameters
    ----------
    tokens : Tensor of shape (B, T, D)
        Class token, registers, patches, in that order (see ``layout``).
    layout : TokenLayout
    pooling : {"cls", "mean", "registers", "cls+mean"}
        ``cls``: the class token (B, D). ``mean``: the mean over patch tokens only, class and
        register tokens excluded (B, D). ``registers``: the *mean* of the register tokens
        (B, D), so that every pooling but ``cls+mean`` has the model's width.
        ``cls+mean``: class token and patch mean concatenated (B, 2D).

    Returns
    -------
    Tensor of shape (B, F), float32
    """
    check_pooling(layout, pooling)
    if tokens.ndim != 3:
        raise ValueError(f"tokens must have shape (B, T, D), got {tuple(tokens.shape)}")
    if tokens.shape[1] <= layout.n_prefix:
        raise ValueError(
            f"{tokens.shape[1]} tokens but the layout has {layout.n_prefix} prefix tokens: "
            "no patch tokens left"
        )
    tokens = tokens.float()
    if pooling == "mean":
        return tokens[:, layout.n_prefix :].mean(dim=1)  # (B, D)
    cls = tokens[:, 0]  # (B, D)
    if pooling == "cls":
        return cls
    if pooling == "registers":
        start = int(layout.has_cls)
        return tokens[:, start : start + layout.n_registers].mean(dim=1)  # (B, D)
    return torch.cat([cls, tokens[:, layout.n_prefix :].mean(dim=1)], dim=1)  # (B, 2D)


# ---------------------------------------------------------------------------- extraction
def check_request(
    model: ProbeModel, layers: Sequence[int] | None, pooling: str, batch_size: int
) -> list[int]:
    """Validate an extraction request; return the unique layer indices (all when None)."""
    layers = list(range(model.depth)) if layers is None else [int(layer) for layer in layers]
    layers = list(dict.fromkeys(layers))
    bad = [layer for layer in layers if not 0 <= layer < model.depth]
    if not layers or bad:
        raise ValueError(
            f"layers must be a non-empty list of indices in [0, {model.depth}); got {layers}"
        )
    check_pooling(model.token_layout, pooling)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return layers


def image_features_through_cache(
    cache: FeatureCache | None,
    model: ProbeModel,
    stimuli: StimulusSet,
    layers: Sequence[int],
    pooling: str,
    compute_dtype: torch.dtype,
    compute: Callable[[list[int]], Mapping[int, np.ndarray]],
    **key_parts: Any,
) -> dict[int, np.ndarray]:
    """:func:`~brainalign.probe.cache.features_through_cache` for images of a stimulus set.

    The key holds the model identity, its preprocessing, the pooling, the precision and the
    stimulus *set* hash (order-free; rows are stored in the set's canonical order), plus
    ``key_parts`` (``feature_kind``, an objective...).
    """
    if cache is None:
        return features_through_cache(None, layers, compute, n_rows=len(stimuli))
    return features_through_cache(
        cache,
        layers,
        compute,
        n_rows=len(stimuli),
        row_order=stimuli.canonical_order(),
        model_identity=model.identity,
        preprocess=model.preprocess.as_dict(),
        pooling=pooling,
        stimulus_hash=stimuli.set_hash,
        precision=str(compute_dtype).removeprefix("torch."),
        **key_parts,
    )


def extract_features(
    model: ProbeModel,
    stimuli: StimulusSet | np.ndarray,
    *,
    layers: Sequence[int] | None = None,
    pooling: Pooling = "mean",
    batch_size: int = 64,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    progress: bool = True,
    cache: FeatureCache | None = None,
) -> dict[int, np.ndarray]:
    """Pooled activations of every requested layer for every stimulus.

    Parameters
    ----------
    model : ProbeModel
        Moved to ``device`` in place.
    stimuli : StimulusSet or ndarray of shape (n_stimuli, H, W, 3), uint8
    layers : sequence of int, optional
        Layer indices (see :func:`select_layers`); default every layer.
    pooling : {"cls", "mean", "registers", "cls+mean"}
        See :func:`pool_tokens`.
    batch_size : int
    device : str or torch.device
        ``"auto"``: CUDA when available, else CPU.
    dtype : {"auto", "float32", "bfloat16", "float16"}
        Compute precision; ``"auto"`` is bf16 autocast on CUDA and float32 on CPU. Features
        are always returned as float32; the precision is part of the cache key.
    progress : bool
        Show a tqdm bar over batches.
    cache : FeatureCache, optional
        Layers found in the cache are not recomputed; the model does not run at all when every
        layer is cached.

    Returns
    -------
    dict of int to ndarray of shape (n_stimuli, n_features), float32
        Keyed by layer index, in the order requested.
    """
    if not isinstance(stimuli, StimulusSet):
        stimuli = _as_stimulus_set(stimuli)
    layers = check_request(model, layers, pooling, batch_size)
    target = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, target)
    if not len(stimuli):
        raise ValueError("the stimulus set is empty: nothing to extract")

    def compute(missing: list[int]) -> dict[int, np.ndarray]:
        return _run_model(
            model, stimuli, missing, pooling, batch_size, target, compute_dtype, progress
        )

    return image_features_through_cache(
        cache, model, stimuli, layers, pooling, compute_dtype, compute
    )


def _run_model(
    model: ProbeModel,
    stimuli: StimulusSet,
    layers: list[int],
    pooling: str,
    batch_size: int,
    device: torch.device,
    compute_dtype: torch.dtype,
    progress: bool,
) -> dict[int, np.ndarray]:
    """One forward pass per batch for all ``layers``; pooled outputs gathered on the host."""
    model.to(device)
    n_stimuli = len(stimuli)
    outputs: dict[int, Tensor] = {}
    pin = device.type == "cuda"
    autocast = torch.autocast(
        device_type=device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32
    )
    batches = model_input_batches(
        model, stimuli, batch_size, device, desc=f"features {model.architecture}", progress=progress
    )
    with torch.inference_mode(), autocast:
        for batch in batches:
            tokens = model.extract(batch.inputs, layers)  # per layer (B, T, D)
            for layer, layer_tokens in zip(layers, tokens):
                pooled = pool_tokens(layer_tokens, model.token_layout, pooling)  # (B, F)
                if layer not in outputs:
                    outputs[layer] = torch.empty(
                        (n_stimuli, pooled.shape[1]), dtype=torch.float32, pin_memory=pin
                    )
                rows = slice(batch.start, batch.start + len(pooled))
                outputs[layer][rows].copy_(pooled, non_blocking=pin)
    if pin:
        torch.cuda.synchronize(device)
    return {layer: outputs[layer].numpy() for layer in layers}


@dataclass(frozen=True)
class ModelInputBatch:
    """One batch of stimuli, as loaded and as model input.

    Attributes
    ----------
    start : int
        Position of the first stimulus of the batch in the set.
    images : ndarray of shape (B, H, W, 3) or list of (H, W, 3), uint8
        The images as stored (objectives seed their views from these pixels).
    inputs : Tensor of shape (B, 3, R, R), float32
        Preprocessed with the model's preprocessing, on the target device.
    """

    start: int
    images: LoadedBatch
    inputs: Tensor


def model_input_batches(
    model: ProbeModel,
    stimuli: StimulusSet,
    batch_size: int,
    device: torch.device,
    *,
    desc: str,
    progress: bool,
) -> Iterator[ModelInputBatch]:
    """Batches of model input; the next batch is read and prepared while the current one runs.

    Reading, decoding and the host part of the preprocessing (the authors' PIL pipelines) run
    in a worker thread; the device part (the tensor pipeline's resize) in the caller's.
    """
    preprocess = model.preprocess
    n_stimuli = len(stimuli)
    starts = range(0, n_stimuli, batch_size)

    def load(start: int) -> tuple[LoadedBatch, Any]:
        images = _load_uint8(stimuli, np.arange(start, min(start + batch_size, n_stimuli)))
        return images, preprocess.prepare(images)

    for start, (images, prepared) in tqdm(
        zip(starts, _prefetch(load, starts)),
        total=len(starts),
        desc=desc,
        unit="batch",
        disable=not progress,
    ):
        yield ModelInputBatch(start, images, preprocess.to_device(prepared, device))


def _prefetch(load: Callable[[int], Any], starts: Sequence[int]) -> Iterator[Any]:
    """Yield ``load(start)`` for each start, reading the next batch in a worker thread.

    With the tensor pipeline the worker only reads and decodes images (NumPy, PIL: no torch
    kernels), so it starts no second OpenMP thread team competing with the forward pass.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="brainalign-prefetch") as pool:
        pending = pool.submit(load, starts[0]) if len(starts) else None
        for position in range(len(starts)):
            current = pending.result()
            has_next = position + 1 < len(starts)
            pending = pool.submit(load, starts[position + 1]) if has_next else None
            yield current


def _load_uint8(stimuli: StimulusSet, indices: np.ndarray) -> LoadedBatch:
    """Images as one uint8 array (B, H, W, 3) when they share a size, else a list of (H, W, 3)."""
    if stimuli.image_paths is None:  # arrays / HDF5: one vectorised read
        return stimuli.load_array(indices)
    images = [np.array(image) for image in stimuli.load(indices)]  # writable copies
    if len({image.shape for image in images}) == 1:
        return np.stack(images)
    return images


def _as_stimulus_set(images: np.ndarray) -> StimulusSet:
    array = np.asarray(images)
    return StimulusSet.from_array([str(index) for index in range(len(array))], array)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; an unavailable CUDA device is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available; use 'cpu'")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 (autocast) on CUDA, float32 on CPU; else the named dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


# ---------------------------------------------------------------------------- reduction
def reduce_features(
    features: Mapping[int, np.ndarray], n_components: int, seed: int = 0
) -> dict[int, np.ndarray]:
    """PCA per layer, fitted on all stimuli of that layer (scikit-learn ``PCA``).

    The fit is unsupervised (brain data are not used), so fitting on every stimulus before the
    encoding model's cross-validation leaks no target information.

    Parameters
    ----------
    features : dict of int to ndarray of shape (n_stimuli, n_features)
    n_components : int
        At most ``min(n_stimuli, n_features)`` of every layer.
    seed : int
        ``random_state`` of the randomized solver (used when it is faster than a full SVD).

    Returns
    -------
    dict of int to ndarray of shape (n_stimuli, n_components), float32
    """
    from sklearn.decomposition import PCA

    reduced: dict[int, np.ndarray] = {}
    for layer, array in features.items():
        array = np.asarray(array)
        if array.ndim != 2:
            raise ValueError(f"layer {layer}: features must be 2-D, got shape {array.shape}")
        limit = min(array.shape)
        if not 1 <= n_components <= limit:
            raise ValueError(
                f"layer {layer}: n_components={n_components} must be between 1 and "
                f"min(n_stimuli, n_features) = {limit}"
            )
        pca = PCA(n_components=n_components, svd_solver="auto", random_state=seed)
        reduced[layer] = pca.fit_transform(array).astype(np.float32, copy=False)
    return reduced
