"""Load any vision model for probing, safely, behind one wrapper: :class:`ProbeModel`.

Accepted specs (see :func:`load_probe_model`):

- a brainalign teacher-export folder (``meta.json`` + ``model.safetensors``);
- a brainalign Lightning checkpoint ``*.ckpt`` (teacher or student backbone);
- ``timm:<name>`` or ``torchvision:<name>`` with a local weights file (nothing is downloaded);
- a Hugging Face model folder on disk (``config.json`` + weights; needs ``transformers``);
- any ``nn.Module`` given in Python (hooks on named submodules).

Every :class:`ProbeModel` says how to preprocess images (:class:`Preprocess`), which token is
which (:class:`TokenLayout`) and who it is (:attr:`ProbeModel.identity`, a hash of the
architecture and the weights' bytes used in feature cache keys), and returns per-layer tokens
``(B, T, D)`` from :meth:`ProbeModel.extract`.

Example::

    model = load_probe_model("runs/demo/exports/step_0000100")
    tokens = model.extract(model.preprocess(images_uint8), layers=[0, 3])
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from brainalign.models.backbone import DinoBackbone, create_backbone
from brainalign.models.export import (
    META_FILE,
    WEIGHTS_FILE,
    load_state_dict_checked,
    load_teacher_export,
)
from brainalign.utils.reading import read_file

__all__ = [
    "ACCEPTED_SPECS",
    "DinoProbeModel",
    "HookProbeModel",
    "Preprocess",
    "ProbeModel",
    "TimmProbeModel",
    "TokenLayout",
    "load_lightning_backbone",
    "load_probe_model",
    "read_weights_file",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ACCEPTED_SPECS = (
    "a brainalign teacher-export folder (meta.json + model.safetensors)",
    "a brainalign Lightning checkpoint file ending in .ckpt",
    "'timm:<model name>' with weights='<local .safetensors/.pth/.pt/.bin file>'",
    "'torchvision:<model name>' with weights='<local .safetensors/.pth/.pt/.bin file>'",
    "a Hugging Face model folder on disk (config.json + model.safetensors or pytorch_model.bin)",
    "an nn.Module object (with layer_names=[...], or a `blocks`/`layers` child list)",
)

_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_SAFETENSORS_SUFFIX = ".safetensors"


# ---------------------------------------------------------------------------- descriptions
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


@dataclass(frozen=True)
class Preprocess:
    """How images become model input; every field enters feature cache keys.

    Images are scaled to [0, 1], their shorter side resized to ``round(resolution / crop_pct)``
    (antialiased), centre-cropped to ``resolution x resolution``, then normalised.

    Attributes
    ----------
    resolution : int
        Side of the square model input, in pixels.
    mean, std : tuple of 3 float
        Per-channel normalisation, on the [0, 1] scale.
    crop_pct : float
        Fraction of the resized shorter side kept by the centre crop (1.0: whole image).
    interpolation : {"bicubic", "bilinear", "nearest"}
    """

    resolution: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 1.0
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.resolution < 1:
            raise ValueError(
                f"resolution must be a positive number of pixels, got {self.resolution}"
            )
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(
                "interpolation must be 'bicubic', 'bilinear' or 'nearest', "
                f"got {self.interpolation!r}"
            )
        object.__setattr__(self, "mean", tuple(float(value) for value in self.mean))
        object.__setattr__(self, "std", tuple(float(value) for value in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0; got {self.mean}, {self.std}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (for cache keys and reports)."""
        return asdict(self)

    @property
    def resize_to(self) -> int:
        """Shorter-side length before the centre crop."""
        return math.floor(self.resolution / self.crop_pct + 0.5)

    def __call__(self, images: Tensor) -> Tensor:
        """Resize, crop and normalise a batch.

        Parameters
        ----------
        images : Tensor of shape (B, 3, H, W), uint8 (0..255) or float (0..1)

        Returns
        -------
        Tensor of shape (B, 3, resolution, resolution), float32
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.contiguous()  # cheap for uint8; later ops then run on a plain layout
        if x.dtype != torch.uint8 and x.dtype != torch.float32:
            x = x.to(torch.float32)
        unit_scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
        if min(x.shape[-2:]) != self.resize_to:
            mode = InterpolationMode(self.interpolation)
            x = x.to(torch.float32).mul_(unit_scale) if unit_scale != 1.0 else x.float()
            x = TF.resize(x, [self.resize_to], interpolation=mode, antialias=True)
            if mode == InterpolationMode.BICUBIC:
                x = x.clamp_(0.0, 1.0)  # bicubic overshoots; PIL-based pipelines clip
            unit_scale = 1.0
        x = TF.center_crop(x, [self.resolution, self.resolution])  # (B, 3, R, R)
        mean = torch.tensor(self.mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
        # One fused pass, a new tensor (the caller's is never modified):
        # (x * unit_scale - mean) / std
        return torch.addcmul(-mean / std, x, unit_scale / std)


# ---------------------------------------------------------------------------- the wrapper
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
    preprocess : Preprocess
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        architecture: str,
        layer_names: Sequence[str],
        token_layout: TokenLayout,
        preprocess: Preprocess,
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
        versions = _version_stamp(state)
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
        self, backbone: DinoBackbone, *, norm: bool = True, preprocess: Preprocess | None = None
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
    preprocess : Preprocess, optional
        Default: timm's data config (resolution, mean/std, interpolation), no crop.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        *,
        norm: bool = True,
        preprocess: Preprocess | None = None,
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
            from timm.data import resolve_data_config

            config = resolve_data_config({}, model=model)
            interpolation = config.get("interpolation", "bicubic")
            preprocess = Preprocess(
                resolution=int(config["input_size"][-1]),
                mean=tuple(config["mean"]),
                std=tuple(config["std"]),
                interpolation=interpolation
                if interpolation in ("bilinear", "nearest")
                else "bicubic",
            )
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
                tokens.append(torch.cat([prefix, _spatial_to_tokens(spatial)], dim=1))
            else:
                tokens.append(_spatial_to_tokens(output))  # (B, h*w, C)
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
        preprocess: Preprocess,
        channels_last: bool = False,
        call: Callable[[nn.Module, Tensor], Any] | None = None,
    ) -> None:
        known = dict(module.named_modules())
        missing = [name for name in layer_names if name not in known]
        if missing:
            examples = ", ".join(list(known)[1:8])
            raise ValueError(
                f"{architecture}: no submodule named {missing[:5]}; names look like: {examples}"
            )
        self.channels_last = channels_last
        self._call = call or (lambda network, images: network(images))
        super().__init__(
            module,
            architecture=architecture,
            layer_names=layer_names,
            token_layout=token_layout,
            preprocess=preprocess,
        )

    def _extraction_signature(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last}

    def _extract(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        modules = dict(self.module.named_modules())
        captured: dict[int, Tensor] = {}
        last = max(layers)
        handles = []

        def make_hook(layer: int) -> Callable[..., None]:
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                captured[layer] = _output_to_tokens(
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
        return [captured[layer] for layer in layers]


class _HuggingFaceProbeModel(ProbeModel):
    """A ``transformers`` vision model read through ``output_hidden_states`` (block outputs)."""

    def _extract(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        hidden = self.module(pixel_values=images, output_hidden_states=True).hidden_states
        # hidden_states[0] is the embedding output; block i is hidden_states[i + 1].
        return [_output_to_tokens(hidden[layer + 1], self.layer_names[layer]) for layer in layers]


# ---------------------------------------------------------------------------- loading
def load_probe_model(
    spec: str | Path | nn.Module | ProbeModel,
    *,
    weights: str | Path | None = None,
    allow_pickle: bool = False,
    network: Literal["teacher", "student"] = "teacher",
    layer_names: Sequence[str] | None = None,
    token_layout: TokenLayout | None = None,
    resolution: int | None = None,
    crop_pct: float = 1.0,
) -> ProbeModel:
    """Load a model for probing, without downloading and without unpickling arbitrary objects.

    Parameters
    ----------
    spec : str, Path, nn.Module or ProbeModel
        One of :data:`ACCEPTED_SPECS`.
    weights : str or Path, optional
        Local weights file for ``timm:``/``torchvision:`` specs and ``nn.Module`` objects
        (``.safetensors``, or ``.pth/.pt/.bin`` read with ``torch.load(weights_only=True)``).
        ``"random"`` keeps a seeded random initialisation (seed 0) on purpose.
    allow_pickle : bool
        Allow ``torch.load(weights_only=False)`` for files holding pickled Python objects. This
        runs arbitrary code stored in the file: only for files you trust.
    network : {"teacher", "student"}
        Which backbone of a Lightning ``.ckpt`` to load.
    layer_names : list of str, optional
        Submodules to probe (``nn.Module`` and ``torchvision:`` specs); overrides the default.
    token_layout : TokenLayout, optional
        For ``nn.Module`` specs: which tokens are class/register tokens (default: none).
    resolution : int, optional
        Input resolution; default the model's own (required for a bare ``nn.Module`` that does
        not declare one).
    crop_pct : float
        Centre-crop fraction (1.0 keeps the whole image).

    Returns
    -------
    ProbeModel
        In eval mode, on the CPU (or where an ``nn.Module`` already was).

    Raises
    ------
    ValueError
        For an unknown spec (the message lists the accepted forms), weights that do not fit
        the architecture, or a file that needs ``allow_pickle=True``.
    """
    if isinstance(spec, ProbeModel):
        return spec
    if network not in ("teacher", "student"):
        raise ValueError(f"network must be 'teacher' or 'student', got {network!r}")
    overrides = {"resolution": resolution, "crop_pct": crop_pct}
    if isinstance(spec, nn.Module):
        if weights is not None:
            state = read_weights_file(weights, allow_pickle=allow_pickle)
            load_state_dict_checked(spec, state, source=str(weights))
        return _from_module(spec, layer_names, token_layout, **overrides)
    text = str(spec)
    for prefix, loader in (("timm:", _load_timm), ("torchvision:", _load_torchvision)):
        if text.startswith(prefix):
            name = text[len(prefix) :]
            if not name:
                raise ValueError(f"{text!r} names no model: write e.g. {prefix}resnet50")
            return loader(name, weights, allow_pickle, layer_names, **overrides)
    if weights is not None:
        raise ValueError(
            f"weights= is only used with timm:/torchvision: specs and nn.Module objects; "
            f"{text!r} carries its own weights"
        )
    path = Path(text.removeprefix("hf:"))
    if path.is_dir():
        if (path / META_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
            backbone, _ = load_teacher_export(path)
            return DinoProbeModel(backbone, preprocess=_preprocess_for(backbone, **overrides))
        if (path / "config.json").is_file():
            return _load_huggingface(path, allow_pickle, **overrides)
        raise ValueError(
            f"folder {path} is neither a brainalign export ({META_FILE} + {WEIGHTS_FILE}) nor a "
            f"Hugging Face model folder (config.json + weights). Accepted specs: "
            + "; ".join(ACCEPTED_SPECS)
        )
    if path.is_file() and path.suffix == ".ckpt":
        backbone = load_lightning_backbone(path, network=network, allow_pickle=allow_pickle)
        return DinoProbeModel(backbone, preprocess=_preprocess_for(backbone, **overrides))
    where = "no such file or folder" if not path.exists() else "not a recognised model file"
    raise ValueError(
        f"cannot load a model from {text!r} ({where}). Accepted specs: " + "; ".join(ACCEPTED_SPECS)
    )


def load_lightning_backbone(
    path: str | Path,
    *,
    network: Literal["teacher", "student"] = "teacher",
    allow_pickle: bool = False,
) -> DinoBackbone:
    """The teacher (or student) backbone of a brainalign Lightning checkpoint.

    The architecture comes from ``hyper_parameters["backbone"]`` (and ``img_size``), the
    weights from the ``state_dict`` keys under ``teacher.backbone.`` (or ``student.backbone.``).
    """
    checkpoint = _torch_load(Path(path), allow_pickle=allow_pickle)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint: it has no 'state_dict' entry")
    hyper_parameters = checkpoint.get("hyper_parameters") or {}
    architecture = _get_field(hyper_parameters, "backbone")
    if not isinstance(architecture, str):
        raise ValueError(
            f"{path}: hyper_parameters has no 'backbone' name; was it written by brainalign's "
            "DINOv3Module? (other checkpoints: use timm:/torchvision: specs with weights=)"
        )
    prefix = f"{network}.backbone."
    state = {
        key[len(prefix) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }
    if not state:
        found = sorted({key.split(".")[0] for key in checkpoint["state_dict"]})
        raise ValueError(
            f"{path}: no weights under {prefix!r} in state_dict (top-level names: {found})"
        )
    img_size = _get_field(hyper_parameters, "img_size")
    backbone = create_backbone(architecture, img_size=img_size)
    load_state_dict_checked(backbone, state, source=f"{path} [{prefix}*]")
    return backbone.eval()


def read_weights_file(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Tensor]:
    """Read a flat ``{name: tensor}`` state dict from a local file, safely.

    ``.safetensors`` files are read with safetensors; ``.pth/.pt/.bin/.ckpt`` with
    ``torch.load(weights_only=True)``. Common wrappers are unwrapped (``state_dict``, ``model``,
    ``module``) and a DDP ``module.`` prefix is stripped.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, unknown suffix, no tensors, or pickled objects without ``allow_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == _SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        return read_file(lambda: load_file(str(path)), path, "a safetensors weights file")
    if path.suffix not in _PICKLE_SUFFIXES:
        raise ValueError(
            f"unknown weights format {path.suffix!r} for {path}: use .safetensors "
            f"or one of {', '.join(_PICKLE_SUFFIXES)}"
        )
    loaded = _torch_load(path, allow_pickle=allow_pickle)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors")
    state = {str(key): value for key, value in loaded.items() if isinstance(value, Tensor)}
    if not state:
        raise ValueError(f"{path} holds no tensors (keys: {list(loaded)[:8]})")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


# ---------------------------------------------------------------------------- per source
def _load_timm(
    name: str,
    weights: str | Path | None,
    allow_pickle: bool,
    layer_names: Sequence[str] | None,
    *,
    resolution: int | None,
    crop_pct: float,
) -> ProbeModel:
    import timm

    import brainalign.models.registry  # noqa: F401  (registers the tiny test ViTs)

    if not timm.is_model(name):
        raise ValueError(
            f"unknown timm model {name!r}; see timm.list_models() (e.g. timm:resnet50, "
            "timm:vit_small_patch16_dinov3)"
        )
    _require_weights(weights, f"timm:{name}")
    with _seeded():
        model = timm.create_model(name, pretrained=False)
    if weights != "random":
        state = read_weights_file(weights, allow_pickle=allow_pickle)
        classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        try:
            _load_tolerating_classifier(model, state, str(weights), _as_prefixes(classifier))
        except ValueError:
            converted = _timm_converted_state(model, state)
            if converted is None:
                raise
            _load_tolerating_classifier(model, converted, str(weights), _as_prefixes(classifier))
    model.eval()
    if layer_names is not None:
        return _from_module(
            model, layer_names, None, resolution=resolution, crop_pct=crop_pct, name=f"timm:{name}"
        )
    probe = TimmProbeModel(model, name)
    probe.preprocess = _override(probe.preprocess, resolution, crop_pct)
    return probe


def _load_torchvision(
    name: str,
    weights: str | Path | None,
    allow_pickle: bool,
    layer_names: Sequence[str] | None,
    *,
    resolution: int | None,
    crop_pct: float,
) -> ProbeModel:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as error:
        raise ValueError(
            f"unknown torchvision model {name!r}; see torchvision.models.list_models() "
            "(e.g. torchvision:resnet50)"
        ) from error
    _require_weights(weights, f"torchvision:{name}")
    with _seeded():
        model = builder(weights=None)
    if weights != "random":
        state = read_weights_file(weights, allow_pickle=allow_pickle)
        _load_tolerating_classifier(model, state, str(weights), ("fc.", "classifier.", "heads."))
    model.eval()
    names = list(layer_names) if layer_names is not None else _torchvision_layers(model, name)
    is_vit = name.startswith("vit_")
    if is_vit and resolution is None:
        resolution = int(model.image_size)
    return HookProbeModel(
        model,
        architecture=f"torchvision:{name}",
        layer_names=names,
        token_layout=TokenLayout(has_cls=is_vit),
        preprocess=Preprocess(
            resolution=resolution or 224, crop_pct=crop_pct, interpolation="bilinear"
        ),
        channels_last=name.startswith("swin"),
    )


def _torchvision_layers(model: nn.Module, name: str) -> list[str]:
    """Default probed layers: residual blocks, encoder layers or feature-stage blocks."""
    if all(hasattr(model, f"layer{stage}") for stage in range(1, 5)):  # ResNet family
        return [
            f"layer{stage}.{block}"
            for stage in range(1, 5)
            for block, _ in getattr(model, f"layer{stage}").named_children()
        ]
    encoder_layers = getattr(getattr(model, "encoder", None), "layers", None)
    if isinstance(encoder_layers, nn.Sequential):  # ViT
        return [f"encoder.layers.{child}" for child, _ in encoder_layers.named_children()]
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):  # ConvNeXt, EfficientNet, MobileNet, VGG, Swin
        names = []
        for child_name, child in features.named_children():
            # Split a stage into its blocks (modules with submodules and weights), but keep
            # a conv-norm-activation unit whole so that its output is post-activation.
            blocks = [
                block_name
                for block_name, block in child.named_children()
                if any(True for _ in block.children()) and any(True for _ in block.parameters())
            ]
            if isinstance(child, nn.Sequential) and len(blocks) >= 2:
                names.extend(f"features.{child_name}.{block}" for block in blocks)
            elif any(True for _ in child.parameters()):
                names.append(f"features.{child_name}")
        return names
    raise ValueError(
        f"no default layers for torchvision:{name}; pass layer_names=[...] with submodule "
        f"names such as {[n for n, _ in model.named_children()][:6]}"
    )


def load_huggingface_module(folder: Path, allow_pickle: bool = False) -> tuple[nn.Module, Any]:
    """``transformers.AutoModel`` from a local folder, read safely; returns (module, config).

    No download (``local_files_only``), no remote code; a ``pytorch_model.bin`` is first read
    with ``torch.load(weights_only=True)`` so that pickled objects are refused; weights that do
    not fit ``config.json`` are refused instead of being filled in at random.
    """
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            f"{folder} is a Hugging Face model folder; reading it needs the transformers "
            "package: pip install transformers"
        ) from error
    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors:
        for weights_file in folder.glob("pytorch_model*.bin"):
            _torch_load(weights_file, allow_pickle=allow_pickle)  # fail early on pickled objects
    with _quiet_transformers(transformers):
        model, loading = read_file(
            lambda: transformers.AutoModel.from_pretrained(
                str(folder),
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=has_safetensors,
                output_loading_info=True,
            ),
            folder,
            "a Hugging Face model folder",
            "check config.json and the weights file in it",
            passthrough=(ImportError,),
        )
    _check_huggingface_loading(folder, loading)
    return model.eval(), model.config


def _load_huggingface(
    folder: Path, allow_pickle: bool, *, resolution: int | None, crop_pct: float
) -> ProbeModel:
    model, config = load_huggingface_module(folder, allow_pickle)
    processor = _read_json(folder / "preprocessor_config.json")
    size = processor.get("crop_size") or processor.get("size") or {}
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    native = int(size or getattr(config, "image_size", 224) or 224)
    preprocess = Preprocess(
        resolution=resolution or native,
        mean=tuple(processor.get("image_mean", IMAGENET_MEAN)),
        std=tuple(processor.get("image_std", IMAGENET_STD)),
        crop_pct=crop_pct,
    )
    with torch.no_grad():
        probe_input = torch.zeros(1, 3, preprocess.resolution, preprocess.resolution)
        n_hidden = len(model(pixel_values=probe_input, output_hidden_states=True).hidden_states)
    model_type = str(getattr(config, "model_type", ""))
    has_cls = model_type in {
        "vit", "deit", "dinov2", "dinov2_with_registers", "dinov3_vit", "beit", "data2vec-vision",
        "vit_mae", "clip_vision_model", "vit_msn",
    }  # fmt: skip
    return _HuggingFaceProbeModel(
        model,
        architecture=f"hf:{type(model).__name__}:{model_type}",
        layer_names=[f"hidden_states.{index + 1}" for index in range(n_hidden - 1)],
        token_layout=TokenLayout(
            has_cls=has_cls, n_registers=int(getattr(config, "num_register_tokens", 0) or 0)
        ),
        preprocess=preprocess,
    )


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """Silence transformers' load report and progress bars (loading is checked here instead)."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _check_huggingface_loading(folder: Path, loading: dict[str, Any]) -> None:
    """Refuse a model whose weights did not all come from the folder.

    ``from_pretrained`` initialises missing weights at random and only logs it, which would
    make the probe score a partly random network. Only the pooler that ``AutoModel`` adds to
    ViT-like models may be missing: it does not touch the hidden states that are probed.
    """
    missing = sorted(
        key for key in loading.get("missing_keys", ()) if not key.startswith("pooler.")
    )
    mismatched = sorted(str(entry) for entry in loading.get("mismatched_keys", ()))
    if missing or mismatched:
        parts = []
        if missing:
            listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            parts.append(f"{len(missing)} weights missing ({listed})")
        if mismatched:
            listed = ", ".join(mismatched[:3]) + (", ..." if len(mismatched) > 3 else "")
            parts.append(f"{len(mismatched)} with other shapes ({listed})")
        raise ValueError(
            f"{folder}: the weights file does not fit config.json: {'; '.join(parts)}. "
            "Probing would use randomly initialised weights; check that the weights belong to "
            "this config."
        )


def _from_module(
    module: nn.Module,
    layer_names: Sequence[str] | None,
    token_layout: TokenLayout | None,
    *,
    resolution: int | None,
    crop_pct: float,
    name: str | None = None,
) -> ProbeModel:
    """Wrap an in-memory module: brainalign and timm models natively, others with hooks."""
    if isinstance(module, DinoBackbone) and layer_names is None and token_layout is None:
        return DinoProbeModel(
            module, preprocess=_preprocess_for(module, resolution=resolution, crop_pct=crop_pct)
        )
    is_timm = type(module).__module__.startswith("timm.") and hasattr(module, "feature_info")
    if is_timm and layer_names is None and token_layout is None:
        architecture = (getattr(module, "pretrained_cfg", None) or {}).get("architecture")
        probe = TimmProbeModel(module, architecture or type(module).__name__)
        probe.preprocess = _override(probe.preprocess, resolution, crop_pct)
        return probe
    if layer_names is None:
        layer_names = _default_block_names(module)
    native = _declared_resolution(module)
    if resolution is None and native is None:
        raise ValueError(
            f"{type(module).__name__} does not declare its input size: pass resolution=<pixels>"
        )
    return HookProbeModel(
        module,
        architecture=name or f"module:{type(module).__module__}.{type(module).__qualname__}",
        layer_names=layer_names,
        token_layout=token_layout or TokenLayout(has_cls=False),
        preprocess=Preprocess(resolution=int(resolution or native), crop_pct=crop_pct),
    )


def _default_block_names(module: nn.Module) -> list[str]:
    for attribute in ("blocks", "layers"):
        child = getattr(module, attribute, None)
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 0:
            return [f"{attribute}.{index}" for index, _ in child.named_children()]
    children = [name for name, _ in module.named_children()]
    raise ValueError(
        f"{type(module).__name__} has no `blocks` or `layers` list: pass layer_names=[...] "
        f"naming the submodules to probe (its children: {children[:8]})"
    )


# ---------------------------------------------------------------------------- helpers
def _preprocess_for(
    backbone: DinoBackbone, *, resolution: int | None, crop_pct: float
) -> Preprocess:
    return _override(DinoProbeModel(backbone).preprocess, resolution, crop_pct)


def _override(preprocess: Preprocess, resolution: int | None, crop_pct: float) -> Preprocess:
    values = preprocess.as_dict()
    values["crop_pct"] = crop_pct
    if resolution is not None:
        values["resolution"] = int(resolution)
    return Preprocess(**values)


def _declared_resolution(module: nn.Module) -> int | None:
    img_size = getattr(getattr(module, "patch_embed", None), "img_size", None)
    if img_size is not None:
        return int(img_size[0] if isinstance(img_size, (tuple, list)) else img_size)
    input_size = (getattr(module, "pretrained_cfg", None) or {}).get("input_size")
    return int(input_size[-1]) if input_size else None


def _require_weights(weights: str | Path | None, spec: str) -> None:
    if weights is None:
        raise ValueError(
            f"{spec} needs weights='<local file>' (.safetensors, .pth, .pt or .bin): nothing is "
            "downloaded. Pass weights='random' to probe a randomly initialised network on purpose."
        )


@contextlib.contextmanager
def _seeded(seed: int = 0) -> Iterator[None]:
    """Deterministic random initialisation without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _as_prefixes(classifier: str | Sequence[str] | None) -> tuple[str, ...]:
    if classifier is None:
        return ()
    names = [classifier] if isinstance(classifier, str) else list(classifier)
    return tuple(f"{name}." for name in names)


def _load_tolerating_classifier(
    module: nn.Module, state: dict[str, Tensor], source: str, classifier: tuple[str, ...]
) -> None:
    """Strict load, except that classifier weights may be absent from (or extra in) the file.

    Absent classifier weights keep the seeded initialisation; the probe never reads them.
    """
    expected = module.state_dict()
    filled = {
        key: value
        for key, value in state.items()
        if key in expected or not key.startswith(classifier)
    }
    for key, value in expected.items():
        if key not in filled and classifier and key.startswith(classifier):
            filled[key] = value
    load_state_dict_checked(module, filled, source=source)


def _timm_converted_state(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """Apply the timm model file's ``checkpoint_filter_fn`` (original-format checkpoints)."""
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return None
    try:
        return filter_fn(state, model)
    except Exception:  # a conversion that does not apply: report the original mismatch
        return None


def _torch_load(path: Path, *, allow_pickle: bool) -> Any:
    """``torch.load(weights_only=True)``; brainalign config objects are read as inert records.

    Lightning checkpoints of brainalign store config dataclasses (``brainalign.*``) in their
    hyper-parameters. Those names are mapped to an inert placeholder class that only keeps its
    fields, so nothing from the file runs. Any other Python object needs ``allow_pickle``.
    """
    try:
        return read_file(
            lambda: torch.load(path, map_location="cpu", weights_only=True),
            path,
            "a PyTorch weights file",
            passthrough=(pickle.UnpicklingError,),
        )
    except pickle.UnpicklingError as error:
        first_error = error
    unsafe = _unsafe_globals(path)
    if unsafe and all(name.startswith("brainalign.") for name in unsafe):
        placeholders = [(_inert_record_class(name), name) for name in unsafe]
        with torch.serialization.safe_globals(placeholders):
            return torch.load(path, map_location="cpu", weights_only=True)
    if allow_pickle:
        warnings.warn(
            f"loading {path} with allow_pickle=True: unpickling can run arbitrary code",
            stacklevel=3,
        )
        return torch.load(path, map_location="cpu", weights_only=False)
    listed = ", ".join(unsafe[:6]) if unsafe else str(first_error).splitlines()[0]
    raise ValueError(
        f"{path} holds pickled Python objects besides tensors ({listed}); loading them would "
        "run code stored in the file. If you trust where it came from, pass allow_pickle=True "
        "(CLI: --allow-pickle) at your own risk; better, re-save the weights as .safetensors."
    ) from first_error


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy (non-zip) files cannot be scanned
        return []


def _inert_record_class(qualified_name: str) -> type:
    """A class that stores whatever the unpickler gives it and does nothing else."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self.__dict__.update({"args": args, **kwargs})

    short = qualified_name.rsplit(".", 1)[-1]
    return type(short, (), {"__init__": __init__, "__module__": "brainalign.probe.models"})


def _get_field(container: Any, key: str) -> Any:
    if isinstance(container, dict):
        return container.get(key)
    return getattr(container, key, None)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def hash_weights(description: dict[str, Any], state: dict[str, Tensor]) -> str:
    """sha256 (hex) of a JSON description and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
    for key in sorted(state):
        tensor = state[key].detach()
        digest.update(f"\0{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        flat = tensor.to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    return digest.hexdigest()


def _version_stamp(state: dict[str, Tensor]) -> tuple[tuple[int, int], ...] | None:
    """(id, in-place version) of every tensor; None when some tensor has no version counter."""
    try:
        return tuple((id(tensor), tensor._version) for tensor in state.values())
    except RuntimeError:  # inference-mode tensors track no versions: always rehash
        return None


def _spatial_to_tokens(feature_map: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C); 3-D inputs are returned unchanged."""
    if feature_map.ndim == 4:
        return feature_map.flatten(2).transpose(1, 2)
    return feature_map


def _output_to_tokens(output: Any, layer_name: str, *, channels_last: bool = False) -> Tensor:
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
        return _spatial_to_tokens(output)  # (B, C, H, W) -> (B, H*W, C)
    if output.ndim == 3:
        return output  # (B, T, D)
    if output.ndim == 2:
        return output.unsqueeze(1)  # (B, 1, D)
    raise ValueError(
        f"layer {layer_name!r} returned shape {tuple(output.shape)}; expected 2-4 dims"
    )
