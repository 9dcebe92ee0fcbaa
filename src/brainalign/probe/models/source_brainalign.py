"""brainalign's own models: teacher exports, Lightning checkpoints and in-memory backbones.

They are preprocessed with the batched tensor pipeline at the backbone's native resolution,
without a crop (ImageNet mean/std, bicubic): training saw whole images at that size.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from brainalign.models.backbone import DinoBackbone
from brainalign.models.checkpoint import load_lightning_backbone
from brainalign.models.export import META_FILE, WEIGHTS_FILE, load_teacher_export
from brainalign.probe.models.sources import LoadRequest, ModelSourceEntry, register_model_source
from brainalign.probe.models.wrappers import DinoProbeModel, final_layer_norm


def probe_backbone(backbone: DinoBackbone, request: LoadRequest) -> DinoProbeModel:
    """A :class:`DinoProbeModel` with the request's final norm and preprocessing overrides."""
    model = DinoProbeModel(backbone, norm=request.final_norm)
    if request.preprocess:
        model.preprocess = model.preprocess.with_overrides(request.preprocess)
    return model


def _is_export(spec: Any) -> bool:
    path = Path(str(spec))
    return (
        isinstance(spec, str | Path)
        and path.is_dir()
        and (path / META_FILE).is_file()
        and (path / WEIGHTS_FILE).is_file()
    )


def _is_checkpoint(spec: Any) -> bool:
    return isinstance(spec, str | Path) and Path(str(spec)).suffix == ".ckpt"


def _load_export(spec: str | Path, request: LoadRequest) -> DinoProbeModel:
    backbone, _ = load_teacher_export(Path(spec))
    return probe_backbone(backbone, request)


def _load_checkpoint(spec: str | Path, request: LoadRequest) -> DinoProbeModel:
    backbone = load_lightning_backbone(
        Path(spec), network=request.network, allow_pickle=request.allow_pickle
    )
    return probe_backbone(backbone, request)


def _is_backbone(spec: Any) -> bool:
    return isinstance(spec, DinoBackbone)


def _load_backbone(spec: DinoBackbone, request: LoadRequest) -> Any:
    if request.layer_names is not None or request.token_layout is not None:
        from brainalign.probe.models.source_module import load_module

        # hooked like any module, at the backbone's native size, with its final norm
        native = {"resolution": int(spec.vit.patch_embed.img_size[0])}
        request = replace(request, preprocess={**native, **request.preprocess})
        return load_module(spec, request, final_norm=final_layer_norm(spec.vit.norm))
    if request.weights is not None:
        from brainalign.probe.models.source_module import load_module_weights

        load_module_weights(spec, request)
    return probe_backbone(spec, request)


register_model_source(
    ModelSourceEntry(
        name="brainalign-backbone",
        description="a brainalign DinoBackbone object",
        matches=_is_backbone,
        load=_load_backbone,
        takes_weights=True,
    )
)
register_model_source(
    ModelSourceEntry(
        name="brainalign-export",
        description=f"a brainalign teacher-export folder ({META_FILE} + {WEIGHTS_FILE})",
        matches=_is_export,
        load=_load_export,
    )
)
register_model_source(
    ModelSourceEntry(
        name="brainalign-checkpoint",
        description="a brainalign Lightning checkpoint file ending in .ckpt",
        matches=_is_checkpoint,
        load=_load_checkpoint,
    )
)
