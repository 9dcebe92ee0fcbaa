"""Tests of the self-supervised data stream: shards, folders, mixing, resume, errors."""

import io
import random
import sys
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import webdataset as wds
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from brainalign.train.data import (
    DataSource,
    SourceMixer,
    SSLDataModule,
    shards_for_stream,
)

SMALL = dict(global_size=16, local_size=8, n_local_crops=2, num_workers=0)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny crops run faster on one thread (the test machine has 2 shared cores)."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


def identity_color(identity: int) -> tuple[int, int, int]:
    return (identity % 256, identity // 256, 7)


def png_bytes(identity: int, size: int = 12) -> bytes:
    """A solid PNG whose colour encodes an integer id (< 65536)."""
    buffer = io.BytesIO()
    array = np.full((size, size + 3, 3), identity_color(identity), dtype=np.uint8)
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class IdentityAugmentation:
    """Test stand-in for the crops: returns the image id as a (1, 1, 1) 'crop'."""

    n_local_crops = 0

    def __call__(self, image):
        red, green, _ = image.getpixel((0, 0))
        identity = torch.tensor([[[float(red + 256 * green)]]])
        return {"global_crops": [identity, identity], "local_crops": []}


def batch_ids(batch) -> list[int]:
    return batch["global_crops"][0].flatten().long().tolist()


def make_folder(root, ids, *, corrupt: int = 0):
    root.mkdir(parents=True, exist_ok=True)
    for identity in ids:
        sub = root / f"class{identity % 3}"  # nested folders, found recursively
        sub.mkdir(exist_ok=True)
        (sub / f"img{identity:05d}.png").write_bytes(png_bytes(identity))
    for index in range(corrupt):
        (root / f"broken{index}.png").write_bytes(b"this is not a png")
    return root


def make_shards(root, ids, n_shards):
    root.mkdir(parents=True, exist_ok=True)
    for shard_index in range(n_shards):
        with wds.TarWriter(str(root / f"shard-{shard_index:04d}.tar")) as writer:
            for identity in ids[shard_index::n_shards]:
                writer.write({"__key__": f"s{identity:06d}", "png": png_bytes(identity)})
    return root


def take(stream, n_batches):
    iterator = iter(stream)
    return [next(iterator) for _ in range(n_batches)]


def identity_module(sources, **kwargs):
    module = SSLDataModule(sources=sources, **{**SMALL, **kwargs})
    module.augmentation = IdentityAugmentation()
    return module


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "images", list(range(24)))


# --------------------------------------------------------------------------- batches


def test_batch_layout_with_real_crops(folder):
    module = SSLDataModule(sources=[DataSource(str(folder), kind="folder")], batch_size=3, **SMALL)
    batch = next(iter(module.train_dataloader()))
    assert batch["global_crops"].shape == (2, 3, 3, 16, 16)
    assert batch["local_crops"].shape == (2, 3, 3, 8, 8)
    assert batch["n_skipped"] == 0
    no_local = SSLDataModule(
        sources=[DataSource(str(folder), kind="folder")],
        batch_size=3,
        **{**SMALL, "n_local_crops": 0},
    )
    assert next(iter(no_local.train_dataloader()))["local_crops"] is None


def test_folder_pass_is_a_permutation_of_all_images(folder):
    module = identity_module([DataSource(str(folder), kind="folder")], batch_size=8)
    ids = [i for batch in take(module.make_stream(), 6) for i in batch_ids(batch)]
    assert sorted(ids[:24]) == list(range(24))  # first pass: every image once
    assert sorted(ids[24:]) == list(range(24))  # second pass too
    assert ids[:24] != ids[24:]  # in a new order
    assert ids[:24] != list(range(24))  # shuffled


def test_folder_stream_is_deterministic_and_seeded(folder, monkeypatch):
    source = [DataSource(str(folder), kind="folder")]
    first = take(SSLDataModule(sources=source, batch_size=3, seed=5, **SMALL).make_stream(), 2)
    second = take(SSLDataModule(sources=source, batch_size=3, seed=5, **SMALL).make_stream(), 2)
    other = take(SSLDataModule(sources=source, batch_size=3, seed=6, **SMALL).make_stream(), 1)
    for a, b in zip(first, second):
        torch.testing.assert_close(a["global_crops"], b["global_crops"], rtol=0, atol=0)
        torch.testing.assert_close(a["local_crops"], b["local_crops"], rtol=0, atol=0)
    assert not torch.equal(first[0]["global_crops"], other[0]["global_crops"])

    # the stream does not disturb the global random state of the caller (CPU, python, CUDA)
    def forbidden(*args):
        raise AssertionError("the data stream must not reseed CUDA generators")

    random.seed(1)
    expected_python = random.random()
    random.seed(1)
    with monkeypatch.context() as patch:
        patch.setattr(torch.cuda, "manual_seed_all", forbidden)
        patch.setattr(torch.cuda, "manual_seed", forbidden)
        take(SSLDataModule(sources=source, batch_size=2, **SMALL).make_stream(), 1)
    assert random.random() == expected_python
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    take(SSLDataModule(sources=source, batch_size=2, **SMALL).make_stream(), 1)
    assert torch.equal(torch.rand(3), expected)


def test_resume_at_step_k_gives_batches_k_and_k_plus_1(tmp_path):
    source = [DataSource(str(make_folder(tmp_path / "images", list(range(10)))), kind="folder")]
    module = SSLDataModule(sources=source, batch_size=3, seed=1, **SMALL)
    uninterrupted = take(module.make_stream(), 5)  # crosses a pass boundary (10 images)
    resumed_module = SSLDataModule(sources=source, batch_size=3, seed=1, **SMALL)
    resumed_module.trainer = SimpleNamespace(
        global_step=3, accumulate_grad_batches=1, global_rank=0, world_size=1
    )
    resumed = take(resumed_module.train_dataloader(), 2)
    for expected, actual in zip(uninterrupted[3:5], resumed):
        torch.testing.assert_close(actual["global_crops"], expected["global_crops"], rtol=0, atol=0)
        torch.testing.assert_close(actual["local_crops"], expected["local_crops"], rtol=0, atol=0)
    # gradient accumulation: global step 1 with 2 batches per step starts at batch 2
    resumed_module.trainer = SimpleNamespace(
        global_step=1, accumulate_grad_batches=2, global_rank=0, world_size=1
    )
    batch = next(iter(resumed_module.train_dataloader()))
    torch.testing.assert_close(batch["global_crops"], uninterrupted[2]["global_crops"])


def test_loader_restarts_from_the_trainer_step_when_iterated_again(folder):
    module = identity_module([DataSource(str(folder), kind="folder")], batch_size=4)
    reference = [batch_ids(b) for b in take(module.make_stream(), 4)]
    trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=1, global_rank=0, world_size=1)
    module.trainer = trainer
    loader = module.train_dataloader()
    assert batch_ids(next(iter(loader))) == reference[0]
    trainer.global_step = 3  # e.g. a new epoch after limit_train_batches=3
    assert batch_ids(next(iter(loader))) == reference[3]


def test_two_ranks_see_disjoint_samples_that_make_up_the_global_stream(folder):
    source = [DataSource(str(folder), kind="folder")]
    module = identity_module(source, batch_size=4)
    rank0 = take(module.make_stream(rank=0, world_size=2), 3)
    rank1 = take(module.make_stream(rank=1, world_size=2), 3)
    ids0 = {i for batch in rank0 for i in batch_ids(batch)}
    ids1 = {i for batch in rank1 for i in batch_ids(batch)}
    assert ids0.isdisjoint(ids1)
    assert ids0 | ids1 == set(range(24))  # 3 steps x 2 ranks x 4 = one pass
    # rank batches are consecutive slices of the single-process stream with the global batch
    single = take(identity_module(source, batch_size=8).make_stream(), 3)
    for step in range(3):
        assert batch_ids(rank0[step]) + batch_ids(rank1[step]) == batch_ids(single[step])


def test_folder_batches_do_not_depend_on_num_workers(folder):
    source = [DataSource(str(folder), kind="folder")]
    by_workers = {}
    for num_workers in (0, 2):
        settings = {**SMALL, "num_workers": num_workers}
        module = SSLDataModule(sources=source, batch_size=3, seed=2, **settings)
        by_workers[num_workers] = take(module.train_dataloader(), 5)
    for a, b in zip(by_workers[0], by_workers[2]):
        torch.testing.assert_close(a["global_crops"], b["global_crops"], rtol=0, atol=0)
        torch.testing.assert_close(a["local_crops"], b["local_crops"], rtol=0, atol=0)


def test_corrupt_folder_image_is_skipped_and_counted(tmp_path):
    folder = make_folder(tmp_path / "images", list(range(6)), corrupt=1)
    module = identity_module([DataSource(str(folder), kind="folder")], batch_size=7)
    batches = take(module.make_stream(), 3)  # 7 files: each batch is one pass
    assert [b["n_skipped"] for b in batches] == [1, 1, 1]  # the broken file, once per pass
    assert all(0 <= i < 6 for b in batches for i in batch_ids(b))


# --------------------------------------------------------------------------- shards


def test_shards_stream_reads_every_sample(tmp_path):
    shards = make_shards(tmp_path / "shards", list(range(20)), n_shards=3)
    module = identity_module([DataSource(str(shards))], batch_size=5, shuffle_buffer=0)
    ids = [i for batch in take(module.make_stream(), 4) for i in batch_ids(batch)]
    assert sorted(ids) == list(range(20))  # one pass over the 3 shards, each sample once
    # a shuffle buffer reorders samples (and mixes neighbouring passes) but loses none
    module = identity_module([DataSource(str(shards))], batch_size=5, shuffle_buffer=8)
    buffered = [i for batch in take(module.make_stream(), 12) for i in batch_ids(batch)]
    assert set(buffered) == set(range(20))
    assert buffered[:20] != ids


def test_corrupt_shard_samples_are_skipped_and_counted(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    with wds.TarWriter(str(root / "shard-0000.tar")) as writer:
        writer.write({"__key__": "a", "png": png_bytes(1)})
        writer.write({"__key__": "b", "png": b"garbage, not an image"})
        writer.write({"__key__": "c", "png": png_bytes(2)})
        writer.write({"__key__": "d", "cls": b"3"})  # no image at all
        writer.write({"__key__": "e", "png": png_bytes(3)})
    module = identity_module([DataSource(str(root))], batch_size=3, shuffle_buffer=0)
    first, second = take(module.make_stream(), 2)
    assert sorted(batch_ids(first)) == [1, 2, 3]
    assert first["n_skipped"] == 2
    assert second["n_skipped"] == 2  # the next pass meets them again


def test_mixture_weights_are_respected(tmp_path):
    common = make_shards(tmp_path / "common", list(range(0, 100)), n_shards=2)
    rare = make_shards(tmp_path / "rare", list(range(1000, 1100)), n_shards=2)
    sources = [DataSource(str(common), weight=9.0), DataSource(str(rare), weight=1.0)]
    module = identity_module(sources, batch_size=50, shuffle_buffer=20)
    ids = [i for batch in take(module.make_stream(), 8) for i in batch_ids(batch)]
    rare_fraction = np.mean([i >= 1000 for i in ids])
    assert 0.05 < rare_fraction < 0.16, rare_fraction  # 400 draws, expected 0.10
    same = identity_module(sources, batch_size=50, shuffle_buffer=20)
    same_ids = [i >= 1000 for batch in take(same.make_stream(), 8) for i in batch_ids(batch)]
    assert same_ids == [i >= 1000 for i in ids]  # the source of each position is seeded


def test_source_mixer_gives_exact_shares_and_per_source_positions():
    mixer = SourceMixer([3.0, 1.0, 0.5], seed=0, block_size=90)
    located = [mixer.locate(p) for p in range(180)]
    sources = [s for s, _ in located]
    assert [sources[:90].count(k) for k in range(3)] == [60, 20, 10]
    for source in range(3):
        local = [q for s, q in located if s == source]
        assert sorted(local) == list(range(len(local)))  # each source position used once
    with pytest.raises(ValueError, match="raise its weight"):
        SourceMixer([1.0, 1e-9], seed=0, block_size=100)


def test_shards_are_split_between_ranks_and_workers(tmp_path):
    shards = [f"s{i}" for i in range(8)]
    parts = [
        shards_for_stream(shards, rank=r, world_size=2, worker=w, n_workers=2)
        for r in range(2)
        for w in range(2)
    ]
    assert sorted(s for part in parts for s in part) == shards  # disjoint, all covered
    few = ["a", "b", "c"]
    assert shards_for_stream(few, rank=1, world_size=2, worker=1, n_workers=2) == ["b"]
    assert shards_for_stream(["a"], rank=1, world_size=2, worker=0, n_workers=1) == ["a"]
    # end to end: two ranks read disjoint shards
    root = make_shards(tmp_path / "shards", list(range(40)), n_shards=4)
    module = identity_module([DataSource(str(root))], batch_size=5, shuffle_buffer=0)
    ids = [
        {i for batch in take(module.make_stream(rank=r, world_size=2), 4) for i in batch_ids(batch)}
        for r in range(2)
    ]
    assert ids[0].isdisjoint(ids[1])
    assert ids[0] | ids[1] == set(range(40))


def test_few_shards_warns(tmp_path):
    root = make_shards(tmp_path / "shards", list(range(6)), n_shards=1)
    module = identity_module([DataSource(str(root))], batch_size=2, num_workers=0)
    module.trainer = SimpleNamespace(
        global_step=0, accumulate_grad_batches=1, global_rank=0, world_size=2
    )
    with pytest.warns(UserWarning, match="1 shards for 2 process"):
        loader = module.train_dataloader()
    assert len(batch_ids(next(iter(loader)))) == 2


# --------------------------------------------------------------------------- errors


def test_missing_paths_and_empty_folders_raise_clear_errors(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"nowhere.*brainalign shards"):
        SSLDataModule(sources=[DataSource(missing)])
    with pytest.raises(FileNotFoundError, match=r"image folder.*nowhere"):
        SSLDataModule(sources=[DataSource(missing, kind="folder")])

    no_shards = tmp_path / "no_shards"
    no_shards.mkdir()
    (no_shards / "readme.txt").write_text("hello")
    module = SSLDataModule(sources=[DataSource(str(no_shards), name="mine")])
    with pytest.raises(FileNotFoundError, match=r"'mine'.*no \.tar shards.*brainalign shards"):
        module.setup("fit")

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    module = SSLDataModule(sources=[DataSource(str(empty), kind="folder")])
    with pytest.raises(FileNotFoundError, match="no images found under"):
        module.train_dataloader()

    pattern = str(tmp_path / "shard-{0000..0003}.tar")
    with pytest.raises(FileNotFoundError, match="4 of 4 shards"):
        SSLDataModule(sources=[DataSource(pattern)]).setup()


def test_bad_settings_raise_clear_errors(folder):
    with pytest.raises(ValueError, match="sources is empty"):
        SSLDataModule(sources=[])
    for weight in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="weight must be a positive"):
            SSLDataModule(sources=[DataSource(str(folder), kind="folder", weight=weight)])
    with pytest.raises(ValueError, match="batch_size"):
        SSLDataModule(sources=[DataSource(str(folder), kind="folder")], batch_size=0)
    with pytest.raises(NotADirectoryError, match="not a folder"):
        image = next(p for p in folder.rglob("*.png"))
        SSLDataModule(sources=[DataSource(str(image), kind="folder")])


# --------------------------------------------------------------------------- configuration


def test_sources_are_built_from_yaml_by_jsonargparse(tmp_path, folder):
    from jsonargparse import ArgumentParser

    shards = make_shards(tmp_path / "shards", list(range(4)), n_shards=2)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SSLDataModule, "data")
    config = parser.parse_string(
        f"""
data:
  batch_size: 2
  num_workers: 0
  global_scale: [0.4, 1.0]
  sources:
    - path: {shards}
      weight: 0.9
    - path: {folder}
      kind: folder
      weight: 0.1
      name: mine
"""
    )
    module = parser.instantiate(config).data
    assert isinstance(module, SSLDataModule)
    assert module.sources == [
        DataSource(str(shards), "shards", 0.9, None),
        DataSource(str(folder), "folder", 0.1, "mine"),
    ]
    assert module.augmentation.global_scale == (0.4, 1.0)
    with pytest.raises(Exception, match="kind"):
        parser.parse_string(f"data:\n  sources:\n    - {{path: {folder}, kind: zip}}\n")


def test_lightning_cli_builds_the_datamodule(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["brainalign"])
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.demos.boring_classes import BoringModel

    args = {
        "trainer": {
            "logger": False,
            "enable_checkpointing": False,
            "default_root_dir": str(tmp_path),
        },
        "data": {"sources": [{"path": str(folder), "kind": "folder"}], "batch_size": 2},
    }
    cli = LightningCLI(BoringModel, SSLDataModule, run=False, args=args, save_config_callback=None)
    assert cli.datamodule.sources == [DataSource(str(folder), kind="folder")]
    assert cli.datamodule.batch_size == 2


def test_state_dict_warns_when_resumed_with_other_settings(folder):
    source = [DataSource(str(folder), kind="folder")]
    saved = SSLDataModule(sources=source, seed=1, **SMALL).state_dict()
    SSLDataModule(sources=source, seed=1, **SMALL).load_state_dict(saved)  # no warning
    with pytest.warns(UserWarning, match="seed: 1 -> 2"):
        SSLDataModule(sources=source, seed=2, **SMALL).load_state_dict(saved)


# --------------------------------------------------------------------------- with a real Trainer


class BatchRecorder(L.LightningModule):
    """Records the image ids of every training batch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_index):
        self.seen.append(batch_ids(batch))
        return (self.weight * batch["global_crops"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_resume_from_checkpoint_continues_the_stream(tmp_path):
    folder = make_folder(tmp_path / "images", list(range(10)))

    def fit(max_steps, ckpt_path=None, num_workers=0):
        module = identity_module(
            [DataSource(str(folder), kind="folder")], batch_size=3, num_workers=num_workers
        )
        recorder = BatchRecorder()
        checkpoints = ModelCheckpoint(
            dirpath=tmp_path / "checkpoints",
            every_n_train_steps=2,
            save_top_k=-1,
            filename="{step}",
        )
        trainer = L.Trainer(
            max_steps=max_steps,
            accelerator="cpu",
            logger=False,
            callbacks=[checkpoints],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(recorder, datamodule=module, ckpt_path=ckpt_path)
        return recorder.seen

    uninterrupted = fit(5)
    resumed = fit(5, ckpt_path=str(tmp_path / "checkpoints" / "step=2.ckpt"), num_workers=2)
    assert len(uninterrupted) == 5
    assert resumed == uninterrupted[2:]


def test_unreadable_shards_are_skipped_and_all_unreadable_is_an_error(tmp_path):
    root = make_shards(tmp_path / "shards", list(range(4)), n_shards=1)
    (root / "shard-0001.tar").write_bytes(b"not a tar file at all")
    module = identity_module([DataSource(str(root))], batch_size=4, shuffle_buffer=0)
    batches = take(module.make_stream(), 4)  # each batch is one pass over the good shard
    assert all(sorted(batch_ids(b)) == [0, 1, 2, 3] for b in batches)
    # the broken shard is met once per pass, before or after the good one
    assert sum(b["n_skipped"] for b in batches) in (3, 4)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "shard-0000.tar").write_bytes(b"not a tar file at all")
    module = identity_module([DataSource(str(broken), name="bad")], batch_size=2)
    with pytest.raises(RuntimeError, match=r"'bad'.*gave no samples"):
        take(module.make_stream(), 1)
