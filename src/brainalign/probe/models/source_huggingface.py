"""Hugging Face model folders on disk (``config.json`` + weights; needs ``transformers``).

Read safely (no download, no remote code, ``pytorch_model.bin`` through ``weights_only``,
weights that do not fit ``config.json`` refused), through ``output_hidden_states``, and
preprocessed by the folder's own image processor. With ``final_norm`` the model's final norm
(``layernorm`` of ViT-like models) is applied to every block's hidden state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainalign.models.weights import safe_torch_load
from brainalign.probe.models.pipelines import huggingface_pipeline
from brainalign.probe.models.sources import LoadRequest, ModelSourceEntry, register_model_source
from brainalign.probe.models.wrappers import (
    HuggingFaceProbeModel,
    TokenLayout,
    final_layer_norm,
)
from brainalign.utils.reading import read_file

__all__ = ["load_huggingface_module"]

#: model types whose token 0 is a class token
_CLASS_TOKEN_TYPES = {
    "vit", "deit", "dinov2", "dinov2_with_registers", "dinov3_vit", "beit", "data2vec-vision",
    "vit_mae", "clip_vision_model", "vit_msn",
}  # fmt: skip


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
            safe_torch_load(
                weights_file, allow_pickle=allow_pickle
            )  # fail early on pickled objects
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


def _final_norm(model: nn.Module, width: int) -> nn.Module | None:
    """The LayerNorm a ViT-like model applies to its last hidden state, if it has one."""
    for name in ("layernorm", "norm", "post_layernorm", "final_layernorm"):
        norm = final_layer_norm(getattr(model, name, None), width)
        if norm is not None:
            return norm
    return None


def _probe_hidden_states(
    model: nn.Module, folder: Path, resolution: int, request: LoadRequest
) -> tuple[Any, ...]:
    """Hidden states of one blank image at the input size; a size the model refuses (a ViT
    built for another one) is one error naming the folder and the override."""
    with torch.no_grad():
        probe_input = torch.zeros(1, 3, resolution, resolution)  # (1, 3, R, R)
        try:
            return model(pixel_values=probe_input, output_hidden_states=True).hidden_states
        except (ValueError, RuntimeError) as error:
            if "resolution" not in request.preprocess:
                raise
            native = getattr(model.config, "image_size", None)
            raise ValueError(
                f"{folder} does not take {resolution}x{resolution} inputs "
                f"(preprocess.resolution={resolution}): {error} Use resolution {native} or "
                "leave it unset (the image processor's own size)"
            ) from None


def _load(spec: str | Path, request: LoadRequest) -> HuggingFaceProbeModel:
    folder = Path(str(spec).removeprefix("hf:"))
    model, config = load_huggingface_module(folder, request.allow_pickle)
    preprocess = huggingface_pipeline(folder, config, request.preprocess)
    hidden = _probe_hidden_states(model, folder, preprocess.resolution, request)
    model_type = str(getattr(config, "model_type", ""))
    widths = {int(state.shape[-1]) if state.ndim == 3 else -1 for state in hidden[1:]}
    final_norm = None
    if request.final_norm and len(widths) == 1 and -1 not in widths:
        final_norm = _final_norm(model, widths.pop())
    return HuggingFaceProbeModel(
        model,
        final_norm=final_norm,
        architecture=f"hf:{type(model).__name__}:{model_type}",
        layer_names=[f"hidden_states.{index + 1}" for index in range(len(hidden) - 1)],
        token_layout=TokenLayout(
            has_cls=model_type in _CLASS_TOKEN_TYPES,
            n_registers=int(getattr(config, "num_register_tokens", 0) or 0),
        ),
        preprocess=preprocess,
    )


def _is_folder(spec: Any) -> bool:
    if not isinstance(spec, str | Path):
        return False
    folder = Path(str(spec).removeprefix("hf:"))
    return folder.is_dir() and (folder / "config.json").is_file()


register_model_source(
    ModelSourceEntry(
        name="huggingface",
        description=(
            "a Hugging Face model folder on disk (config.json + model.safetensors or "
            "pytorch_model.bin)"
        ),
        matches=_is_folder,
        load=_load,
    )
)
