"""Model sources behind a registry, and :func:`load_probe_model`, which asks each in turn.

A source says which specs it takes (``matches``) and turns one into a
:class:`~brainalign.probe.models.wrappers.ProbeModel` (``load``). The built-in sources
(brainalign exports and checkpoints, timm, torchvision, Hugging Face folders, ``nn.Module``
objects) register themselves when :mod:`brainalign.probe.models` is imported; a new source
plugs in with :func:`register_model_source` without touching this module::

    register_model_source(ModelSourceEntry(
        name="openclip", description="'openclip:<name>' with weights=...",
        matches=lambda spec: str(spec).startswith("openclip:"), load=load_openclip))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from brainalign.models.export import load_state_dict_checked
from brainalign.probe.models.wrappers import ProbeModel, TokenLayout

__all__ = [
    "LoadRequest",
    "ModelSourceEntry",
    "accepted_specs",
    "check_model_spec",
    "load_probe_model",
    "register_model_source",
]

Spec = str | Path | nn.Module


@dataclass(frozen=True, kw_only=True)
class LoadRequest:
    """What the caller asks of a source besides the spec.

    Attributes
    ----------
    weights : str or Path, optional
        Local weights file (timm/torchvision specs, ``nn.Module`` objects); ``"random"`` keeps
        a seeded random initialisation on purpose.
    allow_pickle : bool
    network : {"teacher", "student"}
    layer_names : sequence of str, optional
        Submodules to probe instead of the source's default layers.
    token_layout : TokenLayout, optional
        For ``nn.Module`` objects: which tokens are class/register tokens.
    preprocess : mapping
        Overrides of the model's own preprocessing (``PreprocessConfig.overrides``).
    final_norm : bool
        Apply the model's final norm to every probed layer.
    """

    weights: str | Path | None = None
    allow_pickle: bool = False
    network: Literal["teacher", "student"] = "teacher"
    layer_names: Sequence[str] | None = None
    token_layout: TokenLayout | None = None
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    final_norm: bool = True


@dataclass(frozen=True)
class ModelSourceEntry:
    """One kind of model spec.

    Attributes
    ----------
    name : str
    description : str
        The accepted form, listed in errors for specs no source takes.
    matches : callable
        spec -> whether this source takes it.
    load : callable
        (spec, LoadRequest) -> ProbeModel.
    takes_weights : bool
        Whether ``weights=`` means something for this source.
    check : callable, optional
        (spec, weights) -> None; cheap checks run before anything is loaded (a known model
        name, weights given), raising the error loading would raise.
    """

    name: str
    description: str
    matches: Callable[[Spec], bool]
    load: Callable[[Any, LoadRequest], ProbeModel]
    takes_weights: bool = False
    check: Callable[[Any, str | Path | None], None] | None = None


_SOURCES: list[ModelSourceEntry] = []


def register_model_source(entry: ModelSourceEntry) -> None:
    """Add a source; a later source with the same name replaces the earlier one in place."""
    for index, known in enumerate(_SOURCES):
        if known.name == entry.name:
            _SOURCES[index] = entry
            return
    _SOURCES.append(entry)


def accepted_specs() -> tuple[str, ...]:
    """The accepted forms of a model spec, one per registered source."""
    return tuple(entry.description for entry in _SOURCES)


def check_model_spec(spec: Spec, *, weights: str | Path | None = None) -> str:
    """The name of the source that takes ``spec``, without loading anything heavy.

    Raises the same errors as :func:`load_probe_model` for an unknown spec, a missing weights
    file or ``weights=`` given to a source that carries its own.
    """
    for entry in _SOURCES:
        if entry.matches(spec):
            if weights is not None and not entry.takes_weights:
                raise ValueError(
                    f"weights= is only used with timm:/torchvision: specs and nn.Module objects; "
                    f"{spec!r} carries its own weights"
                )
            if entry.check is not None:
                entry.check(spec, weights)
            if weights not in (None, "random") and not Path(weights).is_file():
                raise FileNotFoundError(f"weights file not found: {weights}")
            return entry.name
    raise _unknown_spec(spec)


def _unknown_spec(spec: Spec) -> ValueError:
    text = str(spec)
    path = Path(text.removeprefix("hf:"))
    if path.is_dir():
        where = "a folder that is neither a brainalign export nor a Hugging Face model folder"
    elif path.exists():
        where = "not a recognised model file"
    else:
        where = "no such file or folder"
    return ValueError(
        f"cannot load a model from {text!r} ({where}). Accepted specs: "
        + "; ".join(accepted_specs())
    )


def load_probe_model(
    spec: Spec | ProbeModel,
    *,
    weights: str | Path | None = None,
    allow_pickle: bool = False,
    network: Literal["teacher", "student"] = "teacher",
    layer_names: Sequence[str] | None = None,
    token_layout: TokenLayout | None = None,
    resolution: int | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    final_norm: bool = True,
) -> ProbeModel:
    """Load a model for probing, without downloading and without unpickling arbitrary objects.

    Parameters
    ----------
    spec : str, Path, nn.Module or ProbeModel
        One of :func:`accepted_specs`.
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
        Submodules to probe (``nn.Module``, ``timm:`` and ``torchvision:`` specs).
    token_layout : TokenLayout, optional
        For ``nn.Module`` specs: which tokens are class/register tokens (default: none).
    resolution, crop_pct, interpolation, mean, std : optional
        Overrides of the model's own preprocessing (see
        :mod:`brainalign.probe.models.pipelines`); a bare ``nn.Module`` that declares no input
        size needs ``resolution``.
    final_norm : bool
        Apply the model's final norm to every probed layer (all sources that have one).

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
    from brainalign.probe.config import PreprocessConfig

    overrides = PreprocessConfig(
        resolution=resolution,
        crop_pct=crop_pct,
        interpolation=interpolation,  # type: ignore[arg-type]
        mean=None if mean is None else tuple(mean),  # type: ignore[arg-type]
        std=None if std is None else tuple(std),  # type: ignore[arg-type]
    ).overrides
    request = LoadRequest(
        weights=weights,
        allow_pickle=allow_pickle,
        network=network,
        layer_names=layer_names,
        token_layout=token_layout,
        preprocess=overrides,
        final_norm=final_norm,
    )
    name = check_model_spec(spec, weights=weights)
    return next(entry for entry in _SOURCES if entry.name == name).load(spec, request)


# ---------------------------------------------------------------------------- shared helpers
def require_weights(weights: str | Path | None, spec: str) -> None:
    """Refuse a hub model spec without local weights (nothing is downloaded)."""
    if weights is None:
        raise ValueError(
            f"{spec} needs weights='<local file>' (.safetensors, .pth, .pt or .bin): nothing is "
            "downloaded. Pass weights='random' to probe a randomly initialised network on purpose."
        )


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Deterministic random initialisation without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_tolerating_classifier(
    module: nn.Module, state: dict[str, Tensor], source: str, classifier: Sequence[str]
) -> None:
    """Strict load, except that classifier weights may be absent from (or extra in) the file.

    ``classifier`` holds name prefixes such as ``("fc.",)``. Absent classifier weights keep
    the seeded initialisation; the probe never reads them.
    """
    prefixes = tuple(classifier)
    expected = module.state_dict()
    filled = {
        key: value
        for key, value in state.items()
        if key in expected or not key.startswith(prefixes)
    }
    for key, value in expected.items():
        if key not in filled and prefixes and key.startswith(prefixes):
            filled[key] = value
    load_state_dict_checked(module, filled, source=source)
