"""The preprocessing each model family's authors use, built from the model's own settings.

- timm: ``resolve_data_config`` (the model's ``pretrained_cfg``: input size, ``crop_pct``,
  ``crop_mode``, interpolation, mean/std) and ``create_transform(is_training=False)``, the
  transform timm's own validation script runs. The input size is the one the model was built
  with (``patch_embed.img_size`` of a fixed-size ViT), not the pretrained config's default.
- Hugging Face: the folder's image processor (``AutoImageProcessor``), called as the model card
  does (its resampling filter, resize then centre crop).
- torchvision: the weights enum's ``transforms()`` (resize 256 then crop 224, bilinear, for
  most ImageNet models), known offline from the model name.

Overrides (:class:`~brainalign.probe.config.PreprocessConfig`) change the settings these
pipelines are built from; they never replace the pipeline by another one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from brainalign.probe.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PipelinePreprocess,
    Preprocess,
    per_image,
)

__all__ = [
    "declared_input_size",
    "huggingface_pipeline",
    "timm_pipeline",
    "torchvision_pipeline",
]


def declared_input_size(module: nn.Module) -> tuple[int, bool] | None:
    """(side, fixed) of the input a module was built for; None when it declares none.

    ``fixed`` is True for a ViT whose patch embedding only accepts that size (timm's
    ``strict_img_size`` without ``dynamic_img_size``).
    """
    embed = getattr(module, "patch_embed", None)
    img_size = getattr(embed, "img_size", None)
    if img_size is not None:
        side = int(img_size[0] if isinstance(img_size, tuple | list) else img_size)
        dynamic = bool(getattr(module, "dynamic_img_size", False)) or bool(
            getattr(embed, "dynamic_img_pad", False)
        )
        fixed = bool(getattr(embed, "strict_img_size", False)) and not dynamic
        return side, fixed
    input_size = (getattr(module, "pretrained_cfg", None) or {}).get("input_size")
    return (int(input_size[-1]), False) if input_size else None


def check_resolution(name: str, module: nn.Module, resolution: int | None) -> int | None:
    """The declared input side of ``module``, refusing an override a fixed-size ViT rejects."""
    declared = declared_input_size(module)
    if declared is None:
        return resolution
    side, fixed = declared
    if resolution is not None and fixed and resolution != side:
        raise ValueError(
            f"{name} was built for {side}x{side} inputs and its patch embedding accepts no "
            f"other size; preprocess.resolution={resolution} would fail inside the model. Use "
            f"resolution {side}, or build the model with img_size={resolution} (timm: or "
            "dynamic_img_size=True)"
        )
    return side if resolution is None else resolution


def timm_pipeline(model: nn.Module, name: str, overrides: Mapping[str, Any]) -> PipelinePreprocess:
    """timm's evaluation transform for ``model``, with the model's own input size."""
    from timm.data import create_transform, resolve_data_config

    resolution = check_resolution(f"timm:{name}", model, overrides.get("resolution"))
    args: dict[str, Any] = {}
    if resolution is not None:
        args["input_size"] = (3, resolution, resolution)
    for key in ("crop_pct", "interpolation", "mean", "std"):
        if key in overrides:
            args[key] = overrides[key]
    config = resolve_data_config(args, model=model)
    transform = create_transform(**config, is_training=False)
    return PipelinePreprocess(
        transform=per_image(transform),
        description={"source": "timm", **config},
        resolution=int(config["input_size"][-1]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
    )


def torchvision_pipeline(
    name: str, model: nn.Module, overrides: Mapping[str, Any]
) -> PipelinePreprocess | Preprocess:
    """The weights' ``transforms()`` of a torchvision model (settings known offline)."""
    import torchvision
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    try:
        preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    except (ValueError, AttributeError, KeyError):
        preset = None
    if not isinstance(preset, ImageClassification):  # no ImageNet preset: a plain resize
        native = check_resolution(f"torchvision:{name}", model, overrides.get("resolution"))
        native = int(getattr(model, "image_size", native or 224) or 224)
        return Preprocess(resolution=native, interpolation="bilinear").with_overrides(
            {key: value for key, value in overrides.items() if key != "resolution"}
        )
    crop = int(preset.crop_size[0])
    resize = int(preset.resize_size[0])
    native_vit = getattr(model, "image_size", None)
    resolution = int(overrides.get("resolution", crop))
    if native_vit is not None and resolution != int(native_vit):
        raise ValueError(
            f"torchvision:{name} takes {native_vit}x{native_vit} inputs; "
            f"preprocess.resolution={resolution} would fail inside the model"
        )
    if "crop_pct" in overrides or "resolution" in overrides:
        crop_pct = float(overrides.get("crop_pct", crop / resize))
        resize = math.floor(resolution / crop_pct + 1e-9)
    interpolation = overrides.get("interpolation", preset.interpolation.value)
    mean = tuple(overrides.get("mean", preset.mean))
    std = tuple(overrides.get("std", preset.std))
    transform = ImageClassification(
        crop_size=resolution,
        resize_size=resize,
        mean=mean,
        std=std,
        interpolation=InterpolationMode(interpolation),
        antialias=True,
    )
    return PipelinePreprocess(
        transform=per_image(transform),
        description={
            "source": "torchvision",
            "crop_size": resolution,
            "resize_size": resize,
            "interpolation": str(interpolation),
            "mean": mean,
            "std": std,
        },
        resolution=resolution,
        mean=mean,
        std=std,
    )


def huggingface_pipeline(
    folder: Path, config: Any, overrides: Mapping[str, Any]
) -> PipelinePreprocess | Preprocess:
    """The folder's image processor, as its model card calls it.

    A folder without ``preprocessor_config.json`` gets the tensor pipeline at the model's
    ``image_size`` (ImageNet mean/std).
    """
    import transformers

    native = int(getattr(config, "image_size", 224) or 224)
    if not (folder / "preprocessor_config.json").is_file():
        return Preprocess(resolution=native, mean=IMAGENET_MEAN, std=IMAGENET_STD).with_overrides(
            overrides
        )
    processor = transformers.AutoImageProcessor.from_pretrained(
        str(folder), local_files_only=True, trust_remote_code=False
    )
    settings = processor.to_dict()
    call_options: dict[str, Any] = {}
    resolution = overrides.get("resolution")
    crop_size = settings.get("crop_size") if settings.get("do_center_crop") else None
    if resolution is not None:
        if crop_size:
            crop_pct = float(overrides.get("crop_pct", _side(crop_size) / _side(settings["size"])))
            call_options["crop_size"] = {"height": resolution, "width": resolution}
            call_options["size"] = {"shortest_edge": math.floor(resolution / crop_pct + 1e-9)}
        else:
            call_options["size"] = {"height": resolution, "width": resolution}
    elif "crop_pct" in overrides and crop_size:
        side = _side(crop_size)
        call_options["size"] = {"shortest_edge": math.floor(side / overrides["crop_pct"] + 1e-9)}
    if "crop_pct" in overrides and not crop_size and overrides["crop_pct"] != 1.0:
        raise ValueError(
            f"{folder}: its image processor ({type(processor).__name__}) resizes to "
            f"{settings.get('size')} without a centre crop, so preprocess.crop_pct="
            f"{overrides['crop_pct']} has nothing to act on; leave crop_pct unset (or 1.0)"
        )
    for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
        if ours in overrides:
            call_options[theirs] = list(overrides[ours])
    if "interpolation" in overrides:
        call_options["resample"] = _pil_filter(overrides["interpolation"])
    final_side = resolution or _side(crop_size or settings.get("size") or native)

    def transform(images: list) -> Any:
        return processor(images=images, return_tensors="pt", **call_options)["pixel_values"]

    mean = tuple(call_options.get("image_mean", settings.get("image_mean", IMAGENET_MEAN)))
    std = tuple(call_options.get("image_std", settings.get("image_std", IMAGENET_STD)))
    return PipelinePreprocess(
        transform=transform,
        description={
            "source": "huggingface",
            "processor": type(processor).__name__,
            "settings": {key: value for key, value in settings.items() if key != "auto_map"},
            "call_options": call_options,
        },
        resolution=int(final_side),
        mean=mean,
        std=std,
    )


def _side(size: Any) -> int:
    """The output side a processor ``size`` / ``crop_size`` entry describes."""
    if isinstance(size, Mapping):
        for key in ("shortest_edge", "height", "width"):
            if size.get(key):
                return int(size[key])
        raise ValueError(f"cannot read an image size from {dict(size)}")
    return int(size)


def _pil_filter(interpolation: str) -> int:
    from PIL import Image

    filters = {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
    }
    return int(filters[interpolation])
