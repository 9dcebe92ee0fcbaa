"""The probe's view of a model: named layers, a token layout, preprocessing and an identity.

:class:`ProbeModel` is what feature extraction reads; :mod:`brainalign.probe.models.sources`
builds one from a spec. Subclasses read layers their own way: brainalign backbones through
``forward_layers``, timm models through ``forward_intermediates``, Hugging Face models through
``output_hidden_states``, anything else through forward hooks. ``final_norm`` applies the
model's final norm to every probed layer, the same for every source that has one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from brainalign.models.backbone import DinoBackbone
from brainalign.models.weights import hash_weights, version_stamp
from brainalign.probe.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImagePreprocessing,
    Preprocess,
)

__all__ = [
    "DinoProbeModel",
    "HookProbeModel",
    "HuggingFaceProbeModel",
    "ProbeModel",
    "TimmProbeModel",
    "TokenLayout",
    "final_layer_norm",
    "output_to_tokens",
    "spatial_to_tokens",
]


@dataclass(frozen=True)
class TokenLayout:
    """Which tokens a layer's output ``(B, T, D)`` holds, in the order cls, registers, patches.

    Attributes
    ----------
    has_cls : bool
        Token 0 is a class token.
    n_registers : int
        Register tokens follow the class token (or lead when there is none).
    """

    has_cls: bool
    n_registers: int = 0

    def __post_init__(self) -> None:
        if self.n_registers < 0:
            raise ValueError(f"n_registers must be >= 0, got {self.n_registers}")

    @property
    def n_prefix(self) -> int:
        """Number of non-patch tokens at the start (class token + registers)."""
        return int(self.has_cls) + self.n_registers


class ProbeModel:
    """A model seen by the probe: named layers, a token layout, preprocessing and an identity.

    Subclasses implement :meth:`_extract`. Build instances with :func:`load_probe_model`.

    Parameters
    ----------
    module : nn.Module
        The network (kept in eval mode).
    architecture : str
        Architecture name (with its source, e.g. ``timm:resnet18``); part of the identity.
    layer_names : list of str
        One name per probed layer, shallow to deep.
    token_layout : TokenLayout
    preprocess : ImagePreprocessing
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        architecture: str,
        layer_names: Sequence[str],
        token_layout: TokenLayout,
        preprocess: ImagePreprocessing,
    ) -> None:
        if not layer_names:
            raise ValueError(f"{architecture}: no layers to probe")
        self.module = module.eval()
        self.architecture = architecture
        self.layer_names = list(layer_names)
        self.token_layout = token_layout
        self.preprocess = preprocess
        self._identity: str | None = None
        self._identity_versions: tuple[tuple[int, int], ...] | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(architecture={self.architecture!r}, depth={self.depth}, "
            f"token_layout={self.token_layout}, resolution={self.preprocess.resolution})"
        )

    # ------------------------------------------------------------------ description
    @property
    def depth(self) -> int:
        """Number of probed layers."""
        return len(self.layer_names)

    @property
    def relative_depths(self) -> list[float]:
        """``index / (depth - 1)`` per layer, in [0, 1] (``[0.0]`` for a one-layer model)."""
        if self.depth == 1:
            return [0.0]
        return [index / (self.depth - 1) for index in range(self.depth)]

    @property
    def device(self) -> torch.device:
        for tensor in self.module.parameters():
            return tensor.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> ProbeModel:
        """Move the network to ``device`` (in place); returns self."""
        self.module.to(device)
        return self

    def _extraction_signature(self) -> dict[str, Any]:
        """Options of :meth:`_extract` that change its output (enter the identity)."""
        return {}

    @property
    def identity(self) -> str:
        """sha256 (hex) of the architecture, layer names, token layout and the weights' bytes.

        Recomputed whenever a parameter or buffer was modified in place since the last call
        (tracked through tensor version counters), so a model updated during training never
        reuses an old identity.
        """
        state = self.module.state_dict(keep_vars=True)
        versions = version_stamp(state)
        if self._identity is None or versions is None or versions != self._identity_versions:
            self._identity = hash_weights(
                {
                    "architecture": self.architecture,
                    "layer_names": self.layer_names,
                    "token_layout": asdict(self.token_layout),
                    "extraction": self._extraction_signature(),
                },
                state,
            )
            self._identity_versions = versions
        return self._identity

    # ------------------------------------------------------------------ forward
    def extract(self, images: Tensor, layers: Sequence[int]) -> list[Tensor]:
        """Tokens of the requested layers, from one forward pass.

        Gradients are not disabled here (gradient features need them); callers wrap this in
        ``torch.no_grad()`` for activations.

        Parameters
        ----------
        images : Tensor of shape (B, 3, H, W)
            Preprocessed with :attr:`preprocess`, on the model's device.
        layers : sequence of int
            Layer indices in ``[0, depth)``, any order.

        Returns
        -------
        list of Tensor of shape (B, T, D)
            One per requested layer, in the order requested; tokens follow
            :attr:`token_layout` (class token, registers, patches).
        """
        requested = [int(layer) for layer in layers]
        if not requested:
            raise ValueError("layers is empty: ask for at least one layer index")
        bad = [layer for layer in requested if not 0 <= layer < self.depth]
        if bad:
            raise ValueError(
                f"layer indices {bad} out of range for {self.architecture} with {self.depth} "
                f"layers (valid: 0..{self.depth - 1})"
            )
        unique = sorted(set(requested))
        outputs = dict(zip(unique, self._extract(images, unique)))
        return [outputs[layer] for layer in requested]

    def _extract(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        """Tokens ``(B, T, D)`` for ``layers`` (sorted, unique, in range)."""
        raise NotImplementedError


class DinoProbeModel(ProbeModel):
    """A brainalign :class:`DinoBackbone` read through ``forward_layers``.

    Parameters
    ----------
    backbone : DinoBackbone
    norm : bool
        Apply the final LayerNorm to every block's output (as DINOv3's probes do).
    preprocess : Preprocess, optional
        Default: the backbone's nominal resolution, ImageNet mean/std, bicubic, no crop.
    """

    def __init__(
        self,
        backbone: DinoBackbone,
        *,
        norm: bool = True,
        preprocess: ImagePreprocessing | None = None,
    ) -> None:
        self.norm = norm
        config = getattr(backbone.vit, "pretrained_cfg", {}) or {}
        super().__init__(
            backbone,
            architecture=f"brainalign:{backbone.name}",
            layer_names=[f"blocks.{index}" for index in range(backbone.depth)],
            # n_prefix_tokens - 1: robust where timm's Eva has no ``num_reg_tokens`` attribute.
            token_layout=TokenLayout(has_cls=True, n_registers=backbone.n_prefix_tokens - 1),
            preprocess=preprocess
            or Preprocess(
                resolution=int(backbone.vit.patch_embed.img_size[0]),
                mean=tuple(config.get("mean", IMAGENET_MEAN)),
                std=tuple(config.get("std", IMAGENET_STD)),
                interpolation="bicubic",
            ),
        )

    def _extraction_signature(self) -> dict[str, Any]:
        return {"norm": self.norm}

    def _extract(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        return self.module.forward_layers(images, layers, norm=self.norm)  # each (B, 1+R+N, D)


class TimmProbeModel(ProbeModel):
    """A timm model read through its ``forward_intermediates`` (one pass, stops early).

    Transformer outputs are returned as prefix tokens followed by patch tokens; convolutional
    feature maps ``(B, C, H, W)`` as ``(B, H*W, C)``.

    Parameters
    ----------
    model : nn.Module
        A timm model with ``forward_intermediates`` and ``feature_info``.
    name : str
        The timm model name.
    norm : bool
        Apply the model's final norm to the intermediates of transformers.
    preprocess : ImagePreprocessing, optional
        Default: timm's own evaluation transform for the model (its data config at the input
        size it was built for).
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        *,
        norm: bool = True,
        preprocess: ImagePreprocessing | None = None,
    ) -> None:
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
            raise ValueError(
                f"timm model {name!r} has no forward_intermediates; load it as an nn.Module "
                "with layer_names=[...] instead"
            )
        parameters = inspect.signature(model.forward_intermediates).parameters
        self._supports = {
            key: key in parameters for key in ("return_prefix_tokens", "norm", "stop_early")
        }
        n_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        if not self._supports["return_prefix_tokens"]:
            n_prefix = 0
        has_cls = n_prefix > 0 and getattr(model, "cls_token", None) is not None
        self.norm = norm
        if preprocess is None:
            from brainalign.probe.models.pipelines import timm_pipeline

            preprocess = timm_pipeline(model, name, {})
        super().__init__(
            model,
            architecture=f"timm:{name}",
            layer_names=[
                str(info.get("module", index)) for index, info in enumerate(model.feature_info)
            ],
            token_layout=TokenLayout(has_cls=has_cls, n_registers=n_prefix - int(has_cls)),
            preprocess=preprocess,
        )

    def _extraction_signature(self) -> dict[str, Any]:
        return {"norm": self.norm and self._supports["norm"]}

    def _extract(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        options: dict[str, Any] = {"indices": layers, "intermediates_only": True}
        if self._supports["norm"]:
            options["norm"] = self.norm
        if self._supports["stop_early"]:
            options["stop_early"] = True
        if self.token_layout.n_prefix:
            options["return_prefix_tokens"] = True
        outputs = self.module.forward_intermediates(images, **options)
        tokens = []
        for output in outputs:
            if isinstance(output, tuple):
                spatial, prefix = output  # (B, D, h, w), (B, P, D)
                tokens.append(torch.cat([prefix, spatial_to_tokens(spatial)], dim=1))
            else:
                tokens.append(spatial_to_tokens(output))  # (B, h*w, C)
        return tokens


class _StopForward(Exception):
    """Raised by a hook once the deepest requested layer has run."""


class HookProbeModel(ProbeModel):
    """Any ``nn.Module`` read through forward hooks on named submodules.

    Hooked outputs become tokens: a tuple gives its first element; ``(B, C, H, W)`` maps become
    ``(B, H*W, C)`` (``(B, H, W, C)`` when ``channels_last``); ``(B, D)`` becomes ``(B, 1, D)``.
    The forward pass stops after the deepest requested layer.

    Parameters
    ----------
    module : nn.Module
    architecture : str
    layer_names : list of str
        Dotted submodule names (as in ``module.named_modules()``), shallow to deep.
    token_layout : TokenLayout
    preprocess : Preprocess
    channels_last : bool
        Hooked 4-D outputs are ``(B, H, W, C)`` (e.g. Swin blocks).
    final_norm : nn.Module, optional
        Applied to every hooked layer's tokens of its width (e.g. a torchvision ViT's
        ``encoder.ln``, a timm ViT's ``norm``); layers of another width are left as they are.
    call : callable, optional
        How to run the module on images (default ``module(images)``).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        architecture: str,
        layer_names: Sequence[str],
        token_layout: TokenLayout,
        preprocess: ImagePreprocessing,
        channels_last: bool = False,
        call: Callable[[nn.Module, Tensor], Any] | None = None,
        final_norm: nn.Module | None = None,
    ) -> None:
        known = dict(module.named_modules())
        missing = [name for name in layer_names if name not in known]
        if missing:
            examples = ", ".join(list(known)[1:8])
            raise ValueError(
                f"{architecture}: no submodule named {missing[:5]}; names look like: {examples}"
            )
        self.channels_last = channels_last
        self.final_norm = final_norm
        self._call = call or (lambda network, images: network(images))
        super().__init__(
            module,
            architecture=architecture,
            layer_names=layer_names,
            token_layout=token_layout,
            preprocess=preprocess,
        )

    def _extraction_signature(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last, "final_norm": _norm_name(self.final_norm)}

    def _extract(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        modules = dict(self.module.named_modules())
        captured: dict[int, Tensor] = {}
        last = max(layers)
        handles = []

        def make_hook(layer: int) -> Callable[..., None]:
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                captured[layer] = output_to_tokens(
                    output, self.layer_names[layer], channels_last=self.channels_last
                )
                if layer == last:
                    raise _StopForward

            return hook

        for layer in layers:
            handles.append(modules[self.layer_names[layer]].register_forward_hook(make_hook(layer)))
        try:
            self._call(self.module, images)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        not_run = [self.layer_names[layer] for layer in layers if layer not in captured]
        if not_run:
            raise RuntimeError(
                f"{self.architecture}: the forward pass never ran the layers {not_run}; "
                "pick submodules that the model's forward actually calls"
            )
        return [_normed(self.final_norm, captured[layer]) for layer in layers]


class HuggingFaceProbeModel(ProbeModel):
    """A ``transformers`` vision model read through ``output_hidden_states`` (block outputs).

    Parameters
    ----------
    module : nn.Module
        A ``transformers`` model (``AutoModel``).
    final_norm : nn.Module, optional
        The model's final norm (``layernorm`` of ViT-like models), applied to every block's
        hidden state as the model applies it to its last one.
    **kwargs
        As :class:`ProbeModel`.
    """

    def __init__(self, module: nn.Module, *, final_norm: nn.Module | None = None, **kwargs: Any):
        self.final_norm = final_norm
        super().__init__(module, **kwargs)

    def _extraction_signature(self) -> dict[str, Any]:
        return {"final_norm": _norm_name(self.final_norm)}

    def _extract(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        hidden = self.module(pixel_values=images, output_hidden_states=True).hidden_states
        # hidden_states[0] is the embedding output; block i is hidden_states[i + 1].
        return [
            _normed(self.final_norm, output_to_tokens(hidden[layer + 1], self.layer_names[layer]))
            for layer in layers
        ]


def _normed(norm: nn.Module | None, tokens: Tensor) -> Tensor:
    """``norm(tokens)`` over the last axis; the tokens themselves when there is no norm or
    the norm is over another width (a hooked sub-layer, a stage of a convnet)."""
    if norm is None:
        return tokens
    shape = getattr(norm, "normalized_shape", None)
    if shape is not None and tuple(shape) != tuple(tokens.shape[-len(shape) :]):
        return tokens
    return norm(tokens)


def _norm_name(norm: nn.Module | None) -> str | None:
    return None if norm is None else type(norm).__name__


def final_layer_norm(module: nn.Module | None, width: int | None = None) -> nn.Module | None:
    """``module`` when it is a LayerNorm-like final norm (over ``width`` if given), else None.

    timm and brainalign ViTs keep theirs as ``norm`` (an ``nn.Identity`` when the model pools
    through ``fc_norm`` instead); only a norm with a ``normalized_shape`` is applied.
    """
    shape = getattr(module, "normalized_shape", None)
    if shape is None or len(tuple(shape)) != 1:
        return None
    return module if width is None or tuple(shape) == (width,) else None


def spatial_to_tokens(feature_map: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C); 3-D inputs are returned unchanged."""
    if feature_map.ndim == 4:
        return feature_map.flatten(2).transpose(1, 2)
    return feature_map


def output_to_tokens(output: Any, layer_name: str, *, channels_last: bool = False) -> Tensor:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise ValueError(
            f"layer {layer_name!r} returned a {type(output).__name__}, not a tensor; "
            "hook a submodule that returns a tensor"
        )
    if output.ndim == 4:
        if channels_last:
            return output.flatten(1, 2)  # (B, H, W, C) -> (B, H*W, C)
        return spatial_to_tokens(output)  # (B, C, H, W) -> (B, H*W, C)
    if output.ndim == 3:
        return output  # (B, T, D)
    if output.ndim == 2:
        return output.unsqueeze(1)  # (B, 1, D)
    raise ValueError(
        f"layer {layer_name!r} returned shape {tuple(output.shape)}; expected 2-4 dims"
    )
