"""The study file: base fit configs, factors, the probe block, probing and the launcher.

A study file is YAML, parsed and checked with jsonargparse against these dataclasses (a
misspelt key is an error that names it), then checked as a whole before any job starts
(:func:`load_study`): every config file exists, every explicit cell names known factor
levels, no two cells share a run name. Example (``configs/studies/demo.yaml``)::

    name: demo
    base: [configs/experiments/demo.yaml]
    factors:
      size:                                   # each level: a fit config delta (file or mapping)
        tiny: {model: {backbone: vit_tiny_test}}
        small: configs/models/vit_small_test.yaml
      data:
        objects: {data: {sources: [...]}}
    seeds: [0]
    probe: {brain: [...], features: {pooling: cls}}   # the same block as `brainalign probe`
    probing: {during_training: true, n_probes: 8}
    launcher: {kind: local, max_workers: 2}

A level may instead name a model to probe (``{probe_model: {spec: timm:resnet50, weights:
r50.safetensors}}``): that cell is a probe of that model, not a training run (Study B's eight
vision models), and a study may mix both. A level's mapping may also hold a ``probe:`` delta
merged into the study's probe block (e.g. another pooling).

A level ``{probe_language: {model: /models/pythia-14m}}`` makes the cell a probe of that
Hugging Face language model against word-locked MEG (Study C;
:func:`brainalign.probe.language_run.probe_language`). The study's ``language:`` block holds
the other fields of :class:`~brainalign.probe.language_run.LanguageProbeConfig` (``brain``,
``context_words``, ``layers``, ``pca``...), and a level's ``language:`` mapping is a delta of it,
so that context length can be a factor::

    factors:
      model:
        p14m: {probe_language: {model: /models/pythia-14m}}
        p70m: {probe_language: {model: /models/pythia-70m}}
      context:
        c0: {language: {context_words: 0}}
        c50: {language: {context_words: 50}}
    language: {brain: ["meg-masc:/data/meg-masc?subject=01"], content_only: false}

Relative paths are resolved against the current folder, as ``brainalign fit --config`` does.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from brainalign.probe.config import ModelSource, ProbeConfig
from brainalign.study.launchers import Resources

if TYPE_CHECKING:
    from brainalign.probe.language_run import LanguageProbeConfig

__all__ = [
    "LauncherConfig",
    "ProbingConfig",
    "ReportConfig",
    "StudyConfig",
    "language_probe_config",
    "load_study",
]

#: Characters allowed in factor and level names (they become folder names).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True, kw_only=True)
class LauncherConfig:
    """Where the runs execute.

    Parameters
    ----------
    kind : {"local", "slurm"}
        ``local``: worker processes on this machine (the embedded default); ``slurm``: one
        job per run through submitit.
    max_workers : int
        Local runs at once (each gets an equal share of the CPU cores as torch threads).
    slurm : Resources
        What each SLURM job asks for (:class:`brainalign.study.launchers.Resources`).
    """

    kind: Literal["local", "slurm"] = "local"
    max_workers: int = 1
    slurm: Resources = field(default_factory=Resources)

    def __post_init__(self) -> None:
        if self.kind not in ("local", "slurm"):
            raise ValueError(f"launcher.kind must be local or slurm; got {self.kind!r}")
        value = self.max_workers
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"launcher.max_workers must be an integer >= 1; got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ProbingConfig:
    """When the fits of a study are probed.

    Parameters
    ----------
    during_training : bool
        Probe in training with :class:`~brainalign.callbacks.BrainProbeCallback` (the study's
        probe block) at the schedule below.
    after_training : bool
        Probe the run's teacher exports in a separate job (``brainalign study probe-exports``),
        so that a large run need not idle its GPUs while ridges are fitted.
    beside_training : bool
        Start that job with the fit instead of after it: it probes each export as the fit
        writes it (``--follow``), on its own resources. Implies ``after_training``.
    schedule : {"log", "every", "fractions"}
    n_probes, every_n_steps, fractions
        The callback's schedule (see :func:`brainalign.callbacks.probe_steps`).
    n_exports : int
        Log-spaced teacher exports per run (:class:`~brainalign.callbacks.LogSpacedCheckpoint`),
        probed by ``after_training``.
    checkpoint_every_n_steps : int
        ``last.ckpt`` cadence: a killed or preempted run resumes from there.
    """

    during_training: bool = True
    after_training: bool = False
    beside_training: bool = False
    schedule: Literal["log", "every", "fractions"] = "log"
    n_probes: int = 10
    every_n_steps: int = 1000
    fractions: list[float] | None = None
    n_exports: int = 10
    checkpoint_every_n_steps: int = 50

    def __post_init__(self) -> None:
        if not (self.during_training or self.after_training or self.beside_training):
            raise ValueError(
                "probing: set during_training and/or after_training (a study without probes "
                "has nothing to report)"
            )
        for name in ("n_probes", "every_n_steps", "n_exports", "checkpoint_every_n_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"probing.{name} must be an integer >= 1; got {value!r}")

    @property
    def probes_exports(self) -> bool:
        """Whether the exports are probed in jobs of their own (after or beside training)."""
        return self.after_training or self.beside_training


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """What ``brainalign study report`` computes.

    Parameters
    ----------
    alpha : float
        False-discovery rate of the Benjamini-Hochberg correction.
    n_permutations : int
        Permutations of the sign-flip and chance-level tests.
    seed : int
    factor_values : dict of factor to {level: number}
        Numeric values of levels for trend tests (e.g. ``steps: {short: 1000, long: 10000}``);
        factors that change the model size or ``trainer.max_steps`` get parameters and steps
        from the runs' resolved configs without it.
    """

    alpha: float = 0.05
    n_permutations: int = 2000
    seed: int = 0
    factor_values: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"report.alpha must be in (0, 1); got {self.alpha!r}")
        if isinstance(self.n_permutations, bool) or self.n_permutations < 100:
            raise ValueError(f"report.n_permutations must be >= 100; got {self.n_permutations!r}")


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """A study: a grid of runs over named factors, probed and compared.

    Parameters
    ----------
    name : str
        Names the study folder (default ``studies/<name>``).
    base : list of str
        Fit configs every training cell starts from, merged in order (as repeated
        ``--config``).
    factors : dict of factor to {level: delta}
        Each level is a fit config delta (a YAML file or an inline mapping), optionally with a
        ``probe:`` delta, or ``{probe_model: {spec: ...}}`` for a model to probe instead of a
        run to train, or ``{probe_language: {model: FOLDER}}`` for a language model to probe
        against word-locked MEG; a ``language:`` delta changes the language block.
    seeds : list of int
        Seeds (``seed_everything``) crossed with the grid; empty: the base config's seed.
    cells : list of {factor: level}, optional
        Explicit cells instead of the full grid.
    probe : ProbeConfig
        The probe block of every cell.
    language : dict
        The language block of every language cell: the fields of
        :class:`~brainalign.probe.language_run.LanguageProbeConfig` but ``model``.
    probing : ProbingConfig
    launcher : LauncherConfig
    report : ReportConfig
    directory : str, optional
        The study folder (default ``studies/<name>``).
    """

    name: str
    base: list[str] = field(default_factory=list)
    factors: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    cells: list[dict[str, str]] | None = None
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    language: dict[str, Any] = field(default_factory=dict)
    probing: ProbingConfig = field(default_factory=ProbingConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    directory: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name or ""):
            raise ValueError(
                f"study name {self.name!r}: use letters, digits, '_', '.', '+' or '-' (it names "
                "a folder)"
            )
        if not self.factors:
            raise ValueError("factors is empty: a study varies at least one factor")
        for factor, levels in self.factors.items():
            if not _NAME.match(str(factor)) or factor == "seed":
                raise ValueError(
                    f"factor name {factor!r}: use letters, digits, '_', '.', '+' or '-' "
                    "('seed' is taken by seeds)"
                )
            if not isinstance(levels, Mapping) or not levels:
                raise ValueError(f"factor {factor!r} has no levels: give {{level: delta, ...}}")
            for level, delta in levels.items():
                if not _NAME.match(str(level)):
                    raise ValueError(
                        f"factor {factor!r}: level name {level!r}: use letters, digits, '_', "
                        "'.', '+' or '-'"
                    )
                _check_delta(factor, str(level), delta)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds lists a seed more than once: {self.seeds}")
        _check_language_keys(self.language, "language")

    @property
    def folder(self) -> Path:
        """The study folder."""
        return Path(self.directory) if self.directory else Path("studies") / self.name

    def level(self, factor: str, level: str) -> Any:
        """The delta of one level (a path string or a mapping)."""
        return self.factors[factor][level]


def _check_delta(factor: str, level: str, delta: Any) -> None:
    where = f"factor {factor!r}, level {level!r}"
    if isinstance(delta, str):
        if not Path(delta).is_file():
            raise FileNotFoundError(f"{where}: config file {delta} does not exist")
        return
    if not isinstance(delta, Mapping):
        raise ValueError(
            f"{where}: a level is a fit config file, a mapping of config keys, "
            f"{{probe_model: {{spec: ...}}}} or {{probe_language: {{model: FOLDER}}}}; got "
            f"{type(delta).__name__}"
        )
    if "probe_language" in delta:
        _check_language_level(where, delta)
    if "language" in delta:
        if not isinstance(delta["language"], Mapping):
            raise ValueError(f"{where}: language must be a mapping (a delta of language:)")
        _check_language_keys(delta["language"], f"{where}: language")
    if "probe_model" in delta:
        _only_probe_keys(where, delta, "probe_model", "probe")
        spec = delta["probe_model"]
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: probe_model must be a mapping such as {{spec: timm:...}}")
        try:
            ModelSource(**spec)
        except TypeError as error:
            raise ValueError(f"{where}: probe_model: {error}") from None
    if "probe" in delta and not isinstance(delta["probe"], Mapping):
        raise ValueError(f"{where}: probe must be a mapping of probe keys (a delta of probe:)")


def _only_probe_keys(where: str, delta: Mapping[str, Any], model_key: str, delta_key: str) -> None:
    """A level naming a model to probe holds only that and a delta of its probe block."""
    extra = sorted(set(delta) - {model_key, delta_key})
    if extra:
        raise ValueError(
            f"{where}: a {model_key} level probes a model, it has no fit keys {extra}; move "
            f"them to another factor or drop them (a {delta_key}: delta may stay)"
        )


def _check_language_level(where: str, delta: Mapping[str, Any]) -> None:
    """A ``probe_language`` level: only ``model`` (a language model folder), beside
    ``language:``; the folder is checked here (config.json, no remote code)."""
    _only_probe_keys(where, delta, "probe_language", "language")
    spec = delta["probe_language"]
    if not isinstance(spec, Mapping) or set(spec) != {"model"}:
        raise ValueError(
            f"{where}: probe_language must be {{model: FOLDER}} (a Hugging Face folder on disk); "
            f"got {spec!r}"
        )
    from brainalign.probe.language import check_language_model_folder

    try:
        check_language_model_folder(spec["model"])
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f"{where}: probe_language: {error}") from None


def _language_fields() -> list[str]:
    from brainalign.probe.language_run import LanguageProbeConfig

    return [item.name for item in dataclasses.fields(LanguageProbeConfig) if item.name != "model"]


def _check_language_keys(block: Mapping[str, Any], where: str) -> None:
    """Every key of a language block (or delta) is a field of the language probe but ``model``."""
    if not block:
        return
    if "model" in block:
        raise ValueError(
            f"{where}: model is not a key of the language block: each language cell's model "
            "comes from its {probe_language: {model: FOLDER}} level"
        )
    fields = _language_fields()
    for key in block:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{where}: unknown key {key!r}{hint}; the keys are {', '.join(fields)}"
            )


@functools.cache
def _language_parser() -> Any:
    from jsonargparse import ArgumentParser

    from brainalign.probe.language_run import LanguageProbeConfig

    parser = ArgumentParser(exit_on_error=False, allow_abbrev=False, default_env=False)
    parser.add_class_arguments(LanguageProbeConfig, "language")
    return parser


def language_probe_config(
    block: Mapping[str, Any], model: str | Path, where: str
) -> LanguageProbeConfig:
    """The language probe of a cell: its block (deltas merged) and its model, type-checked.

    Parameters
    ----------
    block : mapping
        Fields of :class:`~brainalign.probe.language_run.LanguageProbeConfig` but ``model``.
    model : str or Path
        The language model folder.
    where : str
        Names the cell (or file) in error messages.

    Raises
    ------
    ValueError
        One line naming ``where`` and the bad key or value (a missing ``brain``, a misspelt
        key, a value of the wrong type).
    """
    from jsonargparse import ArgumentError

    _check_language_keys(block, f"{where}: language")
    parser = _language_parser()
    try:
        namespace = parser.parse_object({"language": {**block, "model": str(model)}})
        return parser.instantiate(namespace).language
    except ArgumentError as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        message = message.replace("the following arguments are required: ", "missing key(s) ")
        raise ValueError(f"{where}: language: {message.replace('language.', '')}") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: language: {error}") from None


def load_study(path: str | Path) -> StudyConfig:
    """Parse and check a study file (one ``ValueError`` line for any problem).

    Raises
    ------
    FileNotFoundError
        The study file, a base config or a level's config file is missing.
    ValueError
        A misspelt key (named with the file), a bad value, an explicit cell naming an
        unknown factor or level, or two cells with the same run name.
    """
    from jsonargparse import ArgumentError, ArgumentParser

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file not found: {path}")
    parser = ArgumentParser(exit_on_error=False, allow_abbrev=False, default_env=False)
    parser.add_class_arguments(StudyConfig, sub_configs=True)
    try:
        namespace = parser.parse_path(str(path))
    except ArgumentError as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise ValueError(f"{path}: {message}") from None
    try:
        study = parser.instantiate(namespace)
        study = study if isinstance(study, StudyConfig) else StudyConfig(**vars(study))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    for base in study.base:
        if not Path(base).is_file():
            raise FileNotFoundError(f"{path}: base config {base} does not exist")
    from brainalign.study.grid import expand_cells

    try:
        expand_cells(study)  # unknown levels, duplicate run names, language cells
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return study
