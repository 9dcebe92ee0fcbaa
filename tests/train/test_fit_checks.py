"""The checks `brainalign fit` runs before a run, in process: checkpoints, model comparison,
config sources, the run folder, data-source content, held warnings, callback state keys."""

from __future__ import annotations

import errno
import io
import os
import sys
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from brainalign.callbacks import LogSpacedCheckpoint
from brainalign.models.checkpoint import read_checkpoint
from brainalign.train.config_sources import ConfigSources, parse_error_line
from brainalign.train.data import DataSource, SSLDataModule
from brainalign.train.quiet_start import HeldWarnings
from brainalign.train.resume import check_model_matches, model_differences
from brainalign.train.run_folder import RunFolderSnapshot, check_writable
from brainalign.train.source_checks import (
    FILES_TRIED,
    check_images_decode,
    check_shards_hold_images,
)

SMALL = {"global_size": 16, "local_size": 8, "n_local_crops": 0, "num_workers": 0}


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (seed % 256, 40, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- checkpoints


def test_read_checkpoint_returns_a_plain_checkpoint_with_its_tensors(tmp_path):
    weights = torch.arange(6.0).reshape(2, 3)
    torch.save({"state_dict": {"w": weights}, "global_step": 7}, tmp_path / "a.ckpt")
    checkpoint = read_checkpoint(tmp_path / "a.ckpt")
    assert checkpoint["global_step"] == 7
    torch.testing.assert_close(checkpoint["state_dict"]["w"], weights)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.ckpt", b"", "is empty"),
        ("text.ckpt", b"not a checkpoint\n", "is not a zip archive"),
        ("truncated.ckpt", None, "truncated"),
    ],
)
def test_damaged_checkpoints_are_named_in_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:  # the first half of a real checkpoint file (an interrupted write)
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        read_checkpoint(path)
    assert name in str(caught.value) and "\n" not in str(caught.value)


def test_a_checkpoint_with_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {}, "x": Payload(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match=r"refused.*system"):
        read_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()
    # the payload does run when unpickled without the guard: the test can detect it
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert marker.exists()


def test_missing_folder_and_non_lightning_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        read_checkpoint(tmp_path / "nowhere.ckpt")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "bare.ckpt")
    with pytest.raises(ValueError, match="no 'state_dict'"):
        read_checkpoint(tmp_path / "bare.ckpt")


# --------------------------------------------------------------------------- model comparison

SAVED = {
    "backbone": "vit_tiny_test",
    "img_size": None,
    "dino_head": {"n_prototypes": 256, "hidden_dim": 128, "bottleneck_dim": 32, "n_layers": 3},
    "ibot_head": None,
    "optim": {"base_lr": 0.002, "betas": [0.9, 0.999]},
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
}


def configured(**changes):
    settings = yaml.safe_load(yaml.safe_dump({k: v for k, v in SAVED.items() if k[0] != "_"}))
    for dotted, value in changes.items():
        node = settings
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return settings


def test_the_same_model_has_no_differences():
    assert model_differences(SAVED, configured()) == []
    assert check_model_matches("a.ckpt", SAVED, configured()) == []


def test_another_backbone_is_an_error_naming_both():
    with pytest.raises(ValueError) as caught:
        check_model_matches("a.ckpt", SAVED, configured(backbone="vit_small_test"))
    message = str(caught.value)
    assert "trained with backbone 'vit_tiny_test' but this run builds 'vit_small_test'" in message
    assert "a.ckpt" in message and "--model_from_ckpt true" in message


def test_other_head_sizes_are_an_architecture_error_naming_the_key():
    with pytest.raises(ValueError, match=r"model\.dino_head\.n_prototypes: 256 .* 1024"):
        check_model_matches("a.ckpt", SAVED, configured(**{"dino_head.n_prototypes": 1024}))


def test_a_default_section_is_compared_with_the_defaults():
    # ibot_head is None (defaults, 65,536 prototypes) in the checkpoint: a config that spells
    # the defaults out matches, one with 256 prototypes does not
    defaults = {"n_prototypes": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "n_layers": 3}
    assert model_differences(SAVED, configured(ibot_head=defaults)) == []
    with pytest.raises(ValueError, match=r"ibot_head\.n_prototypes"):
        check_model_matches(
            "a.ckpt", SAVED, configured(ibot_head={**defaults, "n_prototypes": 256})
        )


def test_other_settings_are_returned_not_refused():
    differences = check_model_matches("a.ckpt", SAVED, configured(**{"optim.base_lr": 0.001}))
    assert differences == [("optim.base_lr", 0.002, 0.001)]


# --------------------------------------------------------------------------- config sources


def test_the_last_source_setting_a_key_is_named(tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("model: {backbone: vit_s}\ndata: {batch_size: 8}\n")
    second.write_text(
        "trainer:\n  logger:\n    class_path: x.Logger\n    init_args: {save_dir: runs}\n"
        "data: {batch_size: 16}\n"
    )
    args = ["fit", "--config", str(first), "--config", str(second), "--model.backbone=vit_b"]
    sources = ConfigSources(args)
    assert sources.origin("data.batch_size") == f"in config file {second}"
    assert sources.origin("model.backbone") == "on the command line"
    assert sources.origin("trainer.logger.save_dir") == f"in config file {second}"
    assert sources.origin("trainer.logger.init_args.save_dir") == f"in config file {second}"
    assert sources.origin("trainer.max_steps") is None
    assert sources.where("data") == f" (set in config file {second})"


def lightning_parse_error(args: list[str]) -> str:
    """The text of the ArgumentError the real LightningCLI parser raises for ``args``."""
    from argparse import ArgumentError

    from lightning.pytorch.cli import LightningCLI

    from brainalign.train.module import DINOv3Module

    class ParseOnly(LightningCLI):
        def instantiate_classes(self) -> None:
            pass

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    argv, sys.argv = sys.argv, ["brainalign", *args]
    try:
        ParseOnly(
            DINOv3Module,
            SSLDataModule,
            parser_kwargs={"exit_on_error": False},
            seed_everything_default=False,
        )
    except ArgumentError as error:
        return str(error)
    finally:
        sys.argv = argv
    raise AssertionError("the arguments parsed")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("model:\n  backbon: vit_s\n", ("model.backbon", "in config file")),
        ("data:\n  batch_size: sixteen\n", ("data.batch_size", "sixteen", "in config file")),
        ("model: [1\n", ("does not parse", "line 2", "bad.yaml")),
    ],
)
def test_parse_errors_become_one_line_naming_the_file(tmp_path, content, expected):
    smoke = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "smoke.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    args = ["fit", "--config", str(smoke), "--config", str(bad)]
    line = parse_error_line(lightning_parse_error(args), ConfigSources(args))
    assert "\n" not in line
    for part in expected:
        assert part in line, line
    assert str(bad) in line or "bad.yaml" in line


# --------------------------------------------------------------------------- the run folder


def test_undo_removes_a_new_run_folder_and_the_parents_it_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "group" / "smoke"
    snapshot = RunFolderSnapshot(run)
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("new")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    snapshot.undo()
    assert sorted(tmp_path.iterdir()) == []


def test_undo_keeps_what_an_existing_run_folder_held(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "smoke"
    (run / "exports" / "step_0000000").mkdir(parents=True)
    (run / "config.yaml").write_text("the first run's config")
    (run / "exports" / "step_0000000" / "meta.json").write_text("{}")
    snapshot = RunFolderSnapshot(run)
    (run / "config.yaml").write_text("the failed run's config")
    (run / "events.out.tfevents.1").write_bytes(b"")
    (run / "exports" / "step_0000004").mkdir()
    (run / "exports" / "step_0000004" / "meta.json").write_text("{}")
    snapshot.undo()
    kept = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    assert kept == [
        "config.yaml",
        "exports",
        "exports/step_0000000",
        "exports/step_0000000/meta.json",
    ]
    assert (run / "config.yaml").read_text() == "the first run's config"


def test_undo_leaves_the_working_folder_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    snapshot = RunFolderSnapshot(tmp_path)  # logger: false puts the run in the current folder
    (tmp_path / "notes.txt").write_text("written meanwhile")
    snapshot.undo()
    assert (tmp_path / "notes.txt").exists()


def test_check_writable_names_the_problem_and_leaves_nothing(tmp_path):
    check_writable(tmp_path / "runs" / "smoke", needed_bytes=1)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "plain").write_text("x")
    with pytest.raises(NotADirectoryError, match="'.*plain' is a file"):
        check_writable(tmp_path / "plain" / "runs")
    with pytest.raises(OSError, match=r"free on its file system.*default_root_dir") as caught:
        check_writable(tmp_path / "runs", needed_bytes=1 << 62)
    assert caught.value.errno == errno.ENOSPC


# --------------------------------------------------------------------------- data sources


def test_a_folder_passes_when_one_image_decodes_and_fails_when_none_does(tmp_path):
    files = []
    for index in range(3 * FILES_TRIED):
        path = tmp_path / f"img{index:03d}.png"
        path.write_bytes(png(index) if index == 2 * FILES_TRIED else b"broken")
        files.append(str(path))
    source = DataSource(str(tmp_path), kind="folder", name="mine")
    with pytest.raises(
        ValueError, match=rf"'mine': none of {FILES_TRIED} of its {2 * FILES_TRIED}"
    ):
        check_images_decode(source, files[: 2 * FILES_TRIED])
    # a decodable file at a position the spread visits (the last one) is enough
    check_images_decode(source, files[: 2 * FILES_TRIED + 1])


def write_tar(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_shards_must_be_tar_archives_holding_an_image(tmp_path):
    source = DataSource(str(tmp_path), name="web")
    good = write_tar(tmp_path / "good.tar", {"k1.json": b"{}", "k1.png": png(1)})
    check_shards_hold_images(source, [good])
    no_image = write_tar(tmp_path / "meta.tar", {"k1.json": b"{}", "k1.png": b"broken"})
    with pytest.raises(ValueError, match="meta.tar' holds no decodable image"):
        check_shards_hold_images(source, [good, no_image])
    (tmp_path / "noise.tar").write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="noise.tar' is not a readable tar archive"):
        check_shards_hold_images(source, [good, str(tmp_path / "noise.tar")])


def test_check_inputs_lists_once_and_setup_reuses_the_lists(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        (folder / f"img{index}.png").write_bytes(png(index))
    module = SSLDataModule(sources=[DataSource(str(folder), kind="folder")], batch_size=2, **SMALL)
    module.check_inputs()
    (folder / "img9.png").write_bytes(png(9))  # added after the check: not in the listing
    module.setup()
    assert [Path(p).name for p in module._resolved[0].files] == [f"img{i}.png" for i in range(4)]
    broken = SSLDataModule(
        sources=[DataSource(str(folder), kind="folder"), DataSource(str(tmp_path), kind="shards")],
        batch_size=2,
        **SMALL,
    )
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        broken.check_inputs()


# --------------------------------------------------------------------------- callbacks, warnings


def test_log_spaced_checkpoints_with_other_settings_have_other_state_keys():
    dense, sparse = LogSpacedCheckpoint(n_checkpoints=8), LogSpacedCheckpoint(n_checkpoints=3)
    assert dense.state_key != sparse.state_key
    assert dense.state_key == LogSpacedCheckpoint(n_checkpoints=8).state_key
    # a checkpoint written before the settings were part of the key still restores the steps
    restored = LogSpacedCheckpoint(n_checkpoints=3)
    old = {"callbacks": {"LogSpacedCheckpoint": {"done_steps": [0, 1, 3]}}}
    restored.on_load_checkpoint(None, None, old)
    assert restored.done_steps == [0, 1, 3]


def test_held_warnings_are_shown_in_order_on_release_and_not_at_all_on_drop(monkeypatch, capsys):
    shown: list[str] = []
    monkeypatch.setattr(
        warnings, "showwarning", lambda message, *args, **kw: shown.append(str(message))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        held = HeldWarnings()
        held.start()
        warnings.warn("first held warning", UserWarning, stacklevel=1)
        held.note("a note line")
        warnings.warn("second held warning", UserWarning, stacklevel=1)
        assert shown == [] and capsys.readouterr().err == ""
        held.release()
        assert shown == ["first held warning", "second held warning"]
        assert capsys.readouterr().err == "a note line\n"
        held = HeldWarnings()
        held.start()
        warnings.warn("dropped warning", UserWarning, stacklevel=1)
        held.note("dropped note")
        held.drop()
        warnings.warn("after the drop", UserWarning, stacklevel=1)
    assert shown == ["first held warning", "second held warning", "after the drop"]
    assert capsys.readouterr().err == ""
