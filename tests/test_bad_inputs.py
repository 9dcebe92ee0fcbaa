"""Bad input to the offline commands: one clear line, no traceback, nothing left behind.

A catalogue of cases for ``probe``, ``probe-language``, ``chronology``, ``simulate`` and
``demo`` (``fit``, ``validate`` and ``shards`` have their own). Every case runs the command in
an empty temporary folder (after writing the inputs it needs there) and asserts a non-zero
exit, exactly one non-empty stderr line that names the culprit (file, key or value), no
"Traceback", and no new file or folder, hidden ones included (an output folder, its temporary,
a feature cache).

Most cases run in this process through :func:`brainalign.cli.main` (the console script's entry
point), with the brain-data reader and the model loader made to fail loudly where the error
must come before them (``stage``): options and the output folder before anything is read, the
model spec before the brain data, brain-dependent options before the model is loaded. One
case per command runs the real console script in a subprocess, and so do the permission cases
(run without root's permission override when the tests run as root).
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

BRAINALIGN = Path(sys.executable).parent / "brainalign"
SOURCE = Path(__file__).resolve().parents[1] / "src"
FAST = ("--n-folds", "3", "--backend", "numpy", "--cache-dir", "")
N_STIMULI = 72  # more than the tiny ViT's 64 features: --pca 70 fits the stimuli, not the width


# ---------------------------------------------------------------------- inputs (once per module)
@dataclass(frozen=True)
class Inputs:
    """Files every case may name (read-only for the cases: a case copies what it changes)."""

    export: Path
    fmri: Path
    meg: Path
    lm: Path | None  # None without transformers
    words_meg: Path
    words: Path

    def format(self, text: str) -> str:
        return text.format(**{name: str(value) for name, value in vars(self).items()})


def _word_epochs(folder: Path) -> tuple[Path, Path]:
    """40 words (``words.csv``) and word-locked MEG epochs with the words in their metadata."""
    sys.path.insert(0, str(Path(__file__).parent / "support"))
    from language import word_table

    from brainalign.probe.formats import write_meg_epochs

    table = word_table(40)
    table.to_csv(folder / "words.csv", index=False)
    times = np.arange(-3, 12) / 30.0
    data = np.random.default_rng(0).normal(size=(40, 4, times.size)) * 1e-13
    channels = [f"MEG{index:03d}" for index in range(4)]
    meg = write_meg_epochs(
        folder / "words-epo.fif",
        data.astype(np.float32),
        times,
        channels,
        30.0,
        list(table["stimulus_id"]),
        metadata=table.drop(columns="stimulus_id"),
    )
    return Path(meg), folder / "words.csv"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    from brainalign.models import create_backbone, save_teacher_export
    from brainalign.probe.simulate import simulate_subject

    folder = tmp_path_factory.mktemp("inputs")
    simulated = simulate_subject(folder / "sim", n_stimuli=N_STIMULI, image_size=16)
    torch.manual_seed(0)
    export = save_teacher_export(create_backbone("vit_tiny_test"), folder / "export", {"step": 0})
    lm = None
    try:
        import transformers  # noqa: F401

        sys.path.insert(0, str(Path(__file__).parent / "support"))
        from language import save_tiny_language_model

        lm = save_tiny_language_model(folder / "lm", n_layer=2)
    except ImportError:
        pass
    words_meg, words = _word_epochs(folder)
    return Inputs(
        export=Path(export),
        fmri=simulated.fmri_dir,
        meg=simulated.meg_path,
        lm=lm,
        words_meg=words_meg,
        words=words,
    )


# ---------------------------------------------------------------------- cases
Prepare = Callable[[Path, Inputs], None]


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes
    ----------
    argv : tuple of str
        After ``brainalign``; ``{export}``, ``{fmri}``... name the module's inputs.
    expected : tuple of str
        Substrings of the error line (placeholders allowed).
    prepare : callable, optional
        Writes the case's own inputs into the temporary folder.
    stage : {"parse", "brain", "any"}
        ``parse``: found before any brain data is read or model loaded; ``brain``: before
        the model is loaded; ``any``: anywhere (checked in process only).
    how : {"in_process", "subprocess", "unprivileged"}
        ``unprivileged``: a subprocess without root's permission override.
    patch : callable, optional
        Applied with ``monkeypatch`` (in process only): simulates a system failure.
    """

    argv: tuple[str, ...]
    expected: tuple[str, ...]
    prepare: Prepare | None = None
    stage: str = "parse"
    how: str = "in_process"
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    needs: tuple[str, ...] = field(default_factory=tuple)


def case(
    case_id: str, argv: str | tuple[str, ...], *expected: str, marks: tuple = (), **options
) -> object:
    """A ``pytest.param`` of a :class:`Case`; subprocess cases are marked slow."""
    argv = tuple(argv.split()) if isinstance(argv, str) else argv
    how = options.get("how", "in_process")
    marks = (*marks, pytest.mark.slow) if how != "in_process" else marks
    item = Case(argv=argv, expected=expected, **options)
    return pytest.param(item, id=f"{argv[0]}:{case_id}", marks=marks)


# helpers that write a case's inputs ------------------------------------------------
def copy_fmri(tmp: Path, inputs: Inputs, name: str = "fm") -> Path:
    return Path(shutil.copytree(inputs.fmri, tmp / name))


def writes(relative: str, content: str | bytes) -> Prepare:
    def prepare(tmp: Path, inputs: Inputs) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(inputs.format(content))

    return prepare


def folder(relative: str) -> Prepare:
    return lambda tmp, inputs: (tmp / relative).mkdir(parents=True)


def read_only(relative: str) -> Prepare:
    def prepare(tmp: Path, inputs: Inputs) -> None:
        (tmp / relative).mkdir(parents=True)
        (tmp / relative).chmod(0o555)

    return prepare


def fmri_copy_with(change: Callable[[Path], None]) -> Prepare:
    def prepare(tmp: Path, inputs: Inputs) -> None:
        change(copy_fmri(tmp, inputs))

    return prepare


def damaged(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(path.stat().st_size // 3, 16)][::-1])


def not_a_number(table: Path, column: str) -> None:
    frame = pd.read_csv(table)
    frame[column] = frame[column].astype(object)
    frame.loc[0, column] = "abc"
    frame.to_csv(table, index=False)


def exports_run(tmp: Path, inputs: Inputs) -> None:
    """``run/exports/step_0000000``: a run folder with one teacher export."""
    shutil.copytree(inputs.export, tmp / "run" / "exports" / "step_0000000")


def both(*steps: Prepare) -> Prepare:
    def prepare(tmp: Path, inputs: Inputs) -> None:
        for step in steps:
            step(tmp, inputs)

    return prepare


def pickled_weights(tmp: Path, inputs: Inputs) -> None:
    torch.save({"weight": torch.zeros(2), "note": Path("x")}, tmp / "w.pth")


def damaged_meg(tmp: Path, inputs: Inputs) -> None:
    (tmp / "damaged-epo.fif").write_bytes(inputs.meg.read_bytes()[: inputs.meg.stat().st_size // 3])


def no_space_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the score table fails as on a full disk."""

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)


def language_model_copy(without: tuple[str, ...] = ()) -> Prepare:
    def prepare(tmp: Path, inputs: Inputs) -> None:
        shutil.copytree(inputs.lm, tmp / "lm")
        for name in without:
            (tmp / "lm" / name).unlink(missing_ok=True)

    return prepare


PROBE = ("probe", "--model", "{export}", "--brain", "{fmri}", "--out", "out")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

PROBE_CASES = [
    # the model
    case("no-model", "probe --brain {fmri} --out out", "model.spec"),
    case(
        "unknown-model-spec-before-brain-data",
        "probe --model not_a_model.bin --brain {fmri} --out out",
        "cannot load a model from 'not_a_model.bin'",
        "timm:",
    ),
    case(
        "missing-weights-file",
        "probe --model timm:resnet18 --weights nope.safetensors --brain {fmri} --out out",
        "weights file not found: nope.safetensors",
    ),
    case(
        "text-file-named-ckpt",
        "probe --model m.ckpt --brain {fmri} --out out",
        "'m.ckpt'",
        "not a complete checkpoint",
        prepare=writes("m.ckpt", "a text file, not a checkpoint\n"),
        stage="any",
    ),
    case(
        "damaged-ckpt",
        "probe --model m.ckpt --brain {fmri} --out out",
        "'m.ckpt'",
        "not a complete checkpoint",
        prepare=writes("m.ckpt", b"PK\x03\x04" + b"\x00garbage" * 40),
        stage="any",
    ),
    case(
        "pickled-pth-without-allow-pickle",
        "probe --model timm:resnet18 --weights w.pth --brain {fmri} --out out",
        "w.pth was refused",
        "pickled Python objects",
        "--allow-pickle",
        prepare=pickled_weights,
        stage="any",
    ),
    # the brain data
    case("no-brain", "probe --model {export} --out out", "--brain"),
    case(
        "missing-brain-path",
        "probe --model {export} --brain no_such_folder --out out",
        "brain data not found: no_such_folder",
        "responses.npy",
        stage="brain",
    ),
    case(
        "unknown-brain-format",
        "probe --model {export} --brain responses.txt --out out",
        "unknown brain data format: responses.txt",
        prepare=writes("responses.txt", "1 2 3\n"),
        stage="brain",
    ),
    case(
        "brain-folder-without-images-or-stimuli",
        "probe --model {export} --brain fm --out out",
        "stimuli.csv",
        "fm",
        prepare=fmri_copy_with(
            lambda fm: (shutil.rmtree(fm / "images"), (fm / "stimuli.csv").unlink())
        ),
        stage="brain",
    ),
    case(
        "damaged-npy",
        "probe --model {export} --brain fm --out out",
        "fm/responses.npy: cannot read a NumPy .npy array",
        prepare=fmri_copy_with(lambda fm: damaged(fm / "responses.npy")),
        stage="brain",
    ),
    case(
        "damaged-fif",
        "probe --model {export} --brain damaged-epo.fif --out out",
        "damaged-epo.fif: cannot read an MNE Epochs .fif file",
        prepare=damaged_meg,
        stage="brain",
    ),
    case(
        "non-numeric-coordinate",
        "probe --model {export} --brain fm --out out",
        "fm/targets.csv",
        "'z'",
        prepare=fmri_copy_with(lambda fm: not_a_number(fm / "targets.csv", "z")),
        stage="brain",
    ),
    case(
        "fewer-stimuli-than-folds",
        (*PROBE, "--n-folds", "50"),
        f"{N_STIMULI} stimuli are too few for 50 folds",
        stage="brain",
    ),
    # the output and cache folders
    case(
        "out-exists-without-overwrite",
        PROBE,
        "out exists; pass --overwrite",
        prepare=writes("out/keep.txt", "mine"),
    ),
    case(
        "out-under-a-file",
        "probe --model {export} --brain {fmri} --out file/out",
        "--out",
        "file is a file, not a folder",
        prepare=writes("file", "x"),
    ),
    case(
        "out-is-a-file-with-overwrite",
        (*PROBE[:-1], "file", "--overwrite"),
        "--out file is a file",
        prepare=writes("file", "x"),
    ),
    case(
        "cache-dir-is-a-file",
        (*PROBE, "--cache-dir", "cache"),
        "--cache-dir cache",
        "not a folder",
        prepare=writes("cache", "x"),
    ),
    case(
        "out-in-a-read-only-folder",
        "probe --model {export} --brain {fmri} --out ro/out",
        "--out",
        "ro/out",
        "permission denied",
        prepare=read_only("ro"),
        how="unprivileged",
    ),
    case(
        "cache-dir-in-a-read-only-folder",
        (*PROBE, "--cache-dir", "ro/cache"),
        "--cache-dir ro/cache",
        "cannot write in ro",
        prepare=read_only("ro"),
        how="unprivileged",
    ),
    case(
        "unreadable-image-file",
        ("probe", "--model", "{export}", "--brain", "fm", "--out", "out", *FAST),
        "fm/images/img00003.png: permission denied",
        prepare=fmri_copy_with(lambda fm: (fm / "images" / "img00003.png").chmod(0)),
        how="unprivileged",
    ),
    case(
        "permission-denied-on-responses",
        "probe --model {export} --brain fm --out out",
        "fm/responses.npy: permission denied",
        prepare=fmri_copy_with(lambda fm: (fm / "responses.npy").chmod(0)),
        how="unprivileged",
    ),
    case(
        "disk-full-while-writing",
        (*PROBE, *FAST),
        "scores.parquet: no space left on device",
        "free some space",
        stage="any",
        patch=no_space_left,
    ),
    # options, checked as they are parsed
    case("n-folds-1", (*PROBE, "--n-folds", "1"), "encoding.n_folds", "got 1"),
    case("batch-size-0", (*PROBE, "--batch-size", "0"), "features.batch_size", "got 0"),
    case("layers-1.5", (*PROBE, "--layers", "1.5"), "features.layers", "1.5"),
    case("inner-1", (*PROBE, "--inner", "1"), "encoding.inner", "got 1"),
    case("pca-0", (*PROBE, "--pca", "0"), "features.pca", "got 0"),
    case("unknown-pooling", (*PROBE, "--pooling", "max"), "probe.features.pooling", "max"),
    case(
        "unknown-feature-kind",
        (*PROBE, "--features", "activations"),
        "probe.features.kinds",
        "activations",
    ),
    case(
        "misspelt-dotted-key",
        (*PROBE, "--probe.features.poolin", "cls"),
        "--probe.features.poolin",
    ),
    case(
        "misspelt-key-in-config",
        (*PROBE, "--config", "probe.yaml"),
        "features.poolin",
        "probe.yaml",
        prepare=writes("probe.yaml", "probe:\n  features:\n    poolin: cls\n"),
    ),
    case(
        "config-not-a-mapping",
        (*PROBE, "--config", "probe.yaml"),
        "probe.yaml",
        prepare=writes("probe.yaml", "- a\n- b\n"),
    ),
    case("missing-config-file", (*PROBE, "--config", "nope.yaml"), "nope.yaml"),
    # options that need the brain data or the model: before any feature is extracted
    case(
        "pca-above-n-stimuli",
        (*PROBE, "--pca", "100"),
        "features.pca=100 (--pca)",
        f"{N_STIMULI} stimuli",
        stage="brain",
    ),
    case(
        "pca-above-n-features",
        (*PROBE, "--pca", "70"),
        "features.pca=70 (--pca)",
        "64 features",
        stage="any",
    ),
    case(
        "layers-above-model-depth",
        (*PROBE, "--layers", "9"),
        "features.layers=9 (--layers)",
        "has 4",
        stage="any",
    ),
    case(
        "cls-pooling-without-class-token",
        "probe --model timm:resnet18 --weights random --brain {fmri} --out out --pooling cls",
        "features.pooling (--pooling)",
        "cls",
        stage="any",
    ),
    # the console script itself
    case(
        "missing-brain-path-subprocess",
        "probe --model {export} --brain no_such_folder --out out",
        "brain data not found: no_such_folder",
        how="subprocess",
    ),
]

LANGUAGE = ("probe-language", "--model", "lm", "--brain", "{words_meg}", "--out", "out")

LANGUAGE_CASES = [
    case(
        "folder-without-config-json",
        "probe-language --model lm --brain {words_meg} --out out",
        "lm is not a Hugging Face model folder",
        "config.json",
        prepare=folder("lm"),
    ),
    case(
        "folder-without-tokenizer",
        (*LANGUAGE, *FAST),
        "lm: no usable tokenizer files",
        prepare=language_model_copy(without=TOKENIZER_FILES),
        stage="any",
        needs=("lm",),
    ),
    case(
        "words-table-without-word-column",
        (*LANGUAGE, "--words", "w.csv"),
        "w.csv: the word table needs the column(s) ['word']",
        prepare=both(language_model_copy(), writes("w.csv", "stimulus_id,token\nword0000,w1\n")),
        stage="any",
        needs=("lm",),
    ),
    case(
        "epochs-without-words",
        "probe-language --model lm --brain {meg} --out out",
        "(epochs metadata)",
        "['word']",
        prepare=language_model_copy(),
        stage="any",
        needs=("lm",),
    ),
    case(
        "missing-words-table",
        (*LANGUAGE, "--words", "nope.csv"),
        "nope.csv",
        prepare=language_model_copy(),
        stage="any",
        needs=("lm",),
    ),
    case("no-brain", "probe-language --model lm --out out", "--brain", prepare=folder("lm")),
    case(
        "out-exists-without-overwrite",
        LANGUAGE,
        "out exists; pass --overwrite",
        prepare=both(folder("lm"), folder("out")),
    ),
    case(
        "n-folds-1",
        (*LANGUAGE, "--n-folds", "1"),
        "n_folds",
        "got 1",
        stage="any",
        prepare=language_model_copy(),
        needs=("lm",),
    ),
    case("layers-not-a-number", (*LANGUAGE, "--layers", "abc"), "--layers", "abc"),
    case("missing-value", (*LANGUAGE, "--context"), "--context"),
    case(
        "out-under-a-file",
        ("probe-language", "--model", "lm", "--brain", "{words_meg}", "--out", "file/out", *FAST),
        "file",
        "not a folder",
        prepare=both(language_model_copy(), writes("file", "x")),
        stage="parse",
        needs=("lm",),
    ),
    case(
        "no-config-json-subprocess",
        "probe-language --model lm --brain {words_meg} --out out",
        "lm is not a Hugging Face model folder",
        prepare=folder("lm"),
        how="subprocess",
    ),
]

CHRONOLOGY_CASES = [
    case(
        "folder-without-chronology-or-exports",
        "chronology run",
        "run holds neither chronology.parquet nor teacher exports",
        prepare=folder("run"),
    ),
    case(
        "exports-without-brain",
        "chronology run",
        "run has no chronology.parquet: pass --brain",
        prepare=exports_run,
    ),
    case("missing-run-folder", "chronology nope", "run folder nope does not exist"),
    case(
        "damaged-chronology-parquet",
        "chronology run",
        "run/chronology.parquet",
        prepare=writes("run/chronology.parquet", b"garbage"),
    ),
    case(
        "out-exists-without-overwrite",
        "chronology run --out report",
        "report exists; pass --overwrite",
        prepare=both(folder("run"), folder("report")),
    ),
    case(
        "out-under-a-file",
        "chronology run --brain {fmri} --out file/report",
        "--out",
        "file is a file, not a folder",
        prepare=both(exports_run, writes("file", "x")),
    ),
    case(
        "missing-roi-properties",
        "chronology run --brain {fmri} --roi-properties nope.csv --out report",
        "nope.csv (--roi-properties)",
        prepare=exports_run,
    ),
    case(
        "n-folds-1",
        "chronology run --brain {fmri} --n-folds 1",
        "encoding.n_folds",
        "got 1",
        prepare=exports_run,
    ),
    case(
        "layers-above-model-depth",
        ("chronology", "run", "--brain", "{fmri}", "--layers", "9", "--out", "report", *FAST),
        "features.layers=9 (--layers)",
        prepare=exports_run,
        stage="any",
    ),
    case(
        "pca-above-n-stimuli",
        ("chronology", "run", "--brain", "{fmri}", "--pca", "100", "--out", "report", *FAST),
        "features.pca=100 (--pca)",
        prepare=exports_run,
        stage="brain",
    ),
    case(
        "out-in-a-read-only-folder",
        "chronology run --brain {fmri} --out ro/report",
        "--out",
        "permission denied",
        prepare=both(exports_run, read_only("ro")),
        how="unprivileged",
    ),
    case(
        "neither-subprocess",
        "chronology run",
        "run holds neither",
        prepare=folder("run"),
        how="subprocess",
    ),
]

SIMULATE_CASES = [
    case("zero-stimuli", "simulate --out s --n-stimuli 0", "got 0"),
    case("image-size-3", "simulate --out s --image-size 3", "--image-size", "got 3"),
    case("image-size-not-a-number", "simulate --out s --image-size big", "--image-size", "big"),
    case("zero-repeats", "simulate --out s --n-repeats 0", "--n-repeats", "got 0"),
    case("negative-noise", "simulate --out s --noise -1", "--noise", "got -1"),
    case("nan-noise", "simulate --out s --noise nan", "--noise", "nan"),
    case("no-out", "simulate --n-stimuli 10", "--out"),
    case(
        "existing-out",
        "simulate --out s --n-stimuli 10",
        "s exists; pass --overwrite",
        prepare=writes("s/truth.json", "[]"),
    ),
    case(
        "out-under-a-file",
        "simulate --out file/s --n-stimuli 10",
        "file is a file, not a folder",
        prepare=writes("file", "x"),
    ),
    case(
        "out-in-a-read-only-folder",
        "simulate --out ro/s --n-stimuli 10 --image-size 8",
        "--out",
        "ro/s",
        "permission denied",
        prepare=read_only("ro"),
        how="unprivileged",
    ),
    case(
        "image-size-3-subprocess",
        "simulate --out s --image-size 3",
        "--image-size",
        how="subprocess",
    ),
]

DEMO_CASES = [
    case("unknown-preset", "demo --preset huge --dry-run", "--preset", "huge"),
    case("zero-max-steps", "demo --max-steps 0 --dry-run", "--max-steps", "got 0"),
    case("negative-max-steps", "demo --max-steps -5 --dry-run", "--max-steps", "got -5"),
    case("max-steps-not-a-number", "demo --max-steps many --dry-run", "--max-steps", "many"),
    case(
        "data-is-a-file", "demo --data file --dry-run", "--data file", prepare=writes("file", "x")
    ),
    case(
        "data-under-a-file",
        "demo --data file/data --dry-run",
        "--data file/data",
        "not a folder",
        prepare=writes("file", "x"),
    ),
    case("runs-is-a-file", "demo --dry-run", "runs", "not a folder", prepare=writes("runs", "x")),
    case(
        "unwritable-data",
        "demo --data ro/data --dry-run",
        "--data ro/data",
        "cannot write in ro",
        prepare=read_only("ro"),
        how="unprivileged",
    ),
    case(
        "unwritable-data-without-dry-run",
        "demo --data ro/data",
        "--data ro/data",
        prepare=read_only("ro"),
        how="unprivileged",
    ),
    case("zero-max-steps-subprocess", "demo --max-steps 0", "--max-steps", how="subprocess"),
]


# ---------------------------------------------------------------------- running a case
def listing(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones included."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def _permission_override() -> list[str] | None:
    """The prefix that runs a command without root's permission override ([] if not root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@functools.cache
def _permissions_are_enforced(prefix: tuple[str, ...]) -> bool:
    """Whether a command run with ``prefix`` is refused to write in a read-only folder."""
    with tempfile.TemporaryDirectory() as scratch:
        locked = Path(scratch) / "locked"
        locked.mkdir(mode=0o555)
        result = subprocess.run([*prefix, "mkdir", str(locked / "x")], capture_output=True)
        locked.chmod(0o755)
    return result.returncode != 0


def _guard_loaders(monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """Make the brain reader and the model loader fail loudly where they must not run yet."""
    from brainalign.probe import formats, language, models
    from brainalign.probe.datasets import speech_meg

    def refuse(what: str) -> Callable[..., None]:
        def fail(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"{what} before the bad input was reported")

        return fail

    if stage == "parse":
        monkeypatch.setattr(formats, "load_brain", refuse("brain data were read"))
        monkeypatch.setattr(  # probe-language's word epochs
            formats, "load_meg_epochs_with_metadata", refuse("word epochs were read")
        )
        monkeypatch.setattr(speech_meg, "read_word_epochs", refuse("word epochs were read"))
    if stage in ("parse", "brain"):
        monkeypatch.setattr(models, "load_probe_model", refuse("the model was loaded"))
        monkeypatch.setattr(language, "load_language_model", refuse("the model was loaded"))


def run_case(
    item: Case, inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    if "lm" in item.needs and inputs.lm is None:
        pytest.skip("needs transformers")
    work = tmp_path / "work"
    work.mkdir()
    if item.prepare is not None:
        item.prepare(work, inputs)
    argv = [inputs.format(part) for part in item.argv]
    before = listing(work)
    try:
        if item.how == "in_process":
            code, stderr = _in_process(item, argv, work, monkeypatch, capsys)
        else:
            code, stderr = _subprocess(item, argv, work)
        after = listing(work)
    finally:
        for path in (work, *work.rglob("*")):  # let pytest remove what the case locked
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IRWXU)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code not in (0, None), f"exit status {code}; stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    for text in item.expected:
        assert inputs.format(text) in lines[0], lines[0]
    assert after == before, f"left behind: {sorted(set(after) - set(before))}"


def _in_process(
    item: Case, argv: list[str], work: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> tuple[object, str]:
    from brainalign import cli

    monkeypatch.chdir(work)
    _guard_loaders(monkeypatch, item.stage)
    if item.patch is not None:
        item.patch(monkeypatch)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err


def _subprocess(item: Case, argv: list[str], work: Path) -> tuple[object, str]:
    prefix: list[str] = []
    if item.how == "unprivileged":
        prefix = _permission_override()
        if prefix is None or not _permissions_are_enforced(tuple(prefix)):
            pytest.skip("permissions cannot be denied here (root without setpriv)")
    environment = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(SOURCE), os.environ.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MPLBACKEND="Agg",
        MPLCONFIGDIR=str(work.parent / "mpl"),
    )
    result = subprocess.run(
        [*prefix, str(BRAINALIGN), *argv],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result.returncode, result.stderr


# ---------------------------------------------------------------------- the catalogue
GROUPS = {
    "probe": PROBE_CASES,
    "probe-language": LANGUAGE_CASES,
    "chronology": CHRONOLOGY_CASES,
    "simulate": SIMULATE_CASES,
    "demo": DEMO_CASES,
}


@pytest.mark.parametrize("item", [param for group in GROUPS.values() for param in group])
def test_bad_input(item, inputs, tmp_path, monkeypatch, capsys):
    run_case(item, inputs, tmp_path, monkeypatch, capsys)


def test_the_catalogue_covers_every_offline_command():
    assert sum(len(group) for group in GROUPS.values()) >= 40
    for command, group in GROUPS.items():
        assert {param.values[0].argv[0] for param in group} == {command}
        kinds = {param.values[0].how for param in group}
        assert "subprocess" in kinds  # one run of the real console script per command
