"""Gradient features: per image and layer, the gradient of a loss w.r.t. the layer's output.

Study B of PAPERS.md encodes backpropagated gradients instead of activations. The loss is an
:class:`Objective` (model + images -> one loss per image) given by the caller: the model-agnostic
ones live in :mod:`brainalign.probe.objectives`; the self-supervised DINO + iBOT objective of
brainalign checkpoints belongs to training (``brainalign.train.gradient_objective``) and is
passed in by the CLI and the callback, so this package never imports ``train``.

One backward pass per batch gives every requested layer: forward hooks keep each layer's output,
the per-image losses are summed and differentiated once with respect to all kept outputs
(``torch.autograd.grad``: parameter gradients are neither computed nor accumulated). Because
each loss depends on its own image only, ``d(sum of losses) / d(tokens of image i)`` is image
i's own gradient: results do not depend on the batch size or order. The gradient is taken with
respect to the layer module's raw output (for brainalign ViTs the block output, before the final
LayerNorm that activation probing applies), then pooled like activations
(:func:`~brainalign.probe.features.pool_tokens`).

Example::

    from brainalign.probe.objectives import InvarianceObjective
    model = load_probe_model("timm:resnet18", weights="resnet18.safetensors")
    gradients = extract_gradient_features(model, stimuli, InvarianceObjective(), pooling="mean")
    gradients[3].shape  # (n_stimuli, n_features)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from brainalign.probe.cache import FeatureCache
from brainalign.probe.features import (
    Pooling,
    _as_stimulus_set,
    check_request,
    image_features_through_cache,
    model_input_batches,
    pool_tokens,
    resolve_device,
    resolve_dtype,
)
from brainalign.probe.models import DinoProbeModel, ProbeModel, output_to_tokens
from brainalign.probe.stimuli import StimulusSet

__all__ = [
    "Objective",
    "StimulusBatch",
    "extract_gradient_features",
    "image_seeds",
    "layer_gradients",
    "layer_modules",
]


# ---------------------------------------------------------------------------- the interface
@dataclass(frozen=True)
class StimulusBatch:
    """What an objective receives for one batch.

    Attributes
    ----------
    images : Tensor of shape (B, 3, R, R), float32
        Preprocessed with the model's :attr:`~ProbeModel.preprocess`, on the model's device.
    seeds : Tensor of shape (B,), int64, on the CPU
        One seed per image, a hash of the image's pixels (:func:`image_seeds`): seeded views and
        masks drawn from it depend on the image alone, never on its batch or position.
    indices : Tensor of shape (B,), int64, on the CPU
        Positions of the images in the stimulus set (e.g. to look up labels).
    """

    images: Tensor
    seeds: Tensor
    indices: Tensor


@runtime_checkable
class Objective(Protocol):
    """A loss per image: ``objective(model, batch) -> Tensor of shape (B,)``.

    Contract:

    - loss ``i`` depends on image ``i`` only (no batch statistics, no cross-image terms);
    - forward passes whose layer outputs must carry gradient features run the probed network
      (``model.module``, directly or through ``model.extract``) with gradients enabled, on all
      images of the batch, view-major when there are several views (rows ``v * B + i``, in one
      call or one call per view); forward passes that only make targets run under
      ``torch.no_grad()`` and are ignored;
    - :attr:`identity` names everything that changes the losses (configuration, seed, and a
      hash of any weights the objective holds besides the probed model); it enters the cache key.
    """

    @property
    def identity(self) -> str: ...

    def __call__(self, model: ProbeModel, batch: StimulusBatch) -> Tensor: ...


def image_seeds(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """A seed per image from its shape and pixel bytes (sha256, first 63 bits).

    Parameters
    ----------
    images : ndarray of shape (B, H, W, 3), uint8, or a list of (H, W, 3) uint8 arrays

    Returns
    -------
    ndarray of shape (B,), int64
    """
    seeds = np.empty(len(images), dtype=np.int64)
    for row, image in enumerate(images):
        image = np.ascontiguousarray(image)
        digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
        digest.update(image.data)
        seeds[row] = int.from_bytes(digest.digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF
    return seeds


# ---------------------------------------------------------------------------- layer hooks
def layer_modules(model: ProbeModel) -> list[nn.Module]:
    """The submodule whose output is each probed layer, shallow to deep.

    Brainalign ViTs: the transformer blocks. timm models and hooked ``nn.Module`` objects: the
    named submodules of :attr:`ProbeModel.layer_names`. Hugging Face models: the encoder's layer
    list (``hidden_states[i + 1]`` is the output of layer ``i``).

    Raises
    ------
    ValueError
        When the layers cannot be mapped to submodules.
    """
    if isinstance(model, DinoProbeModel):
        return list(model.module.vit.blocks)
    named = dict(model.module.named_modules())
    if all(name in named for name in model.layer_names):
        return [named[name] for name in model.layer_names]
    lists = [
        (name, module)
        for name, module in named.items()
        if isinstance(module, nn.ModuleList)
        and len(module) == model.depth
        and name.split(".")[-1] in ("layer", "layers")
    ]
    if len(lists) == 1:
        return list(lists[0][1])
    raise ValueError(
        f"{model.architecture}: cannot find the submodules of the layers {model.layer_names[:3]}"
        "...; gradient features need layers that are submodules: load the model as an "
        "nn.Module with layer_names=[...]"
    )


class _OutputRecorder:
    """Forward hooks keeping every output that is computed with gradients, per layer."""

    def __init__(self, modules: dict[int, nn.Module]) -> None:
        self.modules = modules
        self.outputs: dict[int, list[Tensor]] = {layer: [] for layer in modules}
        self.versions: dict[int, list[int]] = {layer: [] for layer in modules}
        self._handles: list[Any] = []

    def __enter__(self) -> _OutputRecorder:
        for layer, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, layer: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if torch.is_grad_enabled() and isinstance(tensor, Tensor) and tensor.requires_grad:
                self.outputs[layer].append(tensor)
                self.versions[layer].append(tensor._version)

        return hook

    def check_unmodified(self, layer_names: Sequence[str]) -> None:
        """Raise when a kept output was changed in place after its layer returned it."""
        changed = [
            layer_names[layer]
            for layer, outputs in self.outputs.items()
            for output, version in zip(outputs, self.versions[layer])
            if output._version != version
        ]
        if changed:
            raise ValueError(
                f"the outputs of layers {sorted(set(changed))} are modified in place later in "
                "the forward pass (e.g. an in-place activation), so their gradient is not "
                "defined: probe other layers (layer_names=[...])"
            )


def layer_gradients(
    model: ProbeModel,
    objective: Objective,
    batch: StimulusBatch,
    layers: Sequence[int],
    pooling: str,
) -> dict[int, Tensor]:
    """Pooled per-image gradients of one batch, every layer from one backward pass.

    Parameters
    ----------
    model : ProbeModel
    objective : Objective
    batch : StimulusBatch
        ``batch.images`` should require gradients (so that networks with frozen weights
        still build a graph); :func:`extract_gradient_features` does this.
    layers : sequence of int
    pooling : {"cls", "mean", "registers", "cls+mean"}

    Returns
    -------
    dict of int to Tensor of shape (B, F), float32
        Gradients averaged over the objective's views (when it has several).
    """
    n_images = batch.images.shape[0]
    all_modules = layer_modules(model)
    recorder = _OutputRecorder({layer: all_modules[layer] for layer in layers})
    with recorder:
        losses = objective(model, batch)
    if not isinstance(losses, Tensor) or tuple(losses.shape) != (n_images,):
        shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(
            f"the objective {type(objective).__name__} returned {shape}; it must return one "
            f"loss per image, a Tensor of shape ({n_images},)"
        )
    if not torch.isfinite(losses).all():
        bad = torch.nonzero(~torch.isfinite(losses.detach())).flatten()
        raise FloatingPointError(
            f"non-finite losses for stimuli at positions {batch.indices[bad.cpu()].tolist()[:5]}"
        )
    never_run = [model.layer_names[layer] for layer in layers if not recorder.outputs[layer]]
    recorder.check_unmodified(model.layer_names)
    if never_run:
        raise ValueError(
            f"layers {never_run} never ran with gradients during the objective: it must run the "
            "probed network with gradients enabled (targets alone go under torch.no_grad())"
        )
    kept = [(layer, output) for layer in layers for output in recorder.outputs[layer]]
    if not losses.requires_grad:
        raise ValueError("the losses do not depend on the probed network's layer outputs")
    grads = torch.autograd.grad(
        losses.sum(), [output for _, output in kept], allow_unused=True, materialize_grads=True
    )
    channels_last = bool(getattr(model, "channels_last", False))
    per_layer: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for (layer, _), grad in zip(kept, grads):
        tokens = output_to_tokens(grad, model.layer_names[layer], channels_last=channels_last)
        per_layer[layer].append(tokens.detach())  # (rows, T, D)
    pooled: dict[int, Tensor] = {}
    for layer in layers:
        tokens = torch.cat(per_layer[layer])  # (V * B, T, D), view-major
        if tokens.shape[0] % n_images:
            raise ValueError(
                f"layer {model.layer_names[layer]} ran on {tokens.shape[0]} rows with gradients "
                f"for a batch of {n_images} images; the objective must run every view on the "
                "whole batch (rows v * B + i)"
            )
        vectors = pool_tokens(tokens, model.token_layout, pooling)  # (V * B, F)
        pooled[layer] = vectors.view(-1, n_images, vectors.shape[1]).mean(dim=0)  # (B, F)
    return pooled


# ---------------------------------------------------------------------------- extraction
def extract_gradient_features(
    model: ProbeModel,
    stimuli: StimulusSet | np.ndarray,
    objective: Objective,
    *,
    layers: Sequence[int] | None = None,
    pooling: Pooling = "mean",
    batch_size: int = 32,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    progress: bool = True,
    cache: FeatureCache | None = None,
) -> dict[int, np.ndarray]:
    """Pooled gradients of ``objective`` w.r.t. every requested layer for every stimulus.

    Parameters
    ----------
    model : ProbeModel
        Moved to ``device`` in place; kept in its current (eval) mode.
    stimuli : StimulusSet or ndarray of shape (n_stimuli, H, W, 3), uint8
    objective : Objective
        Per-image loss, e.g. :class:`~brainalign.probe.objectives.InvarianceObjective`.
    layers : sequence of int, optional
        Layer indices; default every layer.
    pooling : {"cls", "mean", "registers", "cls+mean"}
        As for activations (:func:`~brainalign.probe.features.pool_tokens`).
    batch_size : int
        Images per forward/backward pass (results do not depend on it).
    device : str or torch.device
        ``"auto"``: CUDA when available, else CPU.
    dtype : {"auto", "float32", "bfloat16", "float16"}
        Compute precision (``"auto"``: bf16 autocast on CUDA, float32 on CPU).
    progress : bool
        Show a tqdm bar over batches.
    cache : FeatureCache, optional
        Keyed with ``feature_kind="gradient"`` and the objective's identity.

    Returns
    -------
    dict of int to ndarray of shape (n_stimuli, n_features), float32
        Keyed by layer index, in the order requested.
    """
    if not isinstance(stimuli, StimulusSet):
        stimuli = _as_stimulus_set(stimuli)
    if not isinstance(objective, Objective):
        raise TypeError(
            f"objective must be callable as objective(model, batch) and have an identity; "
            f"got {type(objective).__name__}"
        )
    layers = check_request(model, layers, pooling, batch_size)
    if not len(stimuli):
        raise ValueError("the stimulus set is empty: nothing to extract")
    target = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, target)

    def compute(missing: list[int]) -> dict[int, np.ndarray]:
        return _run_backward(
            model, stimuli, objective, missing, pooling, batch_size, target, compute_dtype, progress
        )

    return image_features_through_cache(
        cache,
        model,
        stimuli,
        layers,
        pooling,
        compute_dtype,
        compute,
        feature_kind="gradient",
        objective=objective.identity,
    )


@contextmanager
def _gradients_on() -> Iterator[None]:
    """Autograd on, even when called inside ``torch.inference_mode`` or ``torch.no_grad``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _run_backward(
    model: ProbeModel,
    stimuli: StimulusSet,
    objective: Objective,
    layers: list[int],
    pooling: str,
    batch_size: int,
    device: torch.device,
    compute_dtype: torch.dtype,
    progress: bool,
) -> dict[int, np.ndarray]:
    """One forward + one backward pass per batch for all ``layers``."""
    model.to(device)
    n_stimuli = len(stimuli)
    outputs: dict[int, np.ndarray] = {}
    autocast = torch.autocast(
        device_type=device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32
    )
    batches = model_input_batches(
        model,
        stimuli,
        batch_size,
        device,
        desc=f"gradients {model.architecture}",
        progress=progress,
    )
    with _gradients_on(), autocast:
        for loaded in batches:
            start, images = loaded.start, loaded.inputs  # (B, 3, R, R)
            batch = StimulusBatch(
                images=images.requires_grad_(True),
                seeds=torch.from_numpy(image_seeds(loaded.images)),
                indices=torch.arange(start, start + images.shape[0]),
            )
            pooled = layer_gradients(model, objective, batch, layers, pooling)
            for layer in layers:
                if layer not in outputs:
                    outputs[layer] = np.empty((n_stimuli, pooled[layer].shape[1]), np.float32)
                outputs[layer][start : start + images.shape[0]] = pooled[layer].cpu().numpy()
    return outputs
