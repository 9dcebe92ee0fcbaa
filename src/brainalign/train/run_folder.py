"""The run folder: checked before a run starts, and emptied of what a run added if it fails early.

Lightning writes into the run folder before the first training step: ``config.yaml`` (the
save-config callback, at setup), the TensorBoard events file and ``hparams.yaml`` (the logger),
the step-0 export. A run that then fails used to leave those behind, and the half-made folder
confused ``--ckpt_path last`` and TensorBoard. :class:`RunFolderSnapshot` records what the run
folder holds before the run; :meth:`RunFolderSnapshot.undo` removes what was added since (and
puts back the small files that were overwritten), which ``brainalign fit`` does when a run fails
before its first step. :func:`check_writable` refuses a read-only location or a file system
without room for one checkpoint before anything is written.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["RunFolderSnapshot", "check_writable"]

#: Files directly in the run folder up to this size are kept in memory by the snapshot, so that
#: a failed start can put back a config.yaml or hparams.yaml it overwrote.
_RESTORED_FILE_BYTES = 1 << 20


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _tree(root: Path) -> set[Path]:
    found = {root}
    for folder, dirs, files in os.walk(root):
        found.update(Path(folder, name) for name in (*dirs, *files))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class RunFolderSnapshot:
    """What a run folder holds now, to undo what a failed run adds to it.

    Parameters
    ----------
    folder : path-like
        The run folder (``trainer.log_dir``); it may not exist yet.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(os.path.abspath(folder))
        self.existed = self.folder.exists()
        #: Folders between the run folder and its first existing ancestor (created by the run).
        self.missing_parents: list[Path] = []
        parent = self.folder.parent
        while not parent.exists() and parent != parent.parent:
            self.missing_parents.append(parent)
            parent = parent.parent
        self.paths: set[Path] = _tree(self.folder) if self.existed else set()
        self.small_files: dict[Path, bytes] = {}
        if self.existed and self.folder.is_dir():
            for entry in self.folder.iterdir():
                if entry.is_file() and entry.stat().st_size <= _RESTORED_FILE_BYTES:
                    self.small_files[entry] = entry.read_bytes()

    @property
    def protects_working_folder(self) -> bool:
        """Whether the run folder holds the current folder (then :meth:`undo` leaves it alone)."""
        here = Path.cwd().resolve()
        return self.folder.resolve() == here or self.folder.resolve() in here.parents

    def undo(self) -> None:
        """Remove what was added to the run folder since the snapshot; restore small files.

        A run folder that did not exist is removed with the parents the run created (those left
        empty). A run folder that is, or holds, the current folder is left alone.
        """
        if self.protects_working_folder:
            return
        if not self.existed:
            _remove(self.folder)
            for parent in self.missing_parents:  # deepest first
                try:
                    parent.rmdir()
                except OSError:  # not empty (someone else writes there) or already gone
                    break
            return
        added = sorted(_tree(self.folder) - self.paths, key=lambda p: len(p.parts))
        for path in added:
            if path.exists() or path.is_symlink():
                _remove(path)
        for path, content in self.small_files.items():
            if not path.is_file() or path.read_bytes() != content:
                path.write_bytes(content)


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError


def check_writable(folder: str | os.PathLike[str], *, needed_bytes: int = 0) -> None:
    """Raise ``OSError`` naming the folder if a run cannot write there.

    Tries to create (and removes) a file in the folder or its first existing ancestor, and
    compares the free space of that file system with ``needed_bytes``. Nothing is left behind.

    Parameters
    ----------
    folder : path-like
        The run folder.
    needed_bytes : int
        Space that the run needs (e.g. one checkpoint).

    Raises
    ------
    NotADirectoryError
        The path goes through a file.
    PermissionError, OSError
        The location is read-only or not writable, or has less free space than needed.
    """
    folder = Path(folder)
    base = _first_existing(folder)
    hint = "choose another place with --trainer.default_root_dir DIR"
    if not base.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, f"run folder {str(folder)!r} cannot be made: {str(base)!r} is a file"
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=base)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise type(error)(
            error.errno,
            f"run folder {str(folder)!r} cannot be written: {str(base)!r} is not writable "
            f"({reason}); {hint}",
        ) from None
    stats = os.statvfs(base)
    free = stats.f_bavail * stats.f_frsize
    if free < needed_bytes:
        raise OSError(
            errno.ENOSPC,
            f"run folder {str(folder)!r}: only {_size(free)} free on its file system, and one "
            f"checkpoint of this model takes about {_size(needed_bytes)}; free some space or "
            f"{hint}",
        )
