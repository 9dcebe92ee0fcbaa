"""The probe block on the command line: jsonargparse over :class:`ProbeConfig`.

``brainalign probe`` and ``brainalign chronology`` parse the same typed block as the callback's
``init_args.probe`` and a study's ``probe:``: ``--config probe.yaml`` files (merged in order),
``--print_config``, dotted overrides (``--probe.features.pooling cls``); a misspelt key is an
error that names it and the config file it came from.

The flags of earlier versions keep working: :func:`translate_legacy_flags` rewrites them into
dotted overrides (``--n-folds 3`` -> ``--probe.encoding.n_folds 3``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from brainalign.probe.config import ModelSource, ProbeConfig

__all__ = ["config_files", "parse", "parse_layers", "probe_parser", "translate_legacy_flags"]

#: flag -> dotted key of the probe block (values passed through as given)
_RENAMED = {
    "--stimuli": "--probe.stimuli",
    "--pooling": "--probe.features.pooling",
    "--gradient-loss": "--probe.features.gradient_loss",
    "--labels": "--probe.features.labels",
    "--batch-size": "--probe.features.batch_size",
    "--pca": "--probe.features.pca",
    "--n-folds": "--probe.encoding.n_folds",
    "--inner": "--probe.encoding.inner",
    "--backend": "--probe.encoding.backend",
    "--direction": "--probe.encoding.direction",
    "--resolution": "--probe.preprocess.resolution",
    "--crop-pct": "--probe.preprocess.crop_pct",
    "--max-stimuli": "--probe.max_stimuli",
    "--device": "--probe.device",
    "--precision": "--probe.precision",
    "--network": "--model.network",
    "--weights": "--model.weights",
    "--roi-properties": "--roi_properties",
}


def probe_parser(prog: str, description: str, *, with_model: bool) -> ArgumentParser:
    """A parser with ``--config``, the ``probe`` block and, optionally, the ``model`` source."""
    parser = ArgumentParser(
        prog=prog,
        description=description,
        exit_on_error=False,
        allow_abbrev=False,  # a misspelt prefix is an error, not a match
        default_env=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file(s)")
    if with_model:
        parser.add_class_arguments(ModelSource, "model", sub_configs=True)
    parser.add_class_arguments(ProbeConfig, "probe", sub_configs=True)
    return parser


def translate_legacy_flags(argv: Sequence[str]) -> list[str]:
    """Rewrite the flags of earlier versions into dotted overrides.

    ``--brain A --brain B`` -> ``--probe.brain '["A", "B"]'``; ``--layers 0,0.5,1`` ->
    ``--probe.features.layers [0.0, 0.5, 1.0]``; ``--features activation,gradient`` ->
    ``--probe.features.kinds [...]``; ``--cache-dir ''`` -> ``--probe.cache_dir null``;
    ``--allow-pickle`` -> ``--model.allow_pickle true``; ``--model SPEC`` (not a YAML mapping)
    -> ``--model.spec SPEC``; the rest by :data:`_RENAMED`.
    """
    out: list[str] = []
    brains: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        flag, value = _split(args, index)
        step = 1 if "=" in args[index] or value is None else 2
        if flag == "--brain" and value is not None:
            brains.append(value)
        elif flag == "--layers" and value is not None:
            out += ["--probe.features.layers", _layers(value)]
        elif flag == "--features" and value is not None:
            kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
            out += ["--probe.features.kinds", json.dumps(kinds)]
        elif flag == "--cache-dir" and value is not None:
            out += ["--probe.cache_dir", value if value else "null"]
        elif flag == "--allow-pickle":
            out += ["--model.allow_pickle", "true"]
            step = 1
        elif flag == "--model" and value is not None and not value.lstrip().startswith("{"):
            out += ["--model.spec", value]
        elif flag in _RENAMED and value is not None:
            out += [_RENAMED[flag], value]
        else:
            out.append(args[index])
            step = 1
        index += step
    if brains:
        out += ["--probe.brain", json.dumps(brains)]
    return out


def _split(args: list[str], index: int) -> tuple[str, str | None]:
    """(flag, value) of ``--flag value`` or ``--flag=value``; value None when there is none."""
    text = args[index]
    if not text.startswith("--"):
        return text, None
    if "=" in text:
        flag, value = text.split("=", 1)
        return flag, value
    following = args[index + 1] if index + 1 < len(args) else None
    if following is not None and following.startswith("--"):
        following = None
    return text, following


def parse_layers(text: str) -> list[float] | int | str:
    """``all`` | ``12`` (evenly spaced depths) | ``0,0.5,1`` (relative depths)."""
    if text == "all":
        return "all"
    if "," in text or "." in text:
        return [float(value) for value in text.split(",") if value]
    return int(text)


def _layers(text: str) -> str:
    """``all`` | ``12`` | ``0,0.5,1`` (the earlier syntax) as a jsonargparse value."""
    if text == "all" or text.lstrip().startswith("["):
        return text
    if "," in text or "." in text:
        return json.dumps([float(value) for value in text.split(",") if value])
    return text


def config_files(argv: Sequence[str]) -> list[str]:
    """The ``--config`` files named on a command line, in order."""
    files = []
    for index, text in enumerate(argv):
        if text == "--config" and index + 1 < len(argv):
            files.append(argv[index + 1])
        elif text.startswith("--config="):
            files.append(text.split("=", 1)[1])
    return files


def parse(parser: ArgumentParser, argv: Sequence[str]) -> tuple[Namespace, Any]:
    """Parse and instantiate; a parse error becomes one ``ValueError`` line.

    The line names the key and, when the key is not on the command line, the config file(s)
    it came from.

    Returns
    -------
    namespace : Namespace
        The parsed values (for ``--print_config``-like reports).
    instantiated : Namespace
        With ``probe`` (and ``model``) as dataclass objects.
    """
    from jsonargparse import ArgumentError

    argv = translate_legacy_flags(argv)
    try:
        namespace = parser.parse_args(argv)
    except ArgumentError as error:
        raise ValueError(_one_line(str(error), argv)) from None
    return namespace, parser.instantiate(namespace)


def _one_line(message: str, argv: Sequence[str]) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    text = " ".join(lines) if lines else "invalid arguments"
    keys = re.findall(r"(?:key|option) ['\"]([\w.]+)['\"]", text)
    files = config_files(argv)
    on_command_line = any(any(key.split(".")[-1] in arg for arg in argv) for key in keys)
    if files and not on_command_line:
        text += f" (in {', '.join(files)})"
    return text
