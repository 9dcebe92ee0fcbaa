"""Loaders for public brain data sets, named by a spec string.

Importing this package registers six prefixes with
:func:`brainalign.probe.formats.register_brain_loader` (``load_brain`` imports it, so they are
always available)::

    nsd:/data/nsd?subject=1&sessions=1-3&rois=prf-visualrois
    algonauts2023:/data/algonauts_2023/challenge_data?subject=1&rois=streams
    things-fmri:/data/things/betas_csv?subject=2&split=test
    things-meg:/data/ds004212?subject=1&onsets=trigger
    armeni2022:/data/armeni?subject=1&sessions=1-3&content=all
    meg-masc:/data/meg-masc?subject=01&sessions=0,1&tasks=0-3&content=all

The two speech data sets are also registered with
:func:`brainalign.probe.datasets.speech_meg.register_speech_loader`: ``load_brain`` gives their
word epochs (stimuli None), :func:`~brainalign.probe.datasets.speech_meg.load_word_epochs` the
epochs with their word table, for ``brainalign probe-language``.

Option syntax: :mod:`brainalign.probe.datasets.spec`; options per data set: the dataclasses
:class:`NSDOptions`, :class:`AlgonautsOptions`, :class:`ThingsFmriOptions`,
:class:`ThingsMegOptions`, :class:`Armeni2022Options`, :class:`MegMascOptions`. Every spec
also takes ``roi_properties=path.csv``.

Example::

    from brainalign.probe.formats import load_brain
    brain, stimuli = load_brain("nsd:/data/nsd?subject=1&shared1000=true")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from brainalign.probe.datasets.algonauts import AlgonautsOptions, load_algonauts2023
from brainalign.probe.datasets.armeni2022 import Armeni2022Options, plan_armeni2022
from brainalign.probe.datasets.meg_masc import MegMascOptions, plan_meg_masc
from brainalign.probe.datasets.nsd import NSDOptions, load_nsd, nsd_stimulus_id
from brainalign.probe.datasets.spec import (
    DatasetSpec,
    format_spec,
    options_from_query,
    parse_query,
    parse_spec,
    resolve_subject,
)
from brainalign.probe.datasets.speech_meg import (
    SpeechPlan,
    WordEpochs,
    load_word_epochs,
    plan_word_epochs,
    read_word_epochs,
    register_speech_loader,
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
    "Armeni2022Options",
    "DatasetSpec",
    "MegMascOptions",
    "NSDOptions",
    "SpeechPlan",
    "ThingsFmriOptions",
    "ThingsMegOptions",
    "WordEpochs",
    "format_spec",
    "load_algonauts2023",
    "load_nsd",
    "load_things_fmri",
    "load_things_meg",
    "load_word_epochs",
    "nsd_stimulus_id",
    "parse_spec",
    "plan_word_epochs",
    "read_word_epochs",
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


def _armeni_plan(location: str, *, subject: str | None = None) -> SpeechPlan:
    path, options, _ = _options(
        "armeni2022", location, Armeni2022Options, subject, numeric_subject=True
    )
    return plan_armeni2022(path, options)


def _meg_masc_plan(location: str, *, subject: str | None = None) -> SpeechPlan:
    path, options, _ = _options("meg-masc", location, MegMascOptions, subject, numeric_subject=True)
    return plan_meg_masc(path, options)


def _speech_brain(planner: Callable[..., SpeechPlan], prefix: str) -> Callable[..., Any]:
    """A ``load_brain`` loader: the word epochs of a speech data set, without stimuli."""

    def load(
        location: str, *, subject: str | None = None, meg_preparation: Any = None
    ) -> tuple[Any, None]:
        if meg_preparation is not None:
            raise ValueError(
                f"{prefix}: the MEG preparation comes from the spec's options (resample_hz=, "
                "zscore=, picks=, tmin=, tmax=), not from meg_preparation"
            )
        return read_word_epochs(planner(location, subject=subject)).brain, None

    return load


SPEECH_PREFIXES: dict[str, Callable[..., SpeechPlan]] = {
    "armeni2022": _armeni_plan,
    "meg-masc": _meg_masc_plan,
}
"""The speech data sets and their planners (word table and checks, no MEG read)."""

DATASET_PREFIXES: dict[str, Callable[..., Any]] = {
    "nsd": _nsd,
    "algonauts2023": _algonauts,
    "things-fmri": _things_fmri,
    "things-meg": _things_meg,
    **{prefix: _speech_brain(planner, prefix) for prefix, planner in SPEECH_PREFIXES.items()},
}
"""The registered prefixes and their loaders."""

for _prefix, _loader in DATASET_PREFIXES.items():
    register_brain_loader(_prefix, _loader)
for _prefix, _planner in SPEECH_PREFIXES.items():
    register_speech_loader(_prefix, _planner)
del _prefix, _loader, _planner
