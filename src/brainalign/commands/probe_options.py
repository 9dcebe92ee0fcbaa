"""The probe block on the command line: jsonargparse over :class:`ProbeConfig`.

``brainalign probe`` and ``brainalign chronology`` parse the same typed block as the callback's
``init_args.probe`` and a study's ``probe:``: ``--config probe.yaml`` files (merged in order),
``--print_config``, dotted overrides (``--probe.features.pooling cls``); a misspelt key or a bad
value is one error line that names the key and the config file it came from (a misspelt flag:
the nearest known one).

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
    """Parse and instantiate; a parse or validation error becomes one ``ValueError`` line.

    The line names the key and, when the key is set in a config file and not on the command
    line, the (last) file that sets it; a misspelt flag gets the nearest known one as a hint.

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
        raise ValueError(_one_line(str(error), argv, parser)) from None
    try:
        return namespace, parser.instantiate(namespace)
    except ValueError as error:  # a dataclass check (``encoding.n_folds must be ...``)
        raise ValueError(_one_line(str(error), argv, parser)) from None


#: Flags of earlier versions that :func:`translate_legacy_flags` rewrites besides ``_RENAMED``.
_LEGACY_FLAGS = ("--brain", "--layers", "--features", "--cache-dir", "--allow-pickle", "--model")


def _one_line(message: str, argv: Sequence[str], parser: ArgumentParser) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    text = " ".join(lines) if lines else "invalid arguments"
    unrecognized = re.search(r"unrecognized arguments: (\S+)", text)
    if unrecognized:  # on the command line, never in a file
        return text + _hint(unrecognized.group(1).split("=", 1)[0], parser)
    keys = _keys(text)
    if not keys and config_files(argv):  # about a file as a whole (not a mapping, bad YAML)
        return text + f" (in {', '.join(config_files(argv))})"
    # The last file that sets the key holds the value in force (later files override).
    files = [path for path in config_files(argv) if _sets_any(path, keys)]
    if files and not _on_command_line(keys, argv):
        text += f" (in {files[-1]})"
    return text


def _keys(text: str) -> list[str]:
    """The dotted keys an error message is about (relative to a group when it names one)."""
    keys = re.findall(r"(?:[Kk]ey|[Oo]ption) ['\"]([\w.]+)['\"]", text)
    group = re.match(r"Group ['\"](\w+)['\"] does not accept option ['\"]([\w.]+)['\"]", text)
    if group:
        keys.append(f"{group.group(1)}.{group.group(2)}")
    leading = re.match(r"(\w+(?:\.\w+)+) ", text)  # "encoding.n_folds must be ..."
    if leading:
        keys.append(leading.group(1))
    return keys


def _matches(key: str, candidate: str) -> bool:
    """``candidate`` (a full dotted key) is ``key`` or ends with it at a dot."""
    return candidate == key or candidate.endswith(f".{key}")


def _sets_any(path: str, keys: Sequence[str]) -> bool:
    """Whether the YAML file at ``path`` sets one of ``keys`` (unreadable files: no)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return False
    flat = list(_flat_keys(content))
    return any(_matches(key, candidate) for key in keys for candidate in flat)


def _flat_keys(node: Any, prefix: str = "") -> Any:
    """Every dotted key of a nested mapping, intermediate ones included."""
    if isinstance(node, dict):
        for name, child in node.items():
            key = f"{prefix}{name}"
            yield key
            yield from _flat_keys(child, f"{key}.")


def _on_command_line(keys: Sequence[str], argv: Sequence[str]) -> bool:
    flags = [arg.split("=", 1)[0].removeprefix("--") for arg in argv if arg.startswith("--")]
    return any(_matches(key, flag) or _matches(flag, key) for key in keys for flag in flags)


def _hint(flag: str, parser: ArgumentParser) -> str:
    """``; did you mean --x?`` for the nearest known flag, or nothing."""
    import difflib

    known = [option for action in parser._actions for option in action.option_strings]
    known += [*_RENAMED, *_LEGACY_FLAGS]
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""
