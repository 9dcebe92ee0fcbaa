"""Dataset specs: one string names a data set on the command line and in YAML.

Syntax::

    <prefix>:<location>?<option>=<value>&<option>=<value>

for example ``nsd:/data/nsd?subject=1&sessions=1-3&rois=prf-visualrois``. The prefix picks the
loader (``nsd``, ``algonauts2023``, ``things-fmri``, ``things-meg``), the location is a folder or
file, and the query-string options are parsed into the loader's typed options dataclass:

- ``int`` / ``float``: ``subject=1``, ``h_freq=20``;
- ``bool``: ``true``/``false``/``1``/``0``/``yes``/``no``; a bare key (``?shared1000``) is true;
- ``tuple[int, ...]``: comma-separated integers and inclusive ranges, ``sessions=1-3,7``;
- ``tuple[str, ...]``: comma-separated names, ``rois=prf-visualrois,streams``;
- ``Literal[...]``: one of the listed choices;
- ``X | None``: ``none`` (or an empty value) gives None.

Unknown options, repeated options and values of the wrong type raise ``ValueError`` naming the
option, the value and the choices. ``roi_properties=a.csv,b.csv`` is common to every spec (the
generic folder and ``-epo.fif`` paths too): the CSVs, keyed by ``roi``, are merged into the ROI
table with :func:`brainalign.probe.rois.merge_roi_properties`.

Example::

    spec = parse_spec("nsd:/data/nsd?subject=1&sessions=1-3")
    options = options_from_query(NSDOptions, spec.options, dataset="nsd")
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin
from urllib.parse import quote, unquote

__all__ = [
    "COMMON_OPTIONS",
    "DatasetSpec",
    "apply_roi_properties",
    "format_spec",
    "options_from_query",
    "parse_int_list",
    "parse_query",
    "parse_spec",
    "pop_common_options",
    "resolve_subject",
]

COMMON_OPTIONS = ("roi_properties",)
"""Options that every spec accepts, handled by :func:`brainalign.probe.formats.load_brain`."""

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_NONE = {"", "none", "null"}

OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec.

    Parameters
    ----------
    prefix : str
        Loader name, lower case; "" for a plain path.
    location : str
        Folder or file (the part before ``?``).
    options : dict of str to str
        Raw option values, in the order given.
    """

    prefix: str
    location: str
    options: dict[str, str]


def parse_query(query: str, *, where: str = "spec") -> dict[str, str]:
    """Split ``a=1&b=x,y&flag`` into ``{"a": "1", "b": "x,y", "flag": "true"}``.

    Values are percent-decoded (``%26`` is a literal ``&``). A bare key means ``true``.

    Raises
    ------
    ValueError
        For an empty or repeated option name.
    """
    options: dict[str, str] = {}
    if not query:
        return options
    for part in query.split("&"):
        if not part:
            continue
        key, separator, value = part.partition("=")
        key = unquote(key).strip()
        if not key:
            raise ValueError(f"{where}: an option has no name in {query!r}; write name=value")
        if key in options:
            raise ValueError(f"{where}: option {key!r} is given twice in {query!r}")
        options[key] = unquote(value).strip() if separator else "true"
    return options


def parse_spec(text: str | Path) -> DatasetSpec:
    """Split ``prefix:location?options`` into its parts.

    A one-letter prefix is a Windows drive (``C:\\data``), not a loader. Text without a prefix
    is a plain path (``prefix == ""``); its ``?options`` are split off only when the whole text
    is not an existing path.
    """
    text = str(text)
    prefix, separator, rest = text.partition(":")
    is_prefixed = (
        bool(separator)
        and len(prefix) >= 2
        and prefix.replace("-", "").replace("_", "").isalnum()
        and not rest.startswith("\\")
    )
    if not is_prefixed:
        prefix, rest = "", text
        if Path(text).exists():
            return DatasetSpec("", text, {})
    location, _, query = rest.partition("?")
    where = f"spec {text!r}"
    return DatasetSpec(prefix.lower(), location, parse_query(query, where=where))


def format_spec(prefix: str, location: str | Path, options: Mapping[str, Any]) -> str:
    """Inverse of :func:`parse_spec`: ``format_spec("nsd", "/d", {"subject": 1})``.

    Tuples and lists are joined with commas; ``&``, ``=`` and ``%`` in values are escaped.
    """
    parts = []
    for key, value in options.items():
        if isinstance(value, tuple | list):
            value = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif value is None:
            value = "none"
        parts.append(f"{key}={quote(str(value), safe='/,:-_.~+ ')}")
    query = f"?{'&'.join(parts)}" if parts else ""
    head = f"{prefix}:" if prefix else ""
    return f"{head}{location}{query}"


def pop_common_options(text: str | Path) -> tuple[str, tuple[Path, ...]]:
    """Remove the options every spec shares; return the rest of the spec and the ROI tables.

    Returns
    -------
    text : str
        The spec without ``roi_properties`` (and without ``?`` if nothing is left).
    roi_properties : tuple of Path
        CSV files keyed by ``roi``, in the order given.
    """
    text = str(text)
    spec = parse_spec(text)
    if not spec.prefix:
        extra = [key for key in spec.options if key not in COMMON_OPTIONS]
        if extra:
            raise ValueError(
                f"spec {text!r}: a plain path takes only {list(COMMON_OPTIONS)} as options; "
                f"got {extra}. Options such as subject= belong to named data sets "
                "(nsd:, algonauts2023:, things-fmri:, things-meg:)"
            )
    if "roi_properties" not in spec.options:
        return (text if spec.prefix or not spec.options else spec.location), ()
    options = dict(spec.options)
    raw = options.pop("roi_properties")
    paths = tuple(Path(item.strip()) for item in raw.split(",") if item.strip())
    if not paths:
        raise ValueError(f"spec {text!r}: roi_properties needs one or more CSV paths")
    return format_spec(spec.prefix, spec.location, options), paths


def apply_roi_properties(brain: Any, tables: tuple[Path, ...]) -> Any:
    """Merge per-ROI property CSVs into ``brain.rois`` (a new BrainData).

    Parameters
    ----------
    brain : BrainData
    tables : tuple of Path
        CSVs with a ``roi`` column and property columns (expansion, thickness, myelin,
        timescale, ...). ROIs absent from a table get NaN; unknown ROIs are warned about.
    """
    if not tables:
        return brain
    from brainalign.probe.rois import merge_roi_properties

    missing = [str(path) for path in tables if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"ROI property table(s) not found: {missing} (roi_properties=...)")
    rois = brain.rois
    for path in tables:
        rois = merge_roi_properties(rois, path)
    return replace(brain, rois=rois)


# ---------------------------------------------------------------------- typed options
def parse_int_list(text: str, *, name: str = "value") -> tuple[int, ...]:
    """``"1-3,7"`` -> ``(1, 2, 3, 7)``; ranges are inclusive, order and repeats kept out.

    Raises
    ------
    ValueError
        ``option 'sessions': expected integers or ranges like 1-3,7; got 'a'``.
    """
    values: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        start, dash, stop = item.partition("-")
        try:
            if dash and start:
                first, last = int(start), int(stop)
                if last < first:
                    raise ValueError
                values.extend(range(first, last + 1))
            else:
                values.append(int(item))
        except ValueError:
            raise ValueError(
                f"option {name!r}: expected integers or ranges like 1-3,7; got {text!r}"
            ) from None
    if not values:
        raise ValueError(f"option {name!r}: expected at least one integer; got {text!r}")
    return tuple(dict.fromkeys(values))


def _convert(value: str, annotation: Any, name: str) -> Any:
    origin = get_origin(annotation)
    arguments = get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in arguments and value.strip().lower() in _NONE:
            return None
        others = [argument for argument in arguments if argument is not type(None)]
        errors = []
        for argument in others:
            try:
                return _convert(value, argument, name)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        if value in arguments:
            return value
        raise ValueError(f"option {name!r} must be one of {list(arguments)}; got {value!r}")
    if origin is tuple:
        item_type = arguments[0] if arguments else str
        if item_type is int:
            return parse_int_list(value, name=name)
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not items:
            raise ValueError(f"option {name!r}: expected a comma-separated list; got {value!r}")
        return tuple(_convert(item, item_type, name) for item in items)
    if annotation is bool:
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"option {name!r} must be true or false; got {value!r}")
    if annotation is int:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"option {name!r} must be an integer; got {value!r}") from None
    if annotation is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"option {name!r} must be a number; got {value!r}") from None
    if annotation is Path:
        if not value:
            raise ValueError(f"option {name!r} needs a path")
        return Path(value).expanduser()
    if annotation is str:
        return value
    raise TypeError(f"option {name!r}: unsupported option type {annotation!r}")


def options_from_query(
    options_class: type[OptionsT], options: Mapping[str, str], *, dataset: str
) -> OptionsT:
    """Build a loader's options dataclass from raw spec options.

    Parameters
    ----------
    options_class : dataclass type
        Its fields (and their type hints) are the accepted options.
    options : mapping of str to str
        Raw values from :func:`parse_spec`.
    dataset : str
        Loader name, for messages.

    Raises
    ------
    ValueError
        For unknown options (with a "did you mean" hint and the list of known ones) and values
        of the wrong type; the dataclass's own checks run last.
    """
    fields = {field.name: field for field in dataclasses.fields(options_class)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(options_class)
    unknown = [key for key in options if key not in fields]
    if unknown:
        hints_text = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hints_text.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"unknown option(s) for {dataset}: {', '.join(hints_text)}; known options: "
            f"{', '.join(sorted([*fields, *COMMON_OPTIONS]))}"
        )
    values = {}
    for key, raw in options.items():
        try:
            values[key] = _convert(raw, hints[key], key)
        except ValueError as error:
            raise ValueError(f"{dataset} spec: {error}") from None
    try:
        return options_class(**values)
    except ValueError as error:
        raise ValueError(f"{dataset} spec: {error}") from None


def resolve_subject(spec_value: Any, keyword: str | None, *, dataset: str) -> Any:
    """Reconcile ``?subject=`` with ``load_brain(..., subject=...)``.

    Returns the spec's value, else the keyword's (as a string), else None. Raises when both are
    given and disagree (``"1"``, ``"01"``, ``"subj01"`` and ``"sub-01"`` agree with 1).
    """
    if keyword is None:
        return spec_value
    if spec_value is None:
        return keyword
    if _subject_key(spec_value) != _subject_key(keyword):
        raise ValueError(
            f"{dataset}: the spec says subject={spec_value!r} but subject={keyword!r} was "
            "passed too; give the subject once"
        )
    return spec_value


def _subject_key(value: Any) -> str:
    text = str(value).strip().lower()
    for head in ("subj", "sub-", "bigmeg", "p"):
        if text.startswith(head) and text[len(head) :].isdigit():
            text = text[len(head) :]
    return text.lstrip("0") or "0"
