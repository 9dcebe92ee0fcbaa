"""Loaders for public brain data sets, named by a spec string.

Importing this package registers four prefixes with
:func:`brainalign.probe.formats.register_brain_loader` (``load_brain`` imports it, so they are
always available)::

    nsd:/data/nsd?subject=1&sessions=1-3&rois=prf-visualrois
    algonauts2023:/data/algonauts_2023/challenge_data?subject=1&rois=streams
    things-fmri:/data/things/betas_csv?subject=2&split=test
    things-meg:/data/ds004212?subject=1&onsets=trigger

Option syntax: :mod:`brainalign.probe.datasets.spec`; options per data set: the dataclasses
:class:`NSDOptions`, :class:`AlgonautsOptions`, :class:`ThingsFmriOptions`,
:class:`ThingsMegOptions`. Every spec also takes ``roi_properties=path.csv``.

Example::

    from brainalign.probe.formats import load_brain
    brain, stimuli = load_brain("nsd:/data/nsd?subject=1&shared1000=true")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from brainalign.probe.datasets.algonauts import AlgonautsOptions, load_algonauts2023
from brainalign.probe.datasets.nsd import NSDOptions, load_nsd, nsd_stimulus_id
from brainalign.probe.datasets.spec import (
    DatasetSpec,
    format_spec,
    options_from_query,
    parse_query,
    parse_spec,
    resolve_subject,
)
from brainalign.probe.datasets.things_fmri import ThingsFmriOptions, load_things_fmri
from brainalign.probe.datasets.things_meg import (
    ThingsMegOptions,
    load_things_meg,
    things_meg_preparation,
)
from brainalign.probe.formats import register_brain_loader
from brainalign.probe.meg import MEGPreparation

__all__ = [
    "DATASET_PREFIXES",
    "AlgonautsOptions",
    "DatasetSpec",
    "NSDOptions",
    "ThingsFmriOptions",
    "ThingsMegOptions",
    "format_spec",
    "load_algonauts2023",
    "load_nsd",
    "load_things_fmri",
    "load_things_meg",
    "nsd_stimulus_id",
    "parse_spec",
]


def _options(
    dataset: str,
    location: str,
    options_class: type,
    subject: str | None,
    *,
    numeric_subject: bool,
) -> tuple[Path, Any, set[str]]:
    """Split the location from its query and build the typed options."""
    path, _, query = location.partition("?")
    raw = parse_query(query, where=f"{dataset} spec")
    resolved = resolve_subject(raw.get("subject"), subject, dataset=dataset)
    if resolved is not None and "subject" not in raw:
        text = str(resolved).strip()
        if numeric_subject:
            digits = "".join(character for character in text if character.isdigit())
            text = digits or text
        raw["subject"] = text
    return Path(path), options_from_query(options_class, raw, dataset=dataset), set(raw)


def _nsd(location: str, *, subject: str | None = None, meg_preparation: Any = None) -> Any:
    path, options, _ = _options("nsd", location, NSDOptions, subject, numeric_subject=True)
    return load_nsd(path, options)


def _algonauts(location: str, *, subject: str | None = None, meg_preparation: Any = None) -> Any:
    path, options, _ = _options(
        "algonauts2023", location, AlgonautsOptions, subject, numeric_subject=True
    )
    return load_algonauts2023(path, options)


def _things_fmri(location: str, *, subject: str | None = None, meg_preparation: Any = None) -> Any:
    path, options, _ = _options(
        "things-fmri", location, ThingsFmriOptions, subject, numeric_subject=True
    )
    return load_things_fmri(path, options)


def _things_meg(
    location: str, *, subject: str | None = None, meg_preparation: MEGPreparation | None = None
) -> Any:
    path, options, given = _options(
        "things-meg", location, ThingsMegOptions, subject, numeric_subject=False
    )
    preparation = things_meg_preparation(options, meg_preparation, tuple(given))
    return load_things_meg(path, options, preparation)


DATASET_PREFIXES: dict[str, Callable[..., Any]] = {
    "nsd": _nsd,
    "algonauts2023": _algonauts,
    "things-fmri": _things_fmri,
    "things-meg": _things_meg,
}
"""The registered prefixes and their loaders."""

for _prefix, _loader in DATASET_PREFIXES.items():
    register_brain_loader(_prefix, _loader)
del _prefix, _loader
