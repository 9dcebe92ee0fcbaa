"""Atomic writes: permissions of any new file, create-or-fail folders, stale temporaries removed.

Concurrency and crashes use real second processes (``subprocess`` running a short script), so
the pid in a temporary's name really belongs to a process that ran and is gone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from brainalign.utils.atomic import atomic_directory, atomic_path, remove_stale_temporaries

SOURCE = str(Path(__file__).resolve().parents[2] / "src")


def run_python(code: str, *args: str) -> subprocess.Popen:
    """Start ``python -c code args...`` with brainalign importable."""
    environment = {**os.environ, "PYTHONPATH": SOURCE}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def hidden(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.01)


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


# ---------------------------------------------------------------------- permissions
@pytest.mark.parametrize(
    ("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_final_files_and_folders_honour_the_umask(tmp_path, umask, mask, file_mode, folder_mode):
    umask(mask)
    with atomic_path(tmp_path / "table.parquet") as temporary:
        temporary.write_text("rows")
    with atomic_directory(tmp_path / "probe") as folder:
        (folder / "scores.csv").write_text("r")
    reference = tmp_path / "plain.txt"  # what any other new file gets
    reference.write_text("x")
    assert stat.S_IMODE((tmp_path / "table.parquet").stat().st_mode) == file_mode
    assert stat.S_IMODE(reference.stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "probe").stat().st_mode) == folder_mode
    assert stat.S_IMODE((tmp_path / "probe" / "scores.csv").stat().st_mode) == file_mode


def test_an_fmri_folder_and_an_epochs_file_are_readable_by_others(tmp_path, umask):
    import numpy as np
    import pandas as pd

    from brainalign.probe.brain_data import BrainData
    from brainalign.probe.formats import write_fmri_folder, write_meg_epochs

    ids = ["a", "b", "c"]
    brain = BrainData(
        modality="fmri",
        subject="s",
        data=np.eye(3),
        stimulus_ids=ids,
        targets=pd.DataFrame({"roi": ["V1"] * 3, "x": 0.0, "y": 0.0, "z": 0.0}),
    )
    folder = write_fmri_folder(tmp_path / "fmri", brain, pd.DataFrame({"stimulus_id": ids}))
    epochs = write_meg_epochs(
        tmp_path / "s-epo.fif", np.zeros((3, 2, 4)), np.arange(4) / 100.0, ["M1", "M2"], 100.0, ids
    )
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE(epochs.stat().st_mode) == 0o644
    assert hidden(tmp_path) == []


# ---------------------------------------------------------------------- create-or-fail
def test_a_second_writer_fails_at_once_while_the_first_is_writing(tmp_path):
    out, go = tmp_path / "probe", tmp_path / "go"
    first = run_python(
        """
        import sys, time
        from pathlib import Path
        from brainalign.utils.atomic import atomic_directory
        out, go = Path(sys.argv[1]), Path(sys.argv[2])
        with atomic_directory(out) as folder:
            (folder / "owner.txt").write_text("first")
            (go.parent / "inside").write_text("")
            while not go.exists():
                time.sleep(0.01)
        """,
        str(out),
        str(go),
    )
    try:
        wait_for(tmp_path / "inside")
        with pytest.raises(FileExistsError, match=f"{out} is being written by another process"):
            with atomic_directory(out) as folder:
                (folder / "owner.txt").write_text("second")
        with pytest.raises(FileExistsError, match="being written"):  # overwrite cannot race it
            with atomic_directory(out, overwrite=True):
                pass
    finally:
        go.write_text("")
        assert first.wait(timeout=60) == 0, first.stderr.read()
    assert (out / "owner.txt").read_text() == "first"
    assert hidden(tmp_path) == []


def test_a_folder_created_during_the_write_is_never_replaced(tmp_path):
    out = tmp_path / "probe"
    with pytest.raises(FileExistsError, match=f"{out} was created by another writer"):
        with atomic_directory(out) as folder:
            (folder / "owner.txt").write_text("late")
            out.mkdir()  # another writer (or a person) finished first
            (out / "owner.txt").write_text("early")
    assert (out / "owner.txt").read_text() == "early"
    assert hidden(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True])
def test_of_writers_started_together_exactly_one_succeeds(tmp_path, overwrite):
    """Without overwrite the final rename lets one through; with it, the parent's lock does."""
    out, go = tmp_path / "probe", tmp_path / "go"
    if overwrite:
        out.mkdir()
        (out / "owner.txt").write_text("before")
    code = """
        import sys, time
        from pathlib import Path
        from brainalign.utils.atomic import atomic_directory
        out, go, name, overwrite = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
        (go.parent / f"ready-{name}").write_text("")
        while not go.exists():
            time.sleep(0.001)
        try:
            with atomic_directory(out, overwrite=overwrite == "True") as folder:
                time.sleep(0.3)
                (folder / "owner.txt").write_text(name)
        except FileExistsError as error:
            print(error)
            sys.exit(3)
        """
    writers = [run_python(code, str(out), str(go), f"writer{i}", str(overwrite)) for i in range(3)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3:  # all three imported and polling
        assert time.monotonic() < deadline, [writer.poll() for writer in writers]
        time.sleep(0.01)
    go.write_text("")
    codes = [writer.wait(timeout=60) for writer in writers]
    assert sorted(codes) == [0, 3, 3], [writer.stderr.read() for writer in writers]
    winner = codes.index(0)
    assert (out / "owner.txt").read_text() == f"writer{winner}"
    for writer, code in zip(writers, codes):
        if code == 3:
            assert str(out) in writer.stdout.read()
    assert hidden(tmp_path) == []


def test_overwrite_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "probe"
    with atomic_directory(out) as folder:
        (folder / "old.csv").write_text("old")
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_directory(out):
            pass
    with atomic_directory(out, overwrite=True) as folder:
        (folder / "new.csv").write_text("new")
    assert sorted(path.name for path in out.iterdir()) == ["new.csv"]
    assert hidden(tmp_path) == []


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "probe") as folder:
            (folder / "half.csv").write_text("half")
            raise RuntimeError("failed half-way")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "table.csv") as temporary:
            temporary.write_text("half")
            raise RuntimeError("failed half-way")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="no flock")
def test_looking_for_writers_and_creating_the_temporary_waits_for_the_parents_lock(tmp_path):
    """The check-then-create step runs under an exclusive flock of the parent folder."""
    import fcntl

    out = tmp_path / "probe"
    descriptor = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        writer = run_python(
            """
            import sys
            from pathlib import Path
            from brainalign.utils.atomic import atomic_directory
            out = Path(sys.argv[1])
            with atomic_directory(out) as folder:
                (folder / "owner.txt").write_text("writer")
            """,
            str(out),
        )
        time.sleep(3.0)  # long enough to start Python and reach the lock
        assert writer.poll() is None and hidden(tmp_path) == []  # waiting, nothing created
    finally:
        os.close(descriptor)  # releases the lock
    assert writer.wait(timeout=60) == 0, writer.stderr.read()
    assert (out / "owner.txt").read_text() == "writer"


# ---------------------------------------------------------------------- the destination
def test_parents_created_for_a_failed_write_are_removed(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "a" / "b" / "c" / "probe"):
            assert (tmp_path / "a" / "b" / "c").is_dir()
            raise RuntimeError("failed half-way")
    assert [path.name for path in tmp_path.rglob("*")] == ["a"]  # "a" was there before
    with atomic_directory(tmp_path / "a" / "b" / "probe") as folder:
        (folder / "whole.csv").write_text("whole")
    assert (tmp_path / "a" / "b" / "probe" / "whole.csv").is_file()


def test_a_file_in_the_way_fails_before_the_work_and_names_it(tmp_path):
    (tmp_path / "notes").write_text("mine")
    with pytest.raises(
        NotADirectoryError, match=r"cannot create .*notes/sub/probe: .*notes is a file"
    ):
        with atomic_directory(tmp_path / "notes" / "sub" / "probe"):
            raise AssertionError("the body must not run")
    with pytest.raises(FileExistsError, match="notes exists and is not a folder"):
        with atomic_directory(tmp_path / "notes", overwrite=True):
            raise AssertionError("the body must not run")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes"]


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root writes read-only folders")
def test_a_read_only_parent_fails_before_the_work_and_names_the_destination(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(
            PermissionError, match=r"cannot create .*locked/probe: permission denied"
        ):
            with atomic_directory(locked / "probe"):
                raise AssertionError("the body must not run")
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------------- killed writers
KILLED_WRITER = """
    import os, sys
    from pathlib import Path
    from brainalign.utils.atomic import atomic_directory, atomic_path
    kind, out = sys.argv[1], Path(sys.argv[2])
    writer = atomic_directory(out) if kind == "folder" else atomic_path(out)
    with writer as temporary:
        if kind == "folder":
            (temporary / "half.csv").write_text("half")
        else:
            temporary.write_text("half")
        os._exit(9)  # killed mid-write: no cleanup runs
    """


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path, kind):
    out = tmp_path / ("probe" if kind == "folder" else "chronology.parquet")
    killed = run_python(KILLED_WRITER, kind, str(out))
    assert killed.wait(timeout=60) == 9
    left = hidden(tmp_path)
    assert len(left) == 1 and ".tmp-" in left[0] and f"-{killed.pid}-" in left[0]
    assert not out.exists()
    if kind == "folder":
        with atomic_directory(out) as folder:
            (folder / "whole.csv").write_text("whole")
        assert [path.name for path in out.iterdir()] == ["whole.csv"]
    else:
        with atomic_path(out) as temporary:
            temporary.write_text("whole")
        assert out.read_text() == "whole"
    assert hidden(tmp_path) == []


def test_temporaries_of_live_or_remote_writers_are_kept(tmp_path):
    out = tmp_path / "probe"
    sleeper = run_python("import time; time.sleep(60)")
    try:
        import socket

        host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())
        live = tmp_path / f".probe.tmp-{host}-{sleeper.pid}-0123abcd"
        remote = tmp_path / ".probe.tmp-otherhost-1-0123abcd"  # pid 1 on another machine
        unrelated = tmp_path / ".probe-notes.tmp-otherhost-1-0123abcd"
        for path in (live, remote, unrelated):
            path.mkdir()
        assert remove_stale_temporaries(out) == []
        sleeper.kill()
        sleeper.wait(timeout=60)  # reaped: its pid no longer runs
        assert remove_stale_temporaries(out) == [live]
        assert hidden(tmp_path) == sorted([remote.name, unrelated.name])
    finally:
        sleeper.kill()
        sleeper.wait(timeout=60)
