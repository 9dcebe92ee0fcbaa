"""timm models: ``timm:<name>`` specs with local weights, and timm modules given in Python.

They are read through ``forward_intermediates`` and preprocessed with timm's own evaluation
transform (:func:`brainalign.probe.models.pipelines.timm_pipeline`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from brainalign.models.weights import read_weights_file
from brainalign.probe.models.pipelines import timm_pipeline
from brainalign.probe.models.sources import (
    LoadRequest,
    ModelSourceEntry,
    load_tolerating_classifier,
    register_model_source,
    require_weights,
    seeded,
)
from brainalign.probe.models.wrappers import ProbeModel, TimmProbeModel, final_layer_norm


def probe_timm_module(model: nn.Module, name: str, request: LoadRequest) -> ProbeModel:
    """A timm module as a :class:`TimmProbeModel`, or hooked on ``request.layer_names``."""
    if request.layer_names is not None or request.token_layout is not None:
        from brainalign.probe.models.source_module import load_module

        norm = final_layer_norm(getattr(model, "norm", None), getattr(model, "embed_dim", None))
        return load_module(model, request, name=f"timm:{name}", final_norm=norm)
    preprocess = timm_pipeline(model, name, request.preprocess)
    return TimmProbeModel(model, name, norm=request.final_norm, preprocess=preprocess)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if classifier is None:
        return ()
    names: Sequence[str] = [classifier] if isinstance(classifier, str) else classifier
    return tuple(f"{name}." for name in names)


def _converted_state(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """Apply the timm model file's ``checkpoint_filter_fn`` (original-format checkpoints)."""
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return None
    try:
        return filter_fn(state, model)
    except Exception:  # a conversion that does not apply: report the original mismatch
        return None


def _check_spec(spec: str, weights: Any) -> None:
    import timm

    import brainalign.models.registry  # noqa: F401  (registers the tiny test ViTs)

    name = spec[len("timm:") :]
    if not name:
        raise ValueError(f"{spec!r} names no model: write e.g. timm:resnet50")
    if not timm.is_model(name):
        raise ValueError(
            f"unknown timm model {name!r}; see timm.list_models() (e.g. timm:resnet50, "
            "timm:vit_small_patch16_dinov3)"
        )
    require_weights(weights, spec)


def _load_spec(spec: str, request: LoadRequest) -> ProbeModel:
    import timm

    _check_spec(spec, request.weights)
    name = spec[len("timm:") :]
    with seeded():
        model = timm.create_model(name, pretrained=False)
    if request.weights != "random":
        state = read_weights_file(request.weights, allow_pickle=request.allow_pickle)
        prefixes = _classifier_prefixes(model)
        try:
            load_tolerating_classifier(model, state, str(request.weights), prefixes)
        except ValueError:
            converted = _converted_state(model, state)
            if converted is None:
                raise
            load_tolerating_classifier(model, converted, str(request.weights), prefixes)
    return probe_timm_module(model.eval(), name, request)


def _is_timm_module(spec: Any) -> bool:
    return (
        isinstance(spec, nn.Module)
        and type(spec).__module__.startswith("timm.")
        and hasattr(spec, "feature_info")
    )


def _load_module(module: nn.Module, request: LoadRequest) -> ProbeModel:
    if request.weights is not None:
        from brainalign.probe.models.source_module import load_module_weights

        load_module_weights(module, request)
    name = (getattr(module, "pretrained_cfg", None) or {}).get("architecture")
    return probe_timm_module(module, name or type(module).__name__, request)


register_model_source(
    ModelSourceEntry(
        name="timm-module",
        description="a timm model object (read through forward_intermediates)",
        matches=_is_timm_module,
        load=_load_module,
        takes_weights=True,
    )
)
register_model_source(
    ModelSourceEntry(
        name="timm",
        description="'timm:<model name>' with weights='<local .safetensors/.pth/.pt/.bin file>'",
        matches=lambda spec: isinstance(spec, str) and spec.startswith("timm:"),
        load=_load_spec,
        takes_weights=True,
        check=_check_spec,
    )
)
