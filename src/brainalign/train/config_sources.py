"""Which ``--config`` file or command-line option set a key, and parse errors as one line.

LightningCLI (jsonargparse) reports a misspelt or mistyped key by its dotted name only, over
several lines, without the file it came from. :class:`ConfigSources` reads the arguments of
``brainalign fit`` in order (``--config FILE`` and ``--key value``) and answers which of them
set a key last; :func:`parse_error_line` turns a jsonargparse error into one line that names the
key and that source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigSources", "parse_error_line"]

_CONFIG_FLAGS = ("--config", "-c")
#: jsonargparse message parts that name the key at fault.
_KEY_PATTERNS = (
    re.compile(r'Parser key "([^"]+)"'),
    re.compile(r"does not accept option '([^']+)'"),
    re.compile(r"does not accept nested key '([^']+)'"),
    re.compile(r"Key '([^']+)' is required"),
    re.compile(r"required: ([\w.]+)"),
)
#: jsonargparse message lines that repeat the value or list the accepted types (left out).
_NOISE = re.compile(
    r"^\s*(Subtypes:|Given value type:|Given value:|Subclass types expect one of|- a (class "
    r"path|dict))"
)


@dataclass(frozen=True)
class _Source:
    label: str
    values: Any  # nested mapping read from a file, or the dotted key given on the command line
    yaml_error: str | None = None


def _contains(values: Any, dotted: str) -> bool:
    """Whether nested values hold the dotted key (looking through ``init_args`` levels)."""
    node = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return False
        for level in (node, node.get("init_args"), node.get("dict_kwargs")):
            if isinstance(level, Mapping) and part in level:
                node = level[part]
                break
        else:
            return False
    return True


class ConfigSources:
    """The config files and command-line options of one LightningCLI call, in order.

    Parameters
    ----------
    args : sequence of str
        The arguments after ``brainalign`` (the subcommand first).
    """

    def __init__(self, args: Sequence[str]) -> None:
        self.sources: list[_Source] = []
        tokens = list(args[1:]) if args and not args[0].startswith("-") else list(args)
        index = 0
        while index < len(tokens):
            token = tokens[index]
            name, has_value, value = token.partition("=")
            if not has_value and index + 1 < len(tokens) and not tokens[index + 1].startswith("--"):
                value = tokens[index + 1]
                index += 1
            index += 1
            if name in _CONFIG_FLAGS:
                self.sources.append(self._read_config(value))
            elif name.startswith("--"):
                self.sources.append(_Source("on the command line", name[2:].rstrip("+")))

    @staticmethod
    def _read_config(value: str) -> _Source:
        path = Path(value)
        is_file = path.is_file()
        label = f"in config file {value}" if is_file else "in the --config string"
        try:
            text = path.read_text(encoding="utf-8") if is_file else value
            return _Source(label, yaml.safe_load(text))
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = " ".join(str(error.problem or error.context or "syntax error").split())
            return _Source(label, None, yaml_error=f"{problem}{where}")
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            return _Source(label, None, yaml_error=" ".join(str(error).split()))

    def origin(self, key: str) -> str | None:
        """The last source that sets ``key`` (or a key inside or above it), or None."""
        for source in reversed(self.sources):
            if isinstance(source.values, str):
                given = source.values
                if given == key or given.startswith(f"{key}.") or key.startswith(f"{given}."):
                    return source.label
            elif _contains(source.values, key):
                return source.label
        return None

    def broken_config(self) -> _Source | None:
        """The first config whose YAML does not parse."""
        return next((source for source in self.sources if source.yaml_error), None)

    def where(self, key: str) -> str:
        """`` (set in <file>)`` or `` (set on the command line)``, or ``""`` if nothing sets it."""
        origin = self.origin(key)
        return f" (set {origin})" if origin else ""


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return " ".join(line for line in lines if not _NOISE.match(line))


def parse_error_line(message: str, sources: ConfigSources) -> str:
    """A LightningCLI parse error as one line naming the key and the file or option it came from.

    Parameters
    ----------
    message : str
        The text of jsonargparse's ``ArgumentError``.
    sources : ConfigSources
        The arguments of the call.
    """
    broken = sources.broken_config()
    if message.startswith("Problems parsing config") and broken is not None:
        return f"the YAML {broken.label.removeprefix('in ')} does not parse: {broken.yaml_error}"
    text = _one_line(message)
    if message.startswith("unrecognized arguments"):
        return f"{text} (on the command line)"
    for pattern in _KEY_PATTERNS:
        match = pattern.search(message)
        if match:
            return f"{text}{sources.where(match.group(1))}"
    return text
