"""torchvision models: ``torchvision:<name>`` specs with local weights, read through hooks.

Preprocessed with the weights' own ``transforms()`` (known offline from the model name); a ViT's
final LayerNorm (``encoder.ln``) is applied to every block when ``final_norm`` is set.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from brainalign.models.weights import read_weights_file
from brainalign.probe.models.pipelines import torchvision_pipeline
from brainalign.probe.models.sources import (
    LoadRequest,
    ModelSourceEntry,
    load_tolerating_classifier,
    register_model_source,
    require_weights,
    seeded,
)
from brainalign.probe.models.wrappers import HookProbeModel, TokenLayout


def torchvision_layers(model: nn.Module, name: str) -> list[str]:
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


def _builder(spec: str, weights: object) -> tuple[str, Callable[..., nn.Module]]:
    import torchvision

    name = spec[len("torchvision:") :]
    if not name:
        raise ValueError(f"{spec!r} names no model: write e.g. torchvision:resnet50")
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as error:
        raise ValueError(
            f"unknown torchvision model {name!r}; see torchvision.models.list_models() "
            "(e.g. torchvision:resnet50)"
        ) from error
    require_weights(weights, spec)
    return name, builder


def _load_spec(spec: str, request: LoadRequest) -> HookProbeModel:
    name, builder = _builder(spec, request.weights)
    with seeded():
        model = builder(weights=None)
    if request.weights != "random":
        state = read_weights_file(request.weights, allow_pickle=request.allow_pickle)
        prefixes = ("fc.", "classifier.", "heads.")
        load_tolerating_classifier(model, state, str(request.weights), prefixes)
    model.eval()
    is_vit = name.startswith("vit_")
    final_norm = getattr(model.encoder, "ln", None) if is_vit and request.final_norm else None
    return HookProbeModel(
        model,
        architecture=spec,
        layer_names=list(request.layer_names or torchvision_layers(model, name)),
        token_layout=TokenLayout(has_cls=is_vit),
        preprocess=torchvision_pipeline(name, model, request.preprocess),
        channels_last=name.startswith("swin"),
        final_norm=final_norm,
    )


register_model_source(
    ModelSourceEntry(
        name="torchvision",
        description=(
            "'torchvision:<model name>' with weights='<local .safetensors/.pth/.pt/.bin file>'"
        ),
        matches=lambda spec: isinstance(spec, str) and spec.startswith("torchvision:"),
        load=_load_spec,
        takes_weights=True,
        check=lambda spec, weights: _builder(spec, weights) and None,
    )
)
