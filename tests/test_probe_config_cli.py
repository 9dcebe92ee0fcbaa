"""``brainalign probe`` options: one typed block from YAML, dotted overrides and legacy flags.

Issue 10: ``brainalign probe`` is parsed from the probe dataclasses with jsonargparse
(``--config probe.yaml``, ``--print_config``, dotted overrides, a misspelt key is one error
naming it and its file), and every flag of earlier versions keeps meaning what it meant. The
flags are checked through :func:`translate_legacy_flags` and the parser (no subprocess), against
the dotted form *and* the field it must set; one end-to-end run goes through the console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from brainalign.commands.probe import build_parser
from brainalign.commands.probe_options import parse, translate_legacy_flags

REPO = Path(__file__).resolve().parents[1]
BRAINALIGN = Path(sys.executable).parent / "brainalign"
BASE = ["--model", "runs/export", "--out", "out"]

PROBE_YAML = {
    "model": {"spec": "runs/export"},
    "probe": {
        "brain": ["data/fmri", "data/meg/sim01-epo.fif"],
        "features": {"pooling": "cls", "layers": [0.0, 1.0]},
        "encoding": {"n_folds": 3, "backend": "numpy"},
        "cache_dir": None,
    },
}


def _write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def _options(*argv: str):
    return parse(build_parser(), list(argv))[1]


@pytest.fixture
def probe_yaml(tmp_path) -> Path:
    return _write(tmp_path / "probe.yaml", PROBE_YAML)


# ---------------------------------------------------------------------------- config files
def test_a_yaml_block_gives_its_values_and_the_shared_defaults(probe_yaml):
    options = _options("--config", str(probe_yaml), "--out", "out")
    config, source = options.probe, options.model
    assert source.spec == "runs/export" and source.network == "teacher"
    assert config.brain == PROBE_YAML["probe"]["brain"]
    assert config.features.pooling == "cls" and config.features.layers == [0.0, 1.0]
    assert config.encoding.n_folds == 3 and config.encoding.backend == "numpy"
    assert config.cache_dir is None
    assert config.features.final_norm is True and config.encoding.inner == "loo"  # defaults


def test_print_config_prints_a_config_that_parses_back_to_the_same(probe_yaml, tmp_path, capsys):
    # --print_config must work on the probe block and print what the file means, in full.
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--config", str(probe_yaml), "--print_config"])
    assert exited.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["probe"]["features"]["pooling"] == "cls"
    assert printed["probe"]["encoding"]["n_folds"] == 3
    assert printed["probe"]["features"]["final_norm"] is True  # defaults are printed too
    reprinted = _write(tmp_path / "printed.yaml", {k: v for k, v in printed.items() if v})
    again = _options("--config", str(reprinted), "--out", "out")
    original = _options("--config", str(probe_yaml), "--out", "out")
    assert again.probe == original.probe and again.model == original.model


@pytest.mark.parametrize(
    "block, key",
    [
        ({"features": {"layerz": "all"}}, "features.layerz"),  # misspelt inside a group
        ({"encodings": {"n_folds": 3}}, "encodings"),  # misspelt group
        ({"encoding": {"n_folds": "three"}}, "probe.encoding.n_folds"),  # wrong type
        ({"encoding": {"n_folds": 1}}, "encoding.n_folds"),  # fails the dataclass check
        ({"features": {"pooling": "clss"}}, "probe.features.pooling"),  # not a choice
    ],
    ids=["key", "group", "type", "check", "choice"],
)
def test_a_bad_key_or_value_in_a_file_is_one_line_naming_it_and_the_file(tmp_path, block, key):
    good = _write(tmp_path / "good.yaml", PROBE_YAML)
    bad = _write(tmp_path / "bad.yaml", {"probe": block})
    with pytest.raises(ValueError) as caught:
        _options("--config", str(good), "--config", str(bad), "--out", "out")
    message = str(caught.value)
    assert "\n" not in message
    assert key in message
    # only the file that sets it is named, though both set probe.encoding / probe.features
    assert message.endswith(f"(in {bad})"), message


def test_a_misspelt_flag_names_no_file_and_hints_the_nearest_flag(probe_yaml):
    # A mistake on the command line used to be blamed on the config file.
    for flag, hint in (
        ("--probe.features.poolin", "--probe.features.pooling"),
        ("--n-fold", "--n-folds"),
    ):
        with pytest.raises(ValueError) as caught:
            _options("--config", str(probe_yaml), flag, "3", "--out", "out")
        message = str(caught.value)
        assert flag in message and f"did you mean {hint}?" in message
        assert str(probe_yaml) not in message and "\n" not in message
    with pytest.raises(ValueError) as caught:
        _options("--config", str(probe_yaml), "--probe.encoding.n_folds", "1", "--out", "out")
    assert "encoding.n_folds" in str(caught.value) and str(probe_yaml) not in str(caught.value)


def test_dotted_overrides_and_legacy_flags_win_over_the_file(probe_yaml):
    options = _options(
        "--config", str(probe_yaml),
        "--probe.features.pooling", "mean",
        "--n-folds", "4",
        "--model.network", "student",
        "--out", "out",
    )  # fmt: skip
    assert options.probe.features.pooling == "mean"
    assert options.probe.encoding.n_folds == 4
    assert options.model.network == "student"
    # what was not overridden stays as the file says
    assert options.probe.features.layers == [0.0, 1.0] and options.probe.encoding.backend == "numpy"
    assert options.model.spec == "runs/export"


# ---------------------------------------------------------------------------- legacy flags
LEGACY = [
    # (legacy flags, the field it sets, the field's dotted value, the expected field value)
    (["--brain", "a", "--brain", "b"], "probe.brain", '["a", "b"]', ["a", "b"]),
    (["--layers", "0,0.5,1"], "probe.features.layers", "[0, 0.5, 1]", [0.0, 0.5, 1.0]),
    (["--layers", "12"], "probe.features.layers", "12", 12),
    (["--features", "activation,gradient"], "probe.features.kinds", "[activation, gradient]",
     ["activation", "gradient"]),
    (["--n-folds", "3"], "probe.encoding.n_folds", "3", 3),
    (["--n-folds=3"], "probe.encoding.n_folds", "3", 3),
    (["--inner", "4"], "probe.encoding.inner", "4", 4),
    (["--backend", "numpy"], "probe.encoding.backend", "numpy", "numpy"),
    (["--direction", "decoding"], "probe.encoding.direction", "decoding", "decoding"),
    (["--pca", "20"], "probe.features.pca", "20", 20),
    (["--cache-dir", ""], "probe.cache_dir", "null", None),
    (["--cache-dir", "cache"], "probe.cache_dir", "cache", "cache"),
    (["--allow-pickle"], "model.allow_pickle", "true", True),
    (["--network", "student"], "model.network", "student", "student"),
    (["--weights", "w.pth"], "model.weights", "w.pth", "w.pth"),
    (["--stimuli", "s.csv"], "probe.stimuli", "s.csv", "s.csv"),
    (["--pooling", "cls"], "probe.features.pooling", "cls", "cls"),
    (["--batch-size", "8"], "probe.features.batch_size", "8", 8),
    (["--gradient-loss", "invariance"], "probe.features.gradient_loss", "invariance", "invariance"),
    (["--labels", "l.csv"], "probe.features.labels", "l.csv", "l.csv"),
    (["--resolution", "64"], "probe.preprocess.resolution", "64", 64),
    (["--crop-pct", "0.875"], "probe.preprocess.crop_pct", "0.875", 0.875),
    (["--max-stimuli", "50"], "probe.max_stimuli", "50", 50),
    (["--device", "cpu"], "probe.device", "cpu", "cpu"),
    (["--precision", "float32"], "probe.precision", "float32", "float32"),
]  # fmt: skip


@pytest.mark.parametrize(
    "legacy, field, dotted, expected", LEGACY, ids=[" ".join(case[0]) for case in LEGACY]
)
def test_each_legacy_flag_means_its_dotted_form(legacy, field, dotted, expected):
    from_legacy = _options(*BASE, *legacy)
    from_dotted = _options(*BASE, f"--{field}", dotted)
    assert from_legacy.probe == from_dotted.probe and from_legacy.model == from_dotted.model
    value = from_legacy
    for name in field.split("."):
        value = getattr(value, name)
    assert value == expected
    block = field.partition(".")[0]
    default = _options(*BASE)
    assert getattr(from_legacy, block) != getattr(default, block), "the flag must change a field"


def test_translate_legacy_flags_keeps_new_style_arguments_untouched():
    argv = ["--config", "p.yaml", "--probe.features.pooling", "cls", "--out", "o", "--overwrite"]
    assert translate_legacy_flags(argv) == argv
    assert translate_legacy_flags(["--model", "m"]) == ["--model.spec", "m"]
    assert translate_legacy_flags(["--model", "{spec: m}"]) == ["--model", "{spec: m}"]


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_legacy_flags_and_print_config_through_the_console_script(tmp_path):
    from brainalign.models import create_backbone, save_teacher_export
    from brainalign.probe.simulate import simulate_subject

    subject = simulate_subject(tmp_path / "sim", n_stimuli=40, image_size=16, seed=0)
    torch.manual_seed(0)
    save_teacher_export(create_backbone("vit_tiny_test"), tmp_path / "export", {"step": 0})
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    legacy = [
        *("--model", "export", "--brain", str(subject.fmri_dir), "--brain", str(subject.meg_path)),
        *("--layers", "0,1", "--n-folds", "3", "--backend", "numpy", "--pooling", "cls"),
        *("--cache-dir", "", "--batch-size", "16"),
    ]

    def brainalign(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BRAINALIGN), "probe", *args], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip

    printed = brainalign(*legacy, "--print_config")
    assert printed.returncode == 0, printed.stderr[-2000:]
    config = yaml.safe_load(printed.stdout)["probe"]
    assert config["features"]["layers"] == [0.0, 1.0] and config["cache_dir"] is None
    assert config["brain"] == [str(subject.fmri_dir), str(subject.meg_path)]

    result = brainalign(*legacy, "--out", "out")
    assert result.returncode == 0, result.stderr[-2000:]
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert set(scores["modality"]) == {"fmri", "meg"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["layers"] == [0, 3] and summary["pooling"] == "cls"  # depths 0, 1 of 4 blocks
    assert not (tmp_path / ".brainalign_cache").exists(), "--cache-dir '' disables the cache"

    misspelt = brainalign(*legacy, "--n-fold", "3", "--out", "out2")
    assert misspelt.returncode == 2
    assert misspelt.stderr.strip().splitlines() == [
        "brainalign probe: error: unrecognized arguments: --n-fold 3; did you mean --n-folds?"
    ]
