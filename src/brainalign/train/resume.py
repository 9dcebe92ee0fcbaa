"""Compare the model a run builds with the model a checkpoint was trained with.

LightningCLI, given ``--ckpt_path FILE``, replaces the model section of the config with the
checkpoint's hyper-parameters without a word, so ``--model.backbone vit_small_test`` and a
``vit_tiny_test`` checkpoint quietly build the tiny model. ``brainalign fit`` compares the two
instead (:func:`check_model_matches`): different architectures are an error naming both, other
differences (learning rate, loss weights...) are reported and the run's own values are used,
unless ``--model_from_ckpt true`` asks for the checkpoint's settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from brainalign.train.module import GramConfig, HeadConfig, OptimConfig

__all__ = [
    "ARCHITECTURE_KEYS",
    "check_model_matches",
    "describe_other_differences",
    "model_differences",
]

#: Model settings that change the tensors of a checkpoint (a prefix covers its sub-keys).
ARCHITECTURE_KEYS = ("backbone", "img_size", "dino_head", "ibot_head", "gram.enabled")

#: Sections whose ``None`` means "the dataclass defaults" (compared field by field).
_SECTION_DEFAULTS = {
    "dino_head": HeadConfig,
    "ibot_head": HeadConfig,
    "optim": OptimConfig,
    "gram": GramConfig,
}

Difference = tuple[str, Any, Any]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _flatten(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys of the model settings, with defaulted sections filled in (private keys out)."""
    filled = {
        key: (
            _plain(_SECTION_DEFAULTS[key]())
            if value is None and key in _SECTION_DEFAULTS
            else _plain(value)
        )
        for key, value in settings.items()
        if not str(key).startswith("_")
    }
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = value

    walk("", filled)
    return flat


def model_differences(saved: Mapping[str, Any], configured: Mapping[str, Any]) -> list[Difference]:
    """Settings present in both with different values, as ``(dotted key, saved, configured)``.

    Parameters
    ----------
    saved : mapping
        The checkpoint's ``hyper_parameters`` (the model's init arguments).
    configured : mapping
        The ``model`` section of this run's config, as plain values.
    """
    old, new = _flatten(saved), _flatten(configured)
    return [
        (key, old[key], new[key]) for key in sorted(old.keys() & new.keys()) if old[key] != new[key]
    ]


def _is_architecture(key: str) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in ARCHITECTURE_KEYS)


def _listed(differences: list[Difference]) -> str:
    return "; ".join(
        f"model.{key}: {old!r} in the checkpoint, {new!r} in this run"
        for key, old, new in differences
    )


def check_model_matches(
    checkpoint_path: str, saved: Mapping[str, Any], configured: Mapping[str, Any]
) -> list[Difference]:
    """Raise if the checkpoint's architecture differs from the run's; return other differences.

    Parameters
    ----------
    checkpoint_path : str
        Named in the message.
    saved, configured : mapping
        See :func:`model_differences`.

    Returns
    -------
    list of (key, saved, configured)
        Differences that do not change the architecture (the caller reports them).

    Raises
    ------
    ValueError
        Naming both architectures (backbone, head sizes...) and the way out.
    """
    differences = model_differences(saved, configured)
    architecture = [item for item in differences if _is_architecture(item[0])]
    if architecture:
        backbone = dict((key, (old, new)) for key, old, new in architecture).get("backbone")
        if backbone is not None:
            lead = f"was trained with backbone {backbone[0]!r} but this run builds {backbone[1]!r}"
            others = [item for item in architecture if item[0] != "backbone"]
            lead += f" (and {_listed(others)})" if others else ""
        else:
            lead = (
                "was trained with another architecture than this run builds "
                f"({_listed(architecture)})"
            )
        raise ValueError(
            f"checkpoint {checkpoint_path!r} {lead}; resume with the model config it was trained "
            "with, or pass --model_from_ckpt true to build the checkpoint's model instead"
        )
    return differences


def describe_other_differences(checkpoint_path: str, differences: list[Difference]) -> str:
    """One line on settings that differ from the checkpoint's but keep its architecture."""
    return (
        f"model settings differ from those of checkpoint {checkpoint_path!r} "
        f"({_listed(differences)}); this run uses its own values (--model_from_ckpt true takes "
        "the checkpoint's)"
    )
