"""A cell as a run folder and the command lines that run it.

Every cell gets ``<study>/runs/<cell name>/``. What the study adds to a training cell's fit
configs is written to ``inputs/`` in that folder (the levels' inline deltas, and
``study.yaml``: the TensorBoard logger under ``<study>/runs`` so that ``tensorboard --logdir
<study>`` shows every run side by side, the checkpoints, exports and probe callback, the seed,
and on SLURM the devices of the job); the fit then runs as

    brainalign fit --config BASE... --config LEVEL... --config inputs/study.yaml

and, run again after a kill or a requeue, with ``--ckpt_path <run>/checkpoints/last.ckpt``.
A probe cell runs ``brainalign probe --config inputs/probe.yaml --out <run>/probe``; a
language cell runs ``brainalign study probe-language <run>``, which reads
``inputs/language.yaml`` (the cell's :class:`~brainalign.probe.language_run.LanguageProbeConfig`,
paths made absolute) and writes ``<run>/probe``; a training cell probed after training runs
``brainalign study probe-exports <run>``.

The config hash of a cell is the sha256 of everything that defines it (the bytes of every
config file and of the generated inputs, in order): a run folder made from another
definition is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from brainalign.probe.config import ProbeConfig
from brainalign.study.config import StudyConfig
from brainalign.study.grid import Cell, merge_mappings
from brainalign.study.job_run import JobSpec

if TYPE_CHECKING:
    from brainalign.probe.language_run import LanguageProbeConfig

__all__ = [
    "CELL_FILE",
    "LANGUAGE_FILE",
    "RunPlan",
    "cell_probe_config",
    "check_language_inputs",
    "plan_run",
    "probe_exports_job",
    "read_language_inputs",
]

CELL_FILE = "cell.json"
INPUTS = "inputs"
LANGUAGE_FILE = "language.yaml"
LAST_CHECKPOINT = "checkpoints/last.ckpt"


@dataclass(frozen=True)
class RunPlan:
    """What a cell needs to run: its folder, command lines and the hash of its definition."""

    cell: Cell
    run_dir: Path
    job: JobSpec
    config_hash: str
    inputs: dict[str, str]  # file name in inputs/ -> content


def cell_probe_config(study: StudyConfig, cell: Cell) -> ProbeConfig:
    """The study's probe block with the cell's ``probe:`` deltas merged in."""
    if not cell.probe_delta:
        return study.probe
    from brainalign.commands.probe_options import probe_parser

    parser = probe_parser("study", "", with_model=False)
    merged = merge_mappings({"probe": probe_config_dict(study.probe)}, {"probe": cell.probe_delta})
    namespace = parser.parse_object(merged)
    return parser.instantiate(namespace).probe


def probe_config_dict(config: ProbeConfig) -> dict[str, Any]:
    """A probe block as plain YAML-ready values (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def language_config_dict(config: LanguageProbeConfig) -> dict[str, Any]:
    """A language probe as plain YAML-ready values, its model, words and cache made absolute
    (the job may run elsewhere than the study's folder; brain specs are written as given)."""
    absolute = dataclasses.replace(
        config,
        model=Path(config.model).absolute(),
        words=Path(config.words).absolute() if config.words is not None else None,
        cache_dir=Path(config.cache_dir).absolute() if config.cache_dir is not None else None,
    )
    return json.loads(json.dumps(dataclasses.asdict(absolute), default=str))


def read_language_inputs(run_dir: Path) -> LanguageProbeConfig:
    """The language probe of a study run folder (``inputs/language.yaml``), checked again."""
    from brainalign.study.config import language_probe_config

    path = Path(run_dir) / INPUTS / LANGUAGE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a language run of a study: no {path}")
    block = yaml.safe_load(path.read_text()) or {}
    if not isinstance(block, Mapping) or "model" not in block:
        raise ValueError(f"{path}: expected a mapping with model and the language probe's keys")
    block = dict(block)
    model = block.pop("model")
    return language_probe_config(block, model, str(path))


def check_language_inputs(plans: Sequence[RunPlan]) -> None:
    """Check every language cell's brain specs before any job starts (data set folders,
    subjects, sessions, word events; epochs files present): what
    :func:`~brainalign.probe.language_run.probe_language` checks first, done once per
    distinct set of specs, without reading MEG."""
    from brainalign.probe.language_run import plan_language_inputs

    checked: set[tuple[Any, ...]] = set()
    for plan in plans:
        config = plan.cell.language
        if config is None:
            continue
        key = (config.brain, config.words, config.content_only)
        if key in checked:
            continue
        try:
            plan_language_inputs(config)
        except (FileNotFoundError, ValueError) as error:
            raise type(error)(f"cell {plan.cell.name!r}: {error}") from None
        checked.add(key)


def _yaml(content: Mapping[str, Any]) -> str:
    return yaml.safe_dump(json.loads(json.dumps(content)), sort_keys=False)


def plan_run(study: StudyConfig, cell: Cell, study_dir: Path) -> RunPlan:
    """The folder, inputs and job of one cell (nothing is written)."""
    study_dir = study_dir.absolute()
    run_dir = study_dir / "runs" / cell.name
    inputs_dir = run_dir / INPUTS
    probe = cell_probe_config(study, cell)
    inputs: dict[str, str] = {}
    if cell.kind == "language":
        assert cell.language is not None
        inputs[LANGUAGE_FILE] = _yaml(language_config_dict(cell.language))
        argv = ["study", "probe-language", str(run_dir)]
        job = JobSpec(name=cell.name, run_dir=run_dir, argv=argv)
        return RunPlan(cell, run_dir, job, _hash([], inputs, cell), inputs)
    if cell.kind == "probe":
        assert cell.probe_model is not None
        inputs["probe.yaml"] = _yaml(
            {"model": dataclasses.asdict(cell.probe_model), "probe": probe_config_dict(probe)}
        )
        argv = [
            "probe",
            "--config",
            str(inputs_dir / "probe.yaml"),
            "--out",
            str(run_dir / "probe"),
        ]
        job = JobSpec(name=cell.name, run_dir=run_dir, argv=argv)
        return RunPlan(cell, run_dir, job, _hash([], inputs, cell), inputs)
    configs = [str(Path(base).absolute()) for base in study.base]
    for index, delta in enumerate(cell.fit_deltas):
        if isinstance(delta, str):
            configs.append(str(Path(delta).absolute()))
        else:
            name = f"level_{index}.yaml"
            inputs[name] = _yaml(delta)
            configs.append(str(inputs_dir / name))
    inputs["probe.yaml"] = _yaml({"probe": probe_config_dict(probe)})
    inputs["study.yaml"] = _yaml(_study_overrides(study, cell, study_dir, probe))
    configs.append(str(inputs_dir / "study.yaml"))
    argv = ["fit"] + [part for config in configs for part in ("--config", config)]
    job = JobSpec(
        name=cell.name,
        run_dir=run_dir,
        argv=argv,
        resume_argv=[*argv, "--ckpt_path", str(run_dir / LAST_CHECKPOINT)],
        resume_marker=LAST_CHECKPOINT,
    )
    files = [config for config in configs if not config.startswith(str(inputs_dir))]
    return RunPlan(cell, run_dir, job, _hash(files, inputs, cell), inputs)


def _study_overrides(
    study: StudyConfig, cell: Cell, study_dir: Path, probe: ProbeConfig
) -> dict[str, Any]:
    """The part of a training cell's config that the study owns."""
    probing = study.probing
    callbacks: list[dict[str, Any]] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "save_last": True,
                "save_top_k": 0,
                "every_n_train_steps": probing.checkpoint_every_n_steps,
            },
        },
        {
            "class_path": "brainalign.callbacks.LogSpacedCheckpoint",
            "init_args": {"n_checkpoints": probing.n_exports},
        },
    ]
    if probing.during_training:
        schedule = {
            "schedule": probing.schedule,
            "n_probes": probing.n_probes,
            "every_n_steps": probing.every_n_steps,
            "fractions": probing.fractions,
        }
        callbacks.append(
            {
                "class_path": "brainalign.callbacks.BrainProbeCallback",
                "init_args": {
                    "probe": probe_config_dict(probe),
                    **schedule,
                    "hparams": {
                        "study": study.name,
                        **{f"factor/{name}": level for name, level in cell.levels.items()},
                    },
                },
            }
        )
    trainer: dict[str, Any] = {
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {
                "save_dir": str(study_dir / "runs"),
                "name": cell.name,
                "version": "",
                "default_hp_metric": False,
            },
        },
        "enable_autolog_hparams": False,  # the probe callback writes hparams with its metrics
        "callbacks": callbacks,
    }
    if study.launcher.kind == "slurm":
        slurm = study.launcher.slurm
        processes = max(slurm.gpus_per_node, 1)
        trainer.update(devices=processes, num_nodes=slurm.nodes)
        if slurm.gpus_per_node:
            trainer["accelerator"] = "gpu"
        if processes * slurm.nodes > 1:
            trainer["strategy"] = "ddp"
    overrides: dict[str, Any] = {"trainer": trainer}
    if cell.seed is not None:
        overrides["seed_everything"] = cell.seed
    return overrides


def _hash(files: list[str], inputs: Mapping[str, str], cell: Cell) -> str:
    digest = hashlib.sha256(f"{cell.kind}\0{cell.name}\0".encode())
    for file in files:
        digest.update(f"{file}\0".encode() + Path(file).read_bytes() + b"\0")
    for name in sorted(inputs):
        digest.update(f"{name}\0{inputs[name]}\0".encode())
    return digest.hexdigest()


def probe_exports_job(plan: RunPlan, *, follow: bool = False) -> JobSpec:
    """The probe of a training cell's exports as a separate job (``--follow``: beside the fit)."""
    argv = ["study", "probe-exports", str(plan.run_dir)]
    return JobSpec(
        name=f"{plan.cell.name}:probe",
        run_dir=plan.run_dir / "probe_exports",
        argv=[*argv, "--follow"] if follow else argv,
    )
