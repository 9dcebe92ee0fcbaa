"""The LightningCLI of ``brainalign fit`` and ``brainalign validate`` (see
:mod:`brainalign.commands.fit` for what it adds and how errors are shown).

:class:`BrainalignCLI` hooks into LightningCLI at these points:

- ``add_arguments_to_parser``: ``--model_from_ckpt``;
- ``_parse_ckpt_path`` (replaced): read a ``--ckpt_path FILE`` safely and compare its model
  with the config before anything is built;
- ``before_instantiate_classes``: ``trainer.max_steps``, and relative logger and checkpoint
  folders rooted at ``trainer.default_root_dir``;
- ``before_fit`` / ``before_validate`` (the trainer is built, nothing is written yet):
  ``--ckpt_path last`` resolved, ``check_inputs()`` of the data module, the model and the
  callbacks, the run folder checked and its contents recorded (:class:`RunState`).
"""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from brainalign.models.checkpoint import read_checkpoint
from brainalign.train.config_sources import ConfigSources
from brainalign.train.module import check_max_steps
from brainalign.train.preemption import CheckpointOnSignal
from brainalign.train.quiet_start import HeldWarnings
from brainalign.train.resume import (
    check_model_matches,
    describe_other_differences,
    model_differences,
)
from brainalign.train.run_folder import RunFolderSnapshot, check_writable

__all__ = ["BrainalignCLI", "RunState"]

_RESUME_KEYWORDS = ("last", "best", "hpc", "registry")


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _checkpoint_bytes(model: Any) -> int:
    """About the size of one full checkpoint: every weight, plus AdamW's two moments."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights + 2 * trainable


class RunState:
    """What the CLI learns while the run goes: its folder snapshot, whether a step was taken."""

    def __init__(self) -> None:
        self.warnings = HeldWarnings()
        self.snapshot: RunFolderSnapshot | None = None
        self.stepped = False
        self.preemption = CheckpointOnSignal()
        #: Added to every run's callbacks (trainer_defaults).
        self.callbacks: list[Callback] = [self.preemption, _FirstBatch(self)]

    def undo_if_early(self) -> None:
        """Remove what the run wrote if it took no step (rank 0 only)."""
        if self.snapshot is not None and not self.stepped and rank_zero_only.rank == 0:
            self.snapshot.undo()


class _FirstBatch(Callback):
    """Marks the first training step, and shows the held warnings after a first batch."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.state.stepped = True
        self.state.warnings.release()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.state.warnings.release()


def _check_probe_names(trainer: Any) -> None:
    """Two brain-probe callbacks with one name (their tags, chronology, state) is one error.

    Checked before the trainer is built: Lightning would stop with "more than one stateful
    callback" and a traceback.
    """
    from brainalign.callbacks.brain_probe import BrainProbeCallback

    names: list[str] = []
    for item in _as_list(trainer.get("callbacks")):
        if not hasattr(item, "get") or not _is_subclass(item.get("class_path"), BrainProbeCallback):
            continue
        init_args = item.get("init_args") or {}
        names.append(str(init_args.get("name") or "brain"))
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"trainer.callbacks: {names.count(repeated[0])} BrainProbeCallbacks are named "
            f"{repeated[0]!r}; give each its own init_args.name (it names its TensorBoard tags, "
            "chronology file and checkpoint state)"
        )


def _is_subclass(class_path: Any, base: type) -> bool:
    """Whether ``module.Class`` names a subclass of ``base`` (False when it cannot be imported)."""
    import importlib

    module_name, _, name = str(class_path or "").rpartition(".")
    try:
        candidate = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(candidate, type) and issubclass(candidate, base)


class BrainalignCLI(LightningCLI):
    """LightningCLI with brainalign's checks (see the module docstring)."""

    def __init__(self, *args: Any, run_state: RunState, sources: ConfigSources, **kwargs):
        self.run_state = run_state
        self.sources = sources
        super().__init__(*args, **kwargs)

    # ----------------------------------------------------------------- parsing
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--model_from_ckpt",
            type=bool,
            default=False,
            help="With --ckpt_path FILE: build the model the checkpoint was trained with "
            "(its saved model settings replace the config's model section). Without it, a "
            "model config of another architecture than the checkpoint's is an error.",
        )

    def _settings(self) -> Any:
        return self.config[self.config.subcommand]

    def _model_settings(self) -> dict[str, Any]:
        dumped = self.parser.dump(
            self.config, skip_link_targets=False, skip_none=False, format="yaml"
        )
        return yaml.safe_load(dumped)[self.config.subcommand]["model"]

    def _compare_model(self, checkpoint: dict[str, Any], path: str, *, can_take: bool) -> None:
        """Refuse another architecture; take the checkpoint's settings if asked."""
        saved = dict(checkpoint.get("hyper_parameters") or {})
        saved.pop("_instantiator", None)
        saved.pop("_class_path", None)
        if not saved:
            return
        configured = self._model_settings()
        if self._settings().get("model_from_ckpt"):
            if can_take:
                sub = self.config.subcommand
                self.config = self.parser.parse_object({sub: {"model": saved}}, self.config)
            elif model_differences(saved, configured):
                raise ValueError(
                    "--model_from_ckpt true needs the checkpoint's path, not --ckpt_path "
                    f"last (the model is built by then): pass --ckpt_path {path}"
                )
            return
        differences = check_model_matches(path, saved, configured)
        if differences:
            note = describe_other_differences(path, differences)
            self.run_state.warnings.note(f"brainalign {self.config.subcommand}: note: {note}")

    def _parse_ckpt_path(self) -> None:
        """Check a ``--ckpt_path FILE`` before anything is built (replaces Lightning's)."""
        if not self.config.get("subcommand"):
            return
        ckpt_path = self._settings().get("ckpt_path")
        if not ckpt_path or str(ckpt_path).startswith(_RESUME_KEYWORDS) or "://" in ckpt_path:
            return
        if Path(ckpt_path).is_dir():
            if not (Path(ckpt_path) / ".metadata").is_file():
                raise IsADirectoryError(
                    errno.EISDIR,
                    f"--ckpt_path {ckpt_path!r} is a folder but not a sharded checkpoint (no "
                    ".metadata file in it); give a .ckpt file, e.g. "
                    "runs/<name>/checkpoints/last.ckpt, or --ckpt_path last",
                )
            return  # a sharded (distributed) checkpoint: Lightning's strategy reads it
        checkpoint = read_checkpoint(ckpt_path)
        self._compare_model(checkpoint, str(ckpt_path), can_take=True)

    # ----------------------------------------------------------------- building
    def instantiate_classes(self) -> None:
        """Build as LightningCLI does; a ``"<name> must ..."`` error gets its key and source."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            raise ValueError(self._with_origin(str(error))) from error

    def _with_origin(self, message: str) -> str:
        """``"batch_size must be >= 1"`` -> ``"data.batch_size must be >= 1 (set in x.yaml)"``."""
        match = re.match(r"(\w+) must ", message)
        if match is None:
            return message
        for section in ("model", "data", "trainer"):
            key = f"{section}.{match.group(1)}"
            where = self.sources.where(key)
            if where:
                return f"{key}{message[match.end(1) :]}{where}"
        return message

    def before_instantiate_classes(self) -> None:
        trainer = self._settings()["trainer"]
        check_max_steps(trainer.get("max_steps"), self.sources.where("trainer.max_steps"))
        _check_probe_names(trainer)
        self._root_run_paths(trainer)

    @staticmethod
    def _root_run_paths(trainer: Any) -> None:
        """Take relative logger and checkpoint folders relative to default_root_dir."""
        root = trainer.get("default_root_dir")
        if not root:
            return
        for section, key in (("logger", "save_dir"), ("callbacks", "dirpath")):
            for item in _as_list(trainer.get(section)):
                init_args = item.get("init_args") if hasattr(item, "get") else None
                value = init_args.get(key) if init_args is not None else None
                if isinstance(value, (str, os.PathLike)) and not os.path.isabs(value):
                    init_args[key] = os.path.join(root, value)

    # ----------------------------------------------------------------- before the run
    def _resolve_last(self, command: str) -> str | None:
        """The newest ``last*.ckpt`` of the checkpoint callbacks, or None (said in a line)."""
        trainer = self.trainer
        callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
        found = set()
        for callback in callbacks:
            found |= {p for p in callback._find_last_checkpoints(trainer) if os.path.isfile(p)}
        if found:
            return max(found, key=os.path.getmtime)
        run_dir = trainer.log_dir or trainer.default_root_dir
        folders = sorted({cb.dirpath or os.path.join(run_dir, "checkpoints") for cb in callbacks})
        where = ", ".join(folders) if folders else f"{run_dir} (no ModelCheckpoint callback)"
        if command != "fit":
            raise FileNotFoundError(
                f"--ckpt_path last: no last checkpoint in {where}, so there is nothing to "
                f"{command}; give the path of a .ckpt file"
            )
        print(
            f"brainalign fit: --ckpt_path last: no last checkpoint in {where} yet, so there "
            "is nothing to resume; starting from step 0",
            file=sys.stderr,
        )
        return None

    def _before_run(self, command: str) -> None:
        settings = self.config_init[command]
        if settings.get("ckpt_path") == "last":
            settings["ckpt_path"] = self._resolve_last(command)
            if settings["ckpt_path"] is not None:
                checkpoint = read_checkpoint(settings["ckpt_path"])
                self._compare_model(checkpoint, settings["ckpt_path"], can_take=False)
        if "weights_only" in settings and settings["weights_only"] is None:
            settings["weights_only"] = True  # never unpickle code from a checkpoint
        for part in (self.datamodule, self.model, *self.trainer.callbacks):
            check = getattr(part, "check_inputs", None)
            if callable(check):
                check()
        run_dir = self.trainer.log_dir or self.trainer.default_root_dir
        needed = _checkpoint_bytes(self.model) if command == "fit" else 0
        check_writable(run_dir, needed_bytes=needed)
        self.run_state.snapshot = RunFolderSnapshot(run_dir)

    def before_fit(self) -> None:
        self._before_run("fit")

    def before_validate(self) -> None:
        self._before_run("validate")
