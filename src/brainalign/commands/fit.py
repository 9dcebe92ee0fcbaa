"""``brainalign fit`` and ``brainalign validate``: LightningCLI on the DINOv3 module and data.

What :class:`~brainalign.train.lightning_cli.BrainalignCLI` adds to LightningCLI:

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

import os
import signal
import sys
from argparse import ArgumentError
from collections.abc import Sequence


def _message(error: BaseException) -> str:
    """The error's text on one line (an OSError's reason and file, not its errno prefix)."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
        if error.filename is not None:
            text += f": {os.fsdecode(error.filename)!r}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


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
    from brainalign.train.lightning_cli import BrainalignCLI, RunState
    from brainalign.train.module import DINOv3Module
    from brainalign.train.quiet_start import lightning_notes_to_stdout

    user_errors = (ValueError, OSError, MisconfigurationException, DataSourceError)
    command = args[0] if args else "fit"
    sources = ConfigSources(args)
    state = RunState()
    lightning_notes_to_stdout()
    state.warnings.start()

    def fail(line: str, status: int = 2) -> None:
        state.warnings.drop()
        state.undo_if_early()
        sys.stderr.write(f"brainalign {command}: {line}\n")
        raise SystemExit(status)

    argv, sys.argv = sys.argv, [sys.argv[0], *args]  # DDP relaunches sys.argv
    try:
        BrainalignCLI(
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
