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
import errno
import sys
from collections.abc import Callable, Sequence

from brainalign.commands.fit import run_lightning

LIGHTNING_SUBCOMMANDS = ("fit", "validate")

#: Subcommands that parse their own typed options with jsonargparse: name -> (module, help).
JSONARGPARSE_SUBCOMMANDS = {
    "probe": ("brainalign.commands.probe", "score a model against fMRI and MEG data (offline)"),
    "chronology": (
        "brainalign.commands.chronology",
        "half times of alignment over training, for one or several runs",
    ),
    "study": (
        "brainalign.commands.study",
        "run a factorial study (grid of runs) and compare its runs with statistics",
    ),
}

#: Errors of the offline subcommands that describe bad input (named file, field or id) or the
#: file system (permissions, a read-only or full disk, a file where a folder should be): shown
#: as one line on stderr with exit status 2. Anything else is a bug and keeps its traceback.
#: KeyError: ids missing from a stimulus set, a dataset missing from an HDF5 file.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    OSError,  # FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError...
)

#: What to do about an operating-system error, by errno name.
_OS_ERROR_REMEDIES = {
    "EACCES": "check its permissions (or use another path)",
    "EPERM": "check its permissions (or use another path)",
    "EROFS": "the file system is read-only: choose another location",
    "ENOSPC": "the disk is full: free some space or choose another location",
    "EDQUOT": "the disk quota is exceeded: free some space or choose another location",
    "ENOTDIR": "a part of the path is a file, not a folder",
    "EISDIR": "it is a folder; give a file",
}


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (the usage is in ``--help``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    from brainalign.commands import demo, probe_language, simulate

    return {
        "probe-language": probe_language.add,
        "simulate": simulate.add,
        "shards": _add_shards,
        "demo": demo.add,
    }


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = OneLineParser(
        prog="brainalign",
        description="Train DINOv3-style ViTs and record when they align with fMRI and MEG.",
        epilog="fit and validate are LightningCLI: run `brainalign fit --help`.",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=OneLineParser
    )
    for name in LIGHTNING_SUBCOMMANDS:
        subparsers.add_parser(name, help=f"LightningCLI {name} (see `brainalign {name} --help`)")
    for name, (_, text) in JSONARGPARSE_SUBCOMMANDS.items():
        subparsers.add_parser(name, help=f"{text} (see `brainalign {name} --help`)")
    runners = {name: add(subparsers) for name, add in _offline_subcommands().items()}
    return parser, runners


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``brainalign`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in LIGHTNING_SUBCOMMANDS:
        run_lightning(args)
        return
    if args and args[0] in JSONARGPARSE_SUBCOMMANDS:
        run_jsonargparse(args[0], args[1:])
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


def run_jsonargparse(name: str, args: Sequence[str]) -> None:
    """Run a jsonargparse subcommand; bad input ends in one line on stderr, exit status 2."""
    import importlib

    module = importlib.import_module(JSONARGPARSE_SUBCOMMANDS[name][0])
    try:
        module.main(args)
    except USER_ERRORS as error:
        sys.stderr.write(f"brainalign {name}: error: {_message(error)}\n")
        raise SystemExit(2) from None


def _message(error: BaseException) -> str:
    """The error's text on one line.

    A KeyError's str() would wrap its message in quotes; an operating-system error raised by
    the system (``[Errno 13] Permission denied: 'out/x'``) becomes ``out/x: permission denied;
    check its permissions or choose another location``.
    """
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        where = f"{error.filename}: " if error.filename is not None else ""
        if error.filename2 is not None:
            where = f"{error.filename} -> {error.filename2}: "
        remedy = _OS_ERROR_REMEDIES.get(errno.errorcode.get(error.errno, ""))
        reason = error.strerror[:1].lower() + error.strerror[1:]
        return f"{where}{reason}" + (f"; {remedy}" if remedy else "")
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    main()
