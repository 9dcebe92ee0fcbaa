"""The ``brainalign`` command.

``brainalign fit`` and ``brainalign validate`` are LightningCLI (typed signatures, ``--config``
files merged in order, ``--print_config``, the resolved config saved next to the logs). The
other subcommands work offline::

    brainalign fit --config configs/experiments/smoke.yaml
    brainalign shards IMAGE_DIR OUT_DIR
    brainalign simulate --out data/simulated
    brainalign probe --model runs/demo/exports/step_0000100 --brain data/simulated/fmri --out out/
    brainalign chronology runs/demo
    brainalign demo
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from brainalign.commands.fit import run_lightning

LIGHTNING_SUBCOMMANDS = ("fit", "validate")

#: Errors of the offline subcommands that describe bad input (named file, field or id): shown
#: as one line on stderr with exit status 2. Anything else is a bug and keeps its traceback.
#: KeyError: ids missing from a stimulus set, a dataset missing from an HDF5 file.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
)


def _add_shards(subparsers: argparse._SubParsersAction) -> Callable[[argparse.Namespace], None]:
    parser = subparsers.add_parser("shards", help="write webdataset shards from an image folder")
    parser.add_argument("image_dir", help="folder of images (searched recursively)")
    parser.add_argument("out_dir", help="folder to write shard-NNNNNN.tar files into")
    parser.add_argument("--max-count", type=int, default=1000, help="images per shard")
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards")

    def run(ns: argparse.Namespace) -> None:
        from pathlib import Path

        from brainalign.train.shards import write_image_shards

        paths = write_image_shards(
            Path(ns.image_dir), Path(ns.out_dir), max_count=ns.max_count, overwrite=ns.overwrite
        )
        print(f"wrote {len(paths)} shards to {ns.out_dir}")

    return run


def _offline_subcommands() -> dict[str, Callable]:
    """name -> function adding the subcommand's parser and returning its runner."""
    from brainalign.commands import chronology, demo, probe, probe_language, simulate

    return {
        "probe": probe.add,
        "probe-language": probe_language.add,
        "chronology": chronology.add,
        "simulate": simulate.add,
        "shards": _add_shards,
        "demo": demo.add,
    }


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = argparse.ArgumentParser(
        prog="brainalign",
        description="Train DINOv3-style ViTs and record when they align with fMRI and MEG.",
        epilog="fit and validate are LightningCLI: run `brainalign fit --help`.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_SUBCOMMANDS:
        subparsers.add_parser(name, help=f"LightningCLI {name} (see `brainalign {name} --help`)")
    runners = {name: add(subparsers) for name, add in _offline_subcommands().items()}
    return parser, runners


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``brainalign`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in LIGHTNING_SUBCOMMANDS:
        run_lightning(args)
        return
    parser, runners = build_parser()
    namespace = parser.parse_args(args)
    if namespace.command is None:
        parser.print_help()
        raise SystemExit(2)
    try:
        runners[namespace.command](namespace)
    except USER_ERRORS as error:
        parser.exit(2, f"brainalign {namespace.command}: error: {_message(error)}\n")


def _message(error: BaseException) -> str:
    """The error's text (a KeyError's str() would wrap its message in quotes)."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    return str(error)


if __name__ == "__main__":
    main()
