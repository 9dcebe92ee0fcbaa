"""Write files and folders atomically: to a temporary sibling, then rename into place.

A crash or an error half-way leaves the previous file (or nothing), never a half-written one.

- Final files and folders get the permissions of any new file (``0o666``/``0o777`` less the
  umask), so colleagues on a shared cluster can read them; the temporaries are created with
  ``os.open(O_CREAT | O_EXCL)`` and ``os.mkdir`` rather than ``tempfile``, whose ``0o600``/
  ``0o700`` modes would otherwise carry over to the result.
- Temporaries are named ``.<name>.tmp-<host>-<pid>-<token>`` after their owner process, so
  one left behind by a killed writer is recognised and removed by the next write to the same
  place (only when its owner ran on this host and is gone).
- :func:`atomic_directory` is create-or-fail: two writers of the same new folder cannot both
  succeed. The second fails with ``FileExistsError`` at the start when the first is still
  writing, or at the end when the first has finished (``os.rename`` onto an existing,
  non-empty folder fails; nothing is replaced). Looking for a live writer and creating the
  temporary folder is one step under an exclusive ``flock`` of the parent folder, so of
  writers started at the same instant exactly one goes on (also with ``overwrite``); where the
  file system has no ``flock`` (Windows, some network mounts) the step is a check then a
  create, and the rename at the end still lets only one new folder through.
- Entering :func:`atomic_directory` is the writability check of the destination: it fails at
  once, before the caller does any work, when a parent is a file, a parent cannot be created,
  or the parent folder is read-only; parent folders it created are removed again when the
  write fails.

Example::

    with atomic_directory("out/probe") as folder:
        (folder / "scores.csv").write_text(...)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from brainalign.utils.processes import process_alive

__all__ = [
    "atomic_directory",
    "atomic_path",
    "folder_lock",
    "remove_stale_temporaries",
    "temporary_folder",
]

_KINDS = ("tmp", "old")  # a file or folder being written; a folder being replaced
_MAX_NAME_ATTEMPTS = 100


def _host() -> str:
    """This machine's name with only letters, digits and ``_`` (it goes into file names)."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


@dataclass(frozen=True)
class _Temporary:
    """Who owns a temporary file or folder, read from its name."""

    path: Path
    host: str
    pid: int


def _temporary_name(base: str, kind: str, suffix: str) -> str:
    return f".{base}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _temporaries(folder: Path, base: str, suffix: str) -> list[_Temporary]:
    pattern = re.compile(
        rf"^\.{re.escape(base)}\.(?:{'|'.join(_KINDS)})-(?P<host>\w+)-(?P<pid>\d+)-[0-9a-f]{{8}}"
        rf"{re.escape(suffix)}$"
    )
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = pattern.match(name)
        if match is not None:
            found.append(_Temporary(folder / name, match["host"], int(match["pid"])))
    return found


def _is_stale(temporary: _Temporary) -> bool:
    return temporary.host == _host() and not process_alive(temporary.pid)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_temporaries(path: str | os.PathLike[str], *, suffix: str = "") -> list[Path]:
    """Remove the temporaries of ``path`` left by writers that were killed.

    A temporary is stale when the host in its name is this one and no process with its pid
    runs; temporaries of live writers, or of writers on other hosts (a shared file system),
    are kept.

    Parameters
    ----------
    path : path-like
        The destination whose temporaries to look for.
    suffix : str
        The suffix its temporary files keep (see :func:`atomic_path`).

    Returns
    -------
    removed : list of Path
    """
    target = Path(path)
    base = _base_name(target, suffix)
    removed = []
    for temporary in _temporaries(target.parent, base, suffix):
        if _is_stale(temporary):
            _remove(temporary.path)
            removed.append(temporary.path)
    return removed


def _base_name(target: Path, suffix: str) -> str:
    return target.name[: -len(suffix)] if suffix and target.name.endswith(suffix) else target.name


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # mode less the umask


def _new_folder(path: Path) -> None:
    os.mkdir(path, 0o777)  # mode less the umask


def _create(folder: Path, base: str, suffix: str, make: Callable[[Path], None]) -> Path:
    """Create a temporary with a fresh name (``make`` fails if the name exists)."""
    for _ in range(_MAX_NAME_ATTEMPTS):
        candidate = folder / _temporary_name(base, "tmp", suffix)
        try:
            make(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name for {folder / base} after many attempts")


def temporary_folder(target: str | os.PathLike[str]) -> Path:
    """Create a fresh, empty temporary folder beside ``target`` and return it.

    The folder is named after this process like every temporary here (so one left behind by a
    killed writer is removed by the next call for the same target) and gets the mode of any new
    folder (``0o777`` less the umask). The caller moves its content into place and removes it.
    """
    target = Path(target)
    remove_stale_temporaries(target)
    try:
        return _create(target.parent, target.name, "", _new_folder)
    except FileExistsError:
        raise
    except OSError as error:
        raise _cannot_create(target, target.parent, error) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffix of ``path`` so that writers that check extensions
    (pandas' ``.parquet``) accept it. The file replaces ``path`` if it exists (concurrent
    writers of the same file: the last one wins, each result whole).

    Parameters
    ----------
    path : path-like
        The file to write.
    suffix : str, optional
        The ending the temporary name must keep; default all suffixes of ``path``
        (MNE needs ``"-epo.fif"``).
    """
    target = Path(path)
    suffix = "".join(target.suffixes) if suffix is None else suffix
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target, suffix=suffix)
    temporary = _create(target.parent, _base_name(target, suffix), suffix, _new_file)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _live_writer(target: Path) -> _Temporary | None:
    """A temporary folder of ``target`` whose owner still runs (or may, on another host)."""
    for temporary in _temporaries(target.parent, target.name, ""):
        if temporary.path.is_dir() and not _is_stale(temporary):
            return temporary
    return None


def _refuse_concurrent(target: Path) -> None:
    writer = _live_writer(target)
    if writer is not None:
        raise FileExistsError(
            f"{target} is being written by another process (pid {writer.pid} on {writer.host}, "
            f"temporary folder {writer.path.name}); wait for it to finish or choose another path"
        )


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` of ``folder`` (released on exit, or when the process dies).

    :func:`atomic_directory` holds it only while looking for live writers and creating a
    temporary, so that step is atomic among writers of the same parent; writers that must
    check what is on disk and then write (the shard writers) hold it for the whole write.
    Not re-entrant: a process that holds it must not enter :func:`atomic_directory` on the
    same parent. Where ``flock`` is missing or refused, nothing is locked.
    """
    if sys.platform == "win32":
        yield
        return
    import fcntl

    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:  # e.g. NFS emulates flock with write locks, refused on this descriptor
            pass
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _make_parents(target: Path) -> list[Path]:
    """Create the missing parents of ``target``; returns those created, outermost first.

    Raises
    ------
    NotADirectoryError
        A parent exists and is not a folder (message names both).
    OSError
        A parent cannot be created (read-only or full file system, permissions).
    """
    parent = target.parent if str(target.parent) else Path(".")
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise NotADirectoryError(
            f"cannot create {target}: {existing} is a file, not a folder; choose another path"
        )
    missing = [path for path in (parent, *parent.parents) if not os.path.lexists(path)]
    created = []
    try:
        for path in reversed(missing):
            try:
                os.mkdir(path, 0o777)  # mode less the umask
            except FileExistsError:
                if not path.is_dir():
                    raise
                continue  # made by another process meanwhile: not ours to remove
            created.append(path)
    except OSError as error:
        _remove_empty(created)
        raise _cannot_create(target, path.parent, error) from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _cannot_create(target: Path, where: Path, error: OSError) -> OSError:
    """``error`` (same type, so callers can still tell permission from space) naming ``target``."""
    reason = (error.strerror or str(error)).lower()
    return type(error)(f"cannot create {target}: {reason} in {where}; choose another location")


def _publish_new(temporary: Path, target: Path) -> None:
    """``os.rename`` onto a name that must not exist: fails if another writer got there first."""
    try:
        os.rename(temporary, target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(
                f"{target} was created by another writer while this one ran; nothing was "
                "replaced: choose another path, or pass overwrite to replace it"
            ) from None
        raise


def _publish_replacing(temporary: Path, target: Path) -> None:
    """Move an existing ``target`` aside, move ``temporary`` in, then delete the old one."""
    if not target.exists():
        _publish_new(temporary, target)
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder; remove it or choose another")
    aside = target.parent / _temporary_name(target.name, "old", "")
    os.rename(target, aside)
    os.rename(temporary, target)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; move it to ``path`` on success.

    Create-or-fail: without ``overwrite``, the folder is published with ``os.rename`` onto a
    name that must not exist, so of two writers of the same new folder only one succeeds.
    With ``overwrite`` an existing folder is replaced (moved aside first, then deleted).
    Either way a second writer fails at once while another process is writing ``path``.
    Temporaries left by killed writers are removed first. Entering the context is the
    destination's writability check (callers enter it before their work, so a bad destination
    fails first); parents it creates are removed again if the write fails.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (at the start, or at the end when
        another writer created it meanwhile), ``path`` is a file, or another live process is
        writing ``path``.
    NotADirectoryError
        A parent of ``path`` is a file.
    OSError
        The folder cannot be created (``PermissionError``, read-only or full file system),
        with a message naming ``path``.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; choose another path or pass overwrite")
    if os.path.lexists(target) and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder; remove it or choose another")
    created = _make_parents(target)
    published = False
    temporary: Path | None = None
    try:
        with folder_lock(target.parent):
            _refuse_concurrent(target)  # live writers only: stale temporaries do not count
            temporary = temporary_folder(target)
        yield temporary
        if overwrite:
            _publish_replacing(temporary, target)
        else:
            _publish_new(temporary, target)
        published = True
    finally:
        if temporary is not None and temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
        if not published:
            _remove_empty(created)
