"""The cells of a study: the full grid of its factors (or its explicit cells), crossed with seeds.

A cell is one run: a training run (its levels are fit config deltas), a probe of a given
model (one of its levels is ``{probe_model: ...}``) or a probe of a language model against
word-locked MEG (one of its levels is ``{probe_language: {model: ...}}``; the study's
``language:`` block with the levels' ``language:`` deltas merged in order). Its name,
``size=S__data=objects__seed=0``, names its folder; two cells with the same name are an error,
as is an explicit cell naming a factor or level the study does not have.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from brainalign.probe.config import ModelSource
from brainalign.study.config import StudyConfig, language_probe_config

if TYPE_CHECKING:
    from brainalign.probe.language_run import LanguageProbeConfig

__all__ = ["Cell", "expand_cells", "merge_mappings"]


@dataclass(frozen=True)
class Cell:
    """One run of a study.

    Attributes
    ----------
    name : str
        ``factor=level`` pairs joined by ``__`` (and ``seed=N``).
    levels : dict of str to str
        Factor -> level, plus ``seed`` when the study has seeds (training cells only).
    kind : {"fit", "probe", "language"}
    fit_deltas : list
        The fit config deltas of the levels, in factor order (files or mappings).
    probe_delta : dict
        The levels' ``probe:`` deltas merged in factor order.
    probe_model : ModelSource or None
        The model a probe cell probes.
    seed : int or None
    language : LanguageProbeConfig or None
        What a language cell runs (its model, the language block and the levels' deltas).
    """

    name: str
    levels: dict[str, str]
    kind: Literal["fit", "probe", "language"]
    fit_deltas: list[Any] = field(default_factory=list)
    probe_delta: dict[str, Any] = field(default_factory=dict)
    probe_model: ModelSource | None = None
    seed: int | None = None
    language: LanguageProbeConfig | None = None


def expand_cells(study: StudyConfig) -> list[Cell]:
    """Every cell of ``study``, in grid order (factors as declared, then seeds).

    Raises
    ------
    ValueError
        An explicit cell with an unknown or missing factor or level, a cell that mixes a
        model to probe with fit deltas, or two cells with the same run name.
    """
    factors = list(study.factors)
    if study.cells is None:
        combinations = [
            dict(zip(factors, levels))
            for levels in itertools.product(*(list(study.factors[f]) for f in factors))
        ]
    else:
        combinations = [_check_cell(study, index, cell) for index, cell in enumerate(study.cells)]
    cells: list[Cell] = []
    seen: dict[str, int] = {}
    for index, levels in enumerate(combinations):
        base = _cell(study, levels)
        seeds = study.seeds if base.kind == "fit" and study.seeds else [None]
        for seed in seeds:
            cell = base
            if seed is not None:
                cell = Cell(
                    name=f"{base.name}__seed={seed}",
                    levels={**base.levels, "seed": str(seed)},
                    kind=base.kind,
                    fit_deltas=base.fit_deltas,
                    probe_delta=base.probe_delta,
                    seed=int(seed),
                )
            if cell.name in seen:
                raise ValueError(
                    f"cells {seen[cell.name]} and {index} both resolve to the run name "
                    f"{cell.name!r}; list each combination of levels once"
                )
            seen[cell.name] = index
            cells.append(cell)
    return cells


def _check_cell(study: StudyConfig, index: int, cell: Mapping[str, str]) -> dict[str, str]:
    factors = list(study.factors)
    unknown = [name for name in cell if name not in study.factors]
    if unknown:
        hint = _did_you_mean(unknown[0], factors)
        raise ValueError(f"cells[{index}] names the unknown factor {unknown[0]!r}{hint}")
    missing = [name for name in factors if name not in cell]
    if missing:
        raise ValueError(f"cells[{index}] gives no level for the factor(s) {missing}")
    for factor, level in cell.items():
        if str(level) not in study.factors[factor]:
            hint = _did_you_mean(str(level), list(study.factors[factor]))
            raise ValueError(
                f"cells[{index}]: factor {factor!r} has no level {level!r}{hint} (levels: "
                f"{', '.join(study.factors[factor])})"
            )
    return {factor: str(cell[factor]) for factor in factors}


_PROBE_KEYS = ("probe", "probe_model", "probe_language", "language")


def _cell(study: StudyConfig, levels: dict[str, str]) -> Cell:
    name = "__".join(f"{factor}={level}" for factor, level in levels.items())
    fit_deltas: list[Any] = []
    probe_delta: dict[str, Any] = {}
    language_delta: dict[str, Any] = {}
    models: list[tuple[str, ModelSource]] = []
    language_models: list[tuple[str, str]] = []
    language_levels: list[str] = []
    for factor, level in levels.items():
        delta = study.level(factor, level)
        if isinstance(delta, Mapping):
            if "probe_model" in delta:
                models.append((f"{factor}={level}", ModelSource(**delta["probe_model"])))
            if "probe_language" in delta:
                language_models.append((f"{factor}={level}", delta["probe_language"]["model"]))
            if "probe" in delta:
                probe_delta = merge_mappings(probe_delta, delta["probe"])
            if "language" in delta:
                language_delta = merge_mappings(language_delta, delta["language"])
                language_levels.append(f"{factor}={level}")
            fit_part = {key: value for key, value in delta.items() if key not in _PROBE_KEYS}
            if fit_part:
                fit_deltas.append(fit_part)
        else:
            fit_deltas.append(delta)
    _check_mix(name, fit_deltas, probe_delta, models, language_models, language_levels)
    if language_models:
        model = language_models[0][1]
        config = language_probe_config(
            merge_mappings(study.language, language_delta), model, f"cell {name!r}"
        )
        return Cell(name=name, levels=dict(levels), kind="language", language=config)
    kind: Literal["fit", "probe"] = "probe" if models else "fit"
    if kind == "fit" and not study.base and not fit_deltas:
        raise ValueError(f"cell {name!r} has no fit config: give base configs or fit deltas")
    return Cell(
        name=name,
        levels=dict(levels),
        kind=kind,
        fit_deltas=fit_deltas,
        probe_delta=probe_delta,
        probe_model=models[0][1] if models else None,
    )


def _check_mix(
    name: str,
    fit_deltas: list[Any],
    probe_delta: dict[str, Any],
    models: list[tuple[str, ModelSource]],
    language_models: list[tuple[str, str]],
    language_levels: list[str],
) -> None:
    """One clear error for a cell whose levels do not make one kind of run."""
    if models and language_models:
        raise ValueError(
            f"cell {name!r} mixes a language model ({language_models[0][0]}) with a vision "
            f"model to probe ({models[0][0]}); a cell probes one model: list explicit cells "
            "(cells:) that keep them apart"
        )
    named = models or language_models
    if len(named) > 1:
        raise ValueError(
            f"cell {name!r} has two models to probe ({named[0][0]} and {named[1][0]}); "
            "put the models in one factor"
        )
    if named and fit_deltas:
        raise ValueError(
            f"cell {name!r} mixes a model to probe ({named[0][0]}) with fit config deltas; "
            "a probe cell trains nothing: give it only probe: or language: deltas, or list "
            "explicit cells"
        )
    if language_models and probe_delta:
        raise ValueError(
            f"cell {name!r} probes a language model ({language_models[0][0]}) but has probe: "
            "deltas, which apply to vision probes; give language: deltas instead"
        )
    if language_levels and not language_models:
        raise ValueError(
            f"cell {name!r} has a language: delta ({language_levels[0]}) but no language model "
            "to probe ({probe_language: {model: FOLDER}} in another factor); list explicit "
            "cells (cells:) that pair them"
        )


def merge_mappings(base: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict merge: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in delta.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = value
    return merged


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
