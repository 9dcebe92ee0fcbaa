"""``brainalign fit`` and ``brainalign validate``: LightningCLI on the DINOv3 module and data.

What :class:`BrainalignCLI` adds to LightningCLI:

- **One error line.** Bad input (a parse error, an unknown backbone, a bad data source, a
  damaged checkpoint, a read-only or full run location...) ends with one line on stderr,
  ``brainalign fit: error: ...``, naming the key, file or value, exit status 2, no traceback.
  Parse errors name the ``--config`` file (or the command line) that set the key.
- **Checks before the run folder exists**: ``trainer.max_steps``, the data sources' content
  (``SSLDataModule.check_inputs``; any model or callback with a ``check_inputs()`` method is
  checked too), the checkpoint, and that the run folder can be written with room for one
  checkpoint. A run that still fails before its first step removes what it wrote.
- **Resume**: ``--ckpt_path FILE`` is read safely (no pickled code) and its model compared with
  the config: another architecture is an error naming both, unless ``--model_from_ckpt true``
  takes the checkpoint's model settings (LightningCLI's behaviour, which did so silently).
  ``--ckpt_path last`` with nothing saved yet says so in one line and starts from step 0.
- **Preemption**: SIGTERM and SIGUSR1 finish the step, save ``last.ckpt`` and stop
  (:class:`~brainalign.train.preemption.CheckpointOnSignal`), exit status 128 + signal.
- ``--trainer.default_root_dir DIR`` moves the whole run: relative logger ``save_dir`` and
  checkpoint ``dirpath`` values are taken relative to DIR instead of the current folder.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_RESUME_KEYWORDS = ("last", "best", "hpc", "registry")


def _message(error: BaseException) -> str:
    """The error's text on one line (an OSError's reason and file, not its errno prefix)."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
        if error.filename is not None:
            text += f": {os.fsdecode(error.filename)!r}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _checkpoint_bytes(model: Any) -> int:
    """About the size of one full checkpoint: every weight, plus AdamW's two moments."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights + 2 * trainable


class _RunState:
    """What the CLI learns while the run goes: its folder snapshot, whether a step was taken."""

    def __init__(self) -> None:
        from lightning.pytorch.callbacks import Callback

        from brainalign.train.preemption import CheckpointOnSignal
        from brainalign.train.quiet_start import HeldWarnings

        self.warnings = HeldWarnings()
        self.snapshot: Any = None
        self.stepped = False
        self.preemption = CheckpointOnSignal()
        state = self

        class FirstBatch(Callback):
            """Marks the first training step, and shows the held warnings after a first batch."""

            def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
                state.stepped = True
                state.warnings.release()

            def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
                state.warnings.release()

        self.callbacks = [self.preemption, FirstBatch()]

    def undo_if_early(self) -> None:
        """Remove what the run wrote if it took no step (rank 0 only)."""
        from lightning.pytorch.utilities.rank_zero import rank_zero_only

        if self.snapshot is not None and not self.stepped and rank_zero_only.rank == 0:
            self.snapshot.undo()


def _cli_class() -> type:
    """:class:`BrainalignCLI`, defined on first use so that importing this module stays light."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from brainalign.models.checkpoints import read_checkpoint
    from brainalign.train.config_sources import ConfigSources
    from brainalign.train.module import check_max_steps
    from brainalign.train.resume import (
        check_model_matches,
        describe_other_differences,
        model_differences,
    )
    from brainalign.train.run_folder import RunFolderSnapshot, check_writable

    class BrainalignCLI(LightningCLI):
        """LightningCLI with brainalign's checks (see the module docstring)."""

        def __init__(self, *args: Any, run_state: _RunState, sources: ConfigSources, **kwargs):
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
            import yaml

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

        # ----------------------------------------------------------------- before building
        def before_instantiate_classes(self) -> None:
            trainer = self._settings()["trainer"]
            check_max_steps(trainer.get("max_steps"), self.sources.where("trainer.max_steps"))
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
            callbacks = [
                cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)
            ]
            found = set()
            for callback in callbacks:
                found |= {p for p in callback._find_last_checkpoints(trainer) if os.path.isfile(p)}
            if found:
                return max(found, key=os.path.getmtime)
            run_dir = trainer.log_dir or trainer.default_root_dir
            folders = sorted(
                {cb.dirpath or os.path.join(run_dir, "checkpoints") for cb in callbacks}
            )
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

    return BrainalignCLI


def run_lightning(args: Sequence[str]) -> None:
    """Run ``brainalign fit`` / ``brainalign validate`` (LightningCLI) with brainalign's checks.

    Parameters
    ----------
    args : sequence of str
        The arguments after ``brainalign``: the subcommand, then LightningCLI's options.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from brainalign.train.config_sources import ConfigSources, parse_error_line
    from brainalign.train.data import DataSourceError, SSLDataModule
    from brainalign.train.module import DINOv3Module
    from brainalign.train.quiet_start import lightning_notes_to_stdout

    user_errors = (ValueError, OSError, MisconfigurationException, DataSourceError)
    command = args[0] if args else "fit"
    sources = ConfigSources(args)
    state = _RunState()
    lightning_notes_to_stdout()
    state.warnings.start()

    def fail(line: str, status: int = 2) -> None:
        state.warnings.drop()
        state.undo_if_early()
        sys.stderr.write(f"brainalign {command}: {line}\n")
        raise SystemExit(status)

    argv, sys.argv = sys.argv, [sys.argv[0], *args]  # DDP relaunches sys.argv
    try:
        _cli_class()(
            DINOv3Module,
            SSLDataModule,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"allow_abbrev": False, "exit_on_error": False},
            trainer_defaults={"callbacks": state.callbacks},
            seed_everything_default=0,
            auto_configure_optimizers=False,
            run_state=state,
            sources=sources,
        )
    except SIGTERMException:
        signum = state.preemption.received or signal.SIGTERM
        name = signal.Signals(signum).name
        saved = state.preemption.saved
        what = (
            f"saved {', '.join(saved)}: resume with --ckpt_path last"
            if saved
            else ("no step was taken since the start, so there was nothing new to save")
        )
        fail(f"stopped by {name}; {what}", 128 + signum)
    except ArgumentError as error:
        fail(f"error: {parse_error_line(str(error), sources)}; see `brainalign {command} --help`")
    except user_errors as error:
        fail(f"error: {_message(error)}")
    except BaseException:
        state.warnings.release()
        state.undo_if_early()
        raise
    else:
        state.warnings.release()
    finally:
        sys.argv = argv
