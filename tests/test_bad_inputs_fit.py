"""Catalogue of bad inputs to `brainalign fit`, `brainalign validate` and `brainalign shards`.

Each case runs the real command in a subprocess, in a fresh folder holding the inputs it needs,
and asserts: a non-zero exit, exactly one non-empty line on stderr that names the culprit (key,
file or value), no Python traceback, and no file or folder added to the run folder (nor
anywhere under the test folder).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "experiments" / "smoke.yaml"
BRAINALIGN = Path(sys.executable).parent / "brainalign"
ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(str(REPO / part) for part in ("src", "tests/support")),
    OMP_NUM_THREADS="1",
)
MARKER = "payload-ran"


# --------------------------------------------------------------------------- inputs


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    colour = (seed * 37 % 256, seed * 91 % 256, 128)
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def images(root: Path, n: int = 8) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for index in range(n):
        (root / f"img{index:03d}.png").write_bytes(png(index))
    return root


def tar_of(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_checkpoint(path: Path, backbone: str = "vit_tiny_test") -> Path:
    """A plain Lightning-style checkpoint (tensors and plain values, no pickled code)."""
    torch.save(
        {
            "state_dict": {"student.x": torch.zeros(2)},
            "global_step": 4,
            "hyper_parameters": {"backbone": backbone, "img_size": None},
        },
        path,
    )
    return path


class Payload:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def data_config(*sources: dict) -> dict:
    return {"data": {"sources": list(sources), "num_workers": 0}}


def folder_source(path: str, **extra) -> dict:
    return {"path": path, "kind": "folder", **extra}


def write_yaml(folder: Path, name: str, content: dict | str) -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


# --------------------------------------------------------------------------- mounts


def _mount(*args: str) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mounts():
    """Mount points made by a case, unmounted afterwards."""
    made: list[Path] = []
    yield made
    for point in reversed(made):
        subprocess.run(["umount", str(point)], capture_output=True)


def read_only_folder(folder: Path, mounts: list[Path]) -> Path:
    target = folder / "read_only"
    target.mkdir()
    if not (_mount("--bind", str(target), str(target))):
        pytest.skip("needs root to bind-mount a read-only folder (chmod does not stop root)")
    mounts.append(target)
    if not _mount("-o", "remount,ro,bind", str(target)):
        pytest.skip("cannot remount read-only here")
    return target


def tiny_disk(folder: Path, mounts: list[Path]) -> Path:
    target = folder / "full_disk"
    target.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)):
        pytest.skip("needs root to mount a 64 KiB tmpfs (a full disk)")
    mounts.append(target)
    return target


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """One bad input: what to prepare, the command, and what the error line must name.

    ``prepare(folder, mounts)`` writes the inputs into the run folder and returns the command's
    arguments; ``names`` are substrings the error line must contain.
    """

    id: str
    prepare: Callable[[Path, list[Path]], list[str]]
    names: tuple[str, ...]
    marks: list = field(default_factory=list)


def fit(*extra: str, config: dict | None = None, command: str = "fit") -> Callable:
    """A case running ``brainalign fit`` on the smoke config (+ a folder of good images)."""

    def prepare(folder: Path, mounts: list[Path]) -> list[str]:
        images(folder / "good")
        base = write_yaml(folder, "data.yaml", data_config(folder_source("good")))
        args = [command, "--config", str(SMOKE), "--config", str(base)]
        if config is not None:
            args += ["--config", str(write_yaml(folder, "override.yaml", config))]
        return [*args, *extra]

    return prepare


def fit_with(make: Callable[[Path, list[Path]], list[str]], command: str = "fit") -> Callable:
    """A case whose extra arguments need files: ``make(folder, mounts)`` returns them."""

    def prepare(folder: Path, mounts: list[Path]) -> list[str]:
        return [*fit(command=command)(folder, mounts), *make(folder, mounts)]

    return prepare


def shards(*extra: str, make: Callable[[Path], None] | None = None) -> Callable:
    def prepare(folder: Path, mounts: list[Path]) -> list[str]:
        if make is not None:
            make(folder)
        return ["shards", *extra]

    return prepare


def with_source(source: dict, make: Callable[[Path], None], command: str = "fit") -> Callable:
    def prepare(folder: Path, mounts: list[Path]) -> list[str]:
        make(folder)
        path = write_yaml(folder, "source.yaml", data_config(source))
        return [*fit(command=command)(folder, mounts), "--config", str(path)]

    return prepare


def nothing(folder: Path) -> None:
    pass


def corrupt_images(folder: Path) -> None:
    (folder / "broken").mkdir()
    for index in range(5):
        (folder / "broken" / f"img{index}.png").write_bytes(b"this is not a png")


def text_files(folder: Path) -> None:
    (folder / "texts").mkdir()
    (folder / "texts" / "notes.txt").write_text("no images here")
    (folder / "texts" / "table.csv").write_text("a,b\n1,2\n")


def truncated_checkpoint(folder: Path, mounts: list[Path]) -> list[str]:
    whole = fake_checkpoint(folder / "whole.ckpt").read_bytes()
    (folder / "whole.ckpt").unlink()
    (folder / "cut.ckpt").write_bytes(whole[: len(whole) // 2])
    return ["--ckpt_path", "cut.ckpt"]


def malicious_checkpoint(folder: Path, mounts: list[Path]) -> list[str]:
    torch.save({"state_dict": {}, "extra": Payload(folder / MARKER)}, folder / "evil.ckpt")
    return ["--ckpt_path", "evil.ckpt"]


def other_architecture(folder: Path, mounts: list[Path]) -> list[str]:
    fake_checkpoint(folder / "tiny.ckpt", backbone="vit_tiny_test")
    return ["--ckpt_path", "tiny.ckpt", "--model.backbone", "vit_small_test"]


def file_as(name: str, content: bytes) -> Callable:
    def make(folder: Path, mounts: list[Path]) -> list[str]:
        (folder / name).write_bytes(content)
        return ["--ckpt_path", name]

    return make


CASES = [
    # ---- model and trainer settings
    Case("unknown-backbone", fit("--model.backbone", "vit_huge_typo"), ("vit_huge_typo",)),
    Case("max-steps-zero", fit("--trainer.max_steps", "0"), ("trainer.max_steps", "got 0")),
    Case("max-steps-negative", fit("--trainer.max_steps", "-5"), ("max_steps", "-5")),
    Case(
        "max-steps-zero-in-yaml",
        fit(config={"trainer": {"max_steps": 0}}),
        ("trainer.max_steps", "override.yaml"),
    ),
    Case(
        "batch-size-zero",
        fit("--data.batch_size", "0"),
        ("data.batch_size", "got 0", "command line"),
    ),
    Case(
        "batch-size-negative-in-yaml",
        fit(config={"data": {"batch_size": -4}}),
        ("data.batch_size", "-4", "override.yaml"),
    ),
    Case(
        "negative-mixture-weight",
        fit(config=data_config(folder_source("good"), folder_source("good", weight=-1.0))),
        ("weight", "-1.0"),
    ),
    # ---- LightningCLI parse errors name their config file
    Case(
        "typo-key-in-yaml",
        fit(config={"model": {"backbon": "vit_tiny_test"}}),
        ("model.backbon", "override.yaml"),
    ),
    Case(
        "typo-key-on-command-line",
        fit("--model.backbon", "vit_tiny_test"),
        ("model.backbon", "command line"),
    ),
    Case(
        "wrong-type-in-yaml",
        fit(config={"data": {"batch_size": "sixteen"}}),
        ("data.batch_size", "sixteen", "override.yaml"),
    ),
    Case("yaml-syntax-error", fit(config="model: [1\n"), ("override.yaml", "line 2")),
    Case("missing-config-file", fit("--config", "absent.yaml"), ("absent.yaml",)),
    # ---- image folders
    Case("image-folder-missing", with_source(folder_source("nowhere"), nothing), ("nowhere",)),
    Case(
        "image-folder-empty",
        with_source(folder_source("empty"), lambda f: (f / "empty").mkdir()),
        ("empty", "no images found"),
    ),
    Case(
        "image-folder-without-images",
        with_source(folder_source("texts"), text_files),
        ("texts", "no images found"),
    ),
    Case(
        "image-folder-all-corrupt",
        with_source(folder_source("broken"), corrupt_images),
        ("broken", "can be decoded"),
    ),
    Case(
        "image-folder-is-a-file",
        with_source(folder_source("one.png"), lambda f: (f / "one.png").write_bytes(png(1))),
        ("one.png", "not a folder"),
    ),
    # ---- shards
    Case(
        "shards-missing",
        with_source({"path": "no_shards", "kind": "shards"}, nothing),
        ("no_shards", "brainalign shards"),
    ),
    Case(
        "shards-folder-empty",
        with_source({"path": "shards", "kind": "shards"}, lambda f: (f / "shards").mkdir()),
        ("shards", "no .tar shards"),
    ),
    Case(
        "shards-not-a-tar-file",
        with_source({"path": "list.txt", "kind": "shards"}, lambda f: (f / "list.txt").touch()),
        ("list.txt", "not a .tar shard"),
    ),
    Case(
        "shards-corrupt-tar",
        with_source(
            {"path": "bad", "kind": "shards"},
            lambda f: (f / "bad").mkdir() or (f / "bad" / "s-0.tar").write_bytes(os.urandom(3000)),
        ),
        ("s-0.tar", "not a readable tar archive"),
    ),
    Case(
        "shards-empty-tar-file",
        with_source(
            {"path": "bad", "kind": "shards"},
            lambda f: (f / "bad").mkdir() or (f / "bad" / "s-0.tar").touch(),
        ),
        ("s-0.tar", "not a readable tar archive"),
    ),
    Case(
        "shards-without-images",
        with_source(
            {"path": "meta", "kind": "shards"},
            lambda f: tar_of(f / "meta" / "s-0.tar", {"a.json": b"{}", "b.json": b"{}"}),
        ),
        ("s-0.tar", "no decodable image"),
    ),
    Case(
        "shards-with-corrupt-images",
        with_source(
            {"path": "junk", "kind": "shards"},
            lambda f: tar_of(f / "junk" / "s-0.tar", {"a.png": b"not a png", "b.jpg": b"no"}),
        ),
        ("s-0.tar", "no decodable image"),
    ),
    Case(
        "shards-pattern-missing-files",
        with_source({"path": "sh/s-{0..3}.tar", "kind": "shards"}, nothing),
        ("sh/s-", "do not exist"),
    ),
    # ---- checkpoints
    Case("ckpt-missing", fit("--ckpt_path", "gone.ckpt"), ("gone.ckpt", "does not exist")),
    Case("ckpt-truncated", fit_with(truncated_checkpoint), ("cut.ckpt", "truncated")),
    Case("ckpt-garbage", fit_with(file_as("text.ckpt", b"hello\n")), ("text.ckpt", "zip")),
    Case("ckpt-empty", fit_with(file_as("zero.ckpt", b"")), ("zero.ckpt", "is empty")),
    Case("ckpt-malicious", fit_with(malicious_checkpoint), ("evil.ckpt", "refused")),
    Case(
        "ckpt-folder",
        fit_with(lambda f, m: (f / "adir").mkdir() or ["--ckpt_path", "adir"]),
        ("adir", "not a sharded checkpoint"),
    ),
    Case(
        "ckpt-other-architecture",
        fit_with(other_architecture),
        ("tiny.ckpt", "'vit_tiny_test'", "'vit_small_test'", "--model_from_ckpt"),
    ),
    # ---- the run folder
    Case(
        "log-folder-read-only",
        fit_with(lambda f, m: ["--trainer.default_root_dir", str(read_only_folder(f, m))]),
        ("read_only", "not writable"),
    ),
    Case(
        "log-folder-full-disk",
        fit_with(lambda f, m: ["--trainer.default_root_dir", str(tiny_disk(f, m))]),
        ("full_disk", "free"),
    ),
    Case(
        "log-folder-under-a-file",
        fit_with(
            lambda f, m: (f / "plain").write_text("x") and ["--trainer.default_root_dir", "plain"]
        ),
        ("plain", "is a file"),
    ),
    # ---- validate
    Case(
        "validate-unknown-backbone",
        fit("--model.backbone", "vit_nope", command="validate"),
        ("vit_nope",),
    ),
    Case(
        "validate-max-steps-zero",
        fit("--trainer.max_steps", "0", command="validate"),
        ("trainer.max_steps",),
    ),
    Case(
        "validate-ckpt-garbage",
        fit_with(file_as("text.ckpt", b"garbage"), command="validate"),
        ("text.ckpt", "zip"),
    ),
    Case(
        "validate-ckpt-malicious",
        fit_with(malicious_checkpoint, command="validate"),
        ("evil.ckpt", "refused"),
    ),
    Case(
        "validate-ckpt-last-with-nothing-saved",
        fit("--ckpt_path", "last", command="validate"),
        ("last", "nothing to validate"),
    ),
    Case(
        "validate-image-folder-all-corrupt",
        with_source(folder_source("broken"), corrupt_images, command="validate"),
        ("broken", "can be decoded"),
    ),
    # ---- brainalign shards
    Case("shards-cmd-image-folder-missing", shards("nowhere", "out"), ("nowhere",)),
    Case(
        "shards-cmd-image-folder-empty",
        shards("empty", "out", make=lambda f: (f / "empty").mkdir()),
        ("empty", "no images found"),
    ),
    Case(
        "shards-cmd-corrupt-image",
        shards("broken", "a/b/out", make=corrupt_images),
        ("broken", "img0.png", "cannot be read"),
    ),
    Case(
        "shards-cmd-max-count-zero",
        shards("good", "out", "--max-count", "0", make=lambda f: images(f / "good")),
        ("max_count", "0"),
    ),
    Case(
        "shards-cmd-output-exists",
        shards(
            "good",
            "out",
            make=lambda f: images(f / "good") and tar_of(f / "out" / "shard-000000.tar", {}),
        ),
        ("out", "already holds shards", "--overwrite"),
    ),
    Case(
        "shards-cmd-image-folder-is-a-file",
        shards("one.png", "out", make=lambda f: (f / "one.png").write_bytes(png(1))),
        ("one.png", "not a folder"),
    ),
]


def tree(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")}


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [pytest.param(case, id=case.id, marks=case.marks) for case in CASES]
)
def test_bad_input_is_one_line_naming_the_culprit_and_leaves_nothing(case, tmp_path, mounts):
    folder = tmp_path / "run"
    folder.mkdir()
    args = case.prepare(folder, mounts)
    before = tree(folder)
    result = subprocess.run(
        [str(BRAINALIGN), *args],
        cwd=folder,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    for name in case.names:
        assert name in lines[0], lines[0]
    assert lines[0].startswith(f"brainalign {args[0]}: "), lines[0]
    assert tree(folder) == before, sorted(tree(folder) - before)
    assert not (folder / MARKER).exists(), "the checkpoint's pickled payload ran"


def test_the_catalogue_covers_fit_validate_and_shards():
    commands = [case.prepare.__qualname__.split(".")[0] for case in CASES]
    assert len(CASES) >= 25 and len({case.id for case in CASES}) == len(CASES)
    assert {"fit", "fit_with", "with_source", "shards"} <= set(commands)
    assert sum("validate" in case.id for case in CASES) >= 5
