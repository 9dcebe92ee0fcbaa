"""Any ``nn.Module`` given in Python, read through forward hooks on named submodules.

The module's input size comes from what it declares (a ViT's ``patch_embed.img_size``, a timm
``pretrained_cfg``) or from ``resolution``; the tensor pipeline preprocesses its images.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from brainalign.models.export import load_state_dict_checked
from brainalign.models.weights import read_weights_file
from brainalign.probe.models.pipelines import check_resolution
from brainalign.probe.models.preprocess import Preprocess
from brainalign.probe.models.sources import LoadRequest, ModelSourceEntry, register_model_source
from brainalign.probe.models.wrappers import HookProbeModel, TokenLayout


def default_block_names(module: nn.Module) -> list[str]:
    """``blocks.<i>`` or ``layers.<i>`` of a module with such a list of children."""
    for attribute in ("blocks", "layers"):
        child = getattr(module, attribute, None)
        if isinstance(child, nn.Sequential | nn.ModuleList) and len(child) > 0:
            return [f"{attribute}.{index}" for index, _ in child.named_children()]
    children = [name for name, _ in module.named_children()]
    raise ValueError(
        f"{type(module).__name__} has no `blocks` or `layers` list: pass layer_names=[...] "
        f"naming the submodules to probe (its children: {children[:8]})"
    )


def load_module_weights(module: nn.Module, request: LoadRequest) -> None:
    """Load ``request.weights`` into ``module`` (strict, with an error naming the keys)."""
    state = read_weights_file(request.weights, allow_pickle=request.allow_pickle)
    load_state_dict_checked(module, state, source=str(request.weights))


def load_module(
    module: nn.Module,
    request: LoadRequest,
    *,
    name: str | None = None,
    final_norm: nn.Module | None = None,
) -> Any:
    """Wrap ``module`` with hooks on ``request.layer_names`` (default: its block list).

    ``final_norm`` is the model's final norm, applied to the hooked tokens when
    ``request.final_norm`` is set (a bare module has none the probe could know of).
    """
    architecture = name or f"module:{type(module).__module__}.{type(module).__qualname__}"
    layer_names = request.layer_names or default_block_names(module)
    resolution = check_resolution(architecture, module, request.preprocess.get("resolution"))
    if resolution is None:
        raise ValueError(
            f"{type(module).__name__} does not declare its input size: pass resolution=<pixels>"
        )
    overrides = {key: value for key, value in request.preprocess.items() if key != "resolution"}
    return HookProbeModel(
        module,
        architecture=architecture,
        layer_names=layer_names,
        token_layout=request.token_layout or TokenLayout(has_cls=False),
        preprocess=Preprocess(resolution=int(resolution)).with_overrides(overrides),
        final_norm=final_norm if request.final_norm else None,
    )


def _load(module: nn.Module, request: LoadRequest) -> Any:
    if request.weights is not None:
        load_module_weights(module, request)
    return load_module(module, request)


register_model_source(
    ModelSourceEntry(
        name="module",
        description=(
            "an nn.Module object (with layer_names=[...], or a `blocks`/`layers` child list)"
        ),
        matches=lambda spec: isinstance(spec, nn.Module),
        load=_load,
        takes_weights=True,
    )
)
