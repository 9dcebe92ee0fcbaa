"""How images become model input, as each model's authors preprocess them.

Two kinds, one interface (:class:`ImagePreprocessing`):

- :class:`Preprocess`: a batched tensor pipeline run on the model's device (shorter side resized
  to ``floor(resolution / crop_pct)`` with antialiasing, centre crop, normalisation). brainalign
  exports, checkpoints, the training callback and bare ``nn.Module`` objects use it: it is fast
  (one resize per batch, on the GPU when there is one) and brainalign's own models have no
  other preprocessing to follow.
- :class:`PipelinePreprocess`: the authors' own pipeline, run on the host on PIL images: timm's
  ``create_transform`` from the model's data config (``crop_pct``, interpolation, mean/std), a
  Hugging Face image processor (its resampling and resize-then-crop, e.g. DINOv2's 256 then
  224), or a torchvision weights' ``transforms()``. These resize PIL images with PIL, whose
  filters differ from tensor resizing, so only running them gives the same pixels.

Both are described by :meth:`~ImagePreprocessing.as_dict` (part of feature cache keys), expose
``resolution``, ``mean`` and ``std`` (gradient objectives undo the normalisation for their
photometric views), prepare a batch on the host in the loader thread (:meth:`prepare`) and move
it to the device (:meth:`to_device`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImagePreprocessing",
    "LoadedBatch",
    "PipelinePreprocess",
    "Preprocess",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: uint8 images as one array (B, H, W, 3) when they share a size, else a list of (H, W, 3).
LoadedBatch = np.ndarray | list[np.ndarray]


class ImagePreprocessing:
    """The interface of every preprocessing; see the module docstring."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (for cache keys and reports)."""
        raise NotImplementedError

    def prepare(self, images: LoadedBatch) -> Any:
        """Host-side work for one batch (runs in the loader thread)."""
        raise NotImplementedError

    def to_device(self, prepared: Any, device: torch.device) -> Tensor:
        """The model input of a prepared batch: (B, 3, R, R) float32 on ``device``."""
        raise NotImplementedError

    def batch(self, images: LoadedBatch, device: torch.device) -> Tensor:
        """``to_device(prepare(images), device)``."""
        return self.to_device(self.prepare(images), device)


@dataclass(frozen=True)
class Preprocess(ImagePreprocessing):
    """Batched tensor preprocessing; every field enters feature cache keys.

    Images are scaled to [0, 1], their shorter side resized to ``floor(resolution /
    crop_pct)`` (antialiased; timm's rule), centre-cropped to ``resolution x resolution``, then
    normalised.

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
        return asdict(self)

    @property
    def resize_to(self) -> int:
        """Shorter-side length before the centre crop (``floor``, as timm computes it)."""
        return math.floor(self.resolution / self.crop_pct + 1e-9)

    def prepare(self, images: LoadedBatch) -> LoadedBatch:
        return images  # everything happens on the device

    def to_device(self, prepared: LoadedBatch, device: torch.device) -> Tensor:
        if isinstance(prepared, np.ndarray):
            batch = torch.from_numpy(prepared).to(device).permute(0, 3, 1, 2)  # (B, 3, H, W)
            return self(batch)
        return torch.cat(
            [self(torch.from_numpy(image).to(device).permute(2, 0, 1)[None]) for image in prepared]
        )

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

    def with_overrides(self, overrides: Mapping[str, Any]) -> Preprocess:
        """A copy with some fields replaced (keys: resolution, crop_pct, interpolation, mean,
        std)."""
        return Preprocess(**{**self.as_dict(), **dict(overrides)})


@dataclass(frozen=True, eq=False)
class PipelinePreprocess(ImagePreprocessing):
    """A model authors' own preprocessing, run on the host on PIL images.

    Parameters
    ----------
    transform : callable
        list of PIL images -> Tensor of shape (B, 3, R, R), float32 (normalised).
    description : mapping
        What the pipeline does (its source and settings); enters feature cache keys.
    resolution : int
    mean, std : tuple of 3 float
        The normalisation the pipeline applies.
    """

    transform: Callable[[list[Image.Image]], Tensor]
    description: Mapping[str, Any]
    resolution: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    _key: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        key = _json_ready({"pipeline": dict(self.description)})
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "mean", tuple(float(value) for value in self.mean))
        object.__setattr__(self, "std", tuple(float(value) for value in self.std))

    def __repr__(self) -> str:
        source = self.description.get("source", "pipeline")
        return f"PipelinePreprocess(source={source!r}, resolution={self.resolution})"

    def as_dict(self) -> dict[str, Any]:
        return dict(self._key)

    def prepare(self, images: LoadedBatch) -> Tensor:
        pil = [Image.fromarray(np.ascontiguousarray(image)) for image in images]
        pixels = self.transform(pil)  # (B, 3, R, R)
        if tuple(pixels.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(
                f"the preprocessing {self!r} made {tuple(pixels.shape[-2:])} inputs, not "
                f"{self.resolution}x{self.resolution}"
            )
        return pixels.to(torch.float32)

    def to_device(self, prepared: Tensor, device: torch.device) -> Tensor:
        return prepared.to(device, non_blocking=device.type == "cuda")

    def __call__(self, images: Tensor) -> Tensor:
        """Preprocess a uint8 batch of shape (B, 3, H, W) (returned on its device)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(
                f"{self!r} takes uint8 images of shape (B, 3, H, W), got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        arrays = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
        return self.prepare(list(arrays)).to(images.device)


def per_image(transform: Callable[[Image.Image], Tensor]) -> Callable[[list[Image.Image]], Tensor]:
    """A batch transform from a one-image transform (timm and torchvision pipelines)."""

    def run(images: list[Image.Image]) -> Tensor:
        return torch.stack([transform(image) for image in images])

    return run


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in sorted(value.items())}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
