"""Shard writers: round trip through webdataset, reuse of procedural shards, clear errors."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from brainalign.synthetic import render_image
from brainalign.train.shards import write_image_shards, write_procedural_shards


def _make_image_folder(root: Path) -> dict[str, np.ndarray]:
    """7 PNGs of unequal sizes: 2 at the top level, 5 in class folders. Relative path -> pixels."""
    rng = np.random.default_rng(0)
    layout = ["top_a.png", "top_b.png", "cat/c1.png", "cat/c2.png", "dog/d.1.png", "dog/d2.PNG"]
    layout.append("dog/nested/d3.png")
    pixels = {}
    for index, relative in enumerate(layout):
        image = rng.integers(0, 256, size=(5 + index, 9 - index // 2, 3), dtype=np.uint8)
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, format="PNG")
        pixels[relative] = image
    (root / "notes.txt").write_text("not an image")
    return pixels


def _read_samples(shards: list[Path]) -> list[dict]:
    urls = [str(shard) for shard in shards]
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
    return list(dataset)


def test_image_shards_round_trip(tmp_path):
    pixels = _make_image_folder(tmp_path / "images")
    shards = write_image_shards(
        tmp_path / "images", tmp_path / "shards", max_count=3, progress=False
    )
    assert [shard.name for shard in shards] == [f"shard-{i:06d}.tar" for i in range(3)]
    assert all(shard.is_file() for shard in shards)

    samples = _read_samples(shards)
    assert len(samples) == len(pixels) == 7
    assert [sample["__key__"] for sample in samples] == [f"{i:08d}" for i in range(7)]
    seen = {}
    for sample in samples:
        assert set(sample) >= {"__key__", "png", "json"}
        record = sample["json"]
        seen[record["path"]] = np.asarray(sample["png"].convert("RGB"))
        parent = Path(record["path"]).parent
        if parent == Path("."):
            assert "label" not in record
        else:
            assert record["label"] == parent.name
    assert seen.keys() == pixels.keys()
    for relative, image in pixels.items():
        np.testing.assert_array_equal(seen[relative], image)

    labels = {record["path"]: record for record in (s["json"] for s in samples)}
    assert labels["cat/c1.png"]["class_index"] == 0  # sorted: cat, dog, nested
    assert labels["dog/d2.PNG"]["class_index"] == 1
    assert labels["dog/nested/d3.png"]["label"] == "nested"

    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["n_images"] == 7 and manifest["counts"] == [3, 3, 1]
    assert manifest["classes"] == ["cat", "dog", "nested"]
    assert not list(tmp_path.glob(".shards.*")), "the staging folder must be removed"


def test_image_bytes_are_copied_unchanged(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    image = np.random.default_rng(1).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "photo.jpeg", quality=90)
    (shard,) = write_image_shards(folder, tmp_path / "out", progress=False)
    with tarfile.open(shard) as tar:
        stored = tar.extractfile("00000000.jpg").read()
    assert stored == (folder / "photo.jpeg").read_bytes()


def test_existing_shards_are_refused_unless_overwrite(tmp_path):
    _make_image_folder(tmp_path / "images")
    out = tmp_path / "shards"
    first = write_image_shards(tmp_path / "images", out, max_count=2, progress=False)
    assert len(first) == 4
    with pytest.raises(FileExistsError, match=r"already holds shards.*overwrite=True"):
        write_image_shards(tmp_path / "images", out, progress=False)
    second = write_image_shards(
        tmp_path / "images", out, max_count=5, overwrite=True, progress=False
    )
    assert len(second) == 2
    assert sorted(out.glob("*.tar")) == second, "old shards must be removed when overwriting"


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_image_shards(tmp_path / "nowhere", tmp_path / "out", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"no images found.*\.jpg.*\.png.*\.webp"):
        write_image_shards(empty, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_unreadable_image_fails_without_leaving_output(tmp_path):
    _make_image_folder(tmp_path / "images")
    (tmp_path / "images" / "zz_broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="zz_broken.png"):
        write_image_shards(tmp_path / "images", tmp_path / "shards", max_count=2, progress=False)
    assert not (tmp_path / "shards").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "images"], "no staging folder may remain"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_count": 0}, "max_count"), ({"pattern": "shard.tar"}, "pattern")],
)
def test_bad_writer_arguments(tmp_path, kwargs, message):
    _make_image_folder(tmp_path / "images")
    with pytest.raises(ValueError, match=message):
        write_image_shards(tmp_path / "images", tmp_path / "out", progress=False, **kwargs)


PROCEDURAL = {"n_images": 9, "image_types": {"objects": 2, "blobs": 1}, "size": 12, "seed": 3}


def test_procedural_shards_hold_the_generated_images(tmp_path):
    shards = write_procedural_shards(tmp_path / "proc", max_count=4, progress=False, **PROCEDURAL)
    assert len(shards) == 3
    samples = _read_samples(shards)
    assert [sample["__key__"] for sample in samples] == [f"img{i:05d}" for i in range(9)]
    for index, sample in enumerate(samples):
        latents = sample["json"]
        expected, _ = render_image(index, image_type=latents["image_type"], size=12, seed=3)
        np.testing.assert_array_equal(np.asarray(sample["png"]), expected)
    table = pd.read_csv(tmp_path / "proc" / "latents.csv")
    assert list(table.stimulus_id) == [f"img{i:05d}" for i in range(9)]
    assert list(table.shard) == [shards[i // 4].name for i in range(9)]
    manifest = json.loads((tmp_path / "proc" / "manifest.json").read_text())
    assert manifest["image_types"] == pytest.approx({"objects": 2 / 3, "blobs": 1 / 3})
    assert manifest["counts"] == [4, 4, 1]


def test_procedural_shards_are_reused(tmp_path):
    out = tmp_path / "proc"
    first = write_procedural_shards(out, max_count=4, progress=False, **PROCEDURAL)
    modified = {shard: shard.stat().st_mtime_ns for shard in first}
    manifest_time = (out / "manifest.json").stat().st_mtime_ns
    # Same parameters, weights given in another order and scale: nothing is rewritten.
    again = write_procedural_shards(
        out,
        max_count=4,
        progress=False,
        **{**PROCEDURAL, "image_types": {"blobs": 5, "objects": 10}},
    )
    assert again == first
    assert {shard: shard.stat().st_mtime_ns for shard in again} == modified
    assert (out / "manifest.json").stat().st_mtime_ns == manifest_time
    # Weights equal up to rounding (0.7 / 1.05 vs 2 / 3) are the same mixture.
    close = {**PROCEDURAL, "image_types": {"objects": 0.7, "blobs": 0.35}}
    assert write_procedural_shards(out, max_count=4, progress=False, **close) == first
    with pytest.raises(FileExistsError, match="image_types"):
        other = {**PROCEDURAL, "image_types": {"objects": 1, "blobs": 1}}
        write_procedural_shards(out, max_count=4, progress=False, **other)


def test_mismatched_manifest_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "proc"
    write_procedural_shards(out, max_count=4, progress=False, **PROCEDURAL)
    with pytest.raises(FileExistsError, match=r"size: 12 on disk, 16 requested.*overwrite=True"):
        write_procedural_shards(out, max_count=4, progress=False, **{**PROCEDURAL, "size": 16})
    replaced = write_procedural_shards(
        out, max_count=4, overwrite=True, progress=False, **{**PROCEDURAL, "size": 16}
    )
    assert np.asarray(_read_samples(replaced)[0]["png"]).shape == (16, 16, 3)
    assert json.loads((out / "manifest.json").read_text())["size"] == 16


def test_procedural_writer_regenerates_missing_shards(tmp_path):
    out = tmp_path / "proc"
    first = write_procedural_shards(out, max_count=4, progress=False, **PROCEDURAL)
    reference = first[1].read_bytes()
    first[1].unlink()
    again = write_procedural_shards(out, max_count=4, progress=False, **PROCEDURAL)
    assert again == first and first[1].read_bytes() == reference  # byte-identical


def test_procedural_writer_refuses_foreign_shards(tmp_path):
    _make_image_folder(tmp_path / "images")
    write_image_shards(tmp_path / "images", tmp_path / "out", progress=False)
    with pytest.raises(FileExistsError, match="already holds shards"):
        write_procedural_shards(tmp_path / "out", progress=False, **PROCEDURAL)


def test_procedural_writer_checks_arguments_before_writing(tmp_path):
    with pytest.raises(ValueError, match="unknown image type"):
        write_procedural_shards(tmp_path / "p", n_images=3, image_types=["faces"], progress=False)
    with pytest.raises(ValueError, match="positive integer"):
        write_procedural_shards(tmp_path / "p", n_images=0, progress=False)
    assert not (tmp_path / "p").exists()


def _write_and_watch(out_dir: str, start, report) -> None:
    """Child process: write (or reuse) the shards, then report their inodes before and after."""
    import time

    start.wait()
    shards = write_procedural_shards(Path(out_dir), n_images=200, size=32, seed=0, progress=False)
    first = [shard.stat().st_ino for shard in shards]
    time.sleep(1.0)  # a writer that finished later must not have replaced them meanwhile
    report.put((first, [shard.stat().st_ino for shard in shards]))


@pytest.mark.slow
def test_writers_started_together_share_one_set_of_shards(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start, report = context.Barrier(3), context.Queue()
    workers = [
        context.Process(target=_write_and_watch, args=(str(tmp_path / "data" / "p"), start, report))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    results = [report.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert all(worker.exitcode == 0 for worker in workers)
    assert all(before == after for before, after in results), "shards were replaced under a reader"
    assert len({tuple(before) for before, _ in results}) == 1  # one writer, two reusers
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["p"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "data" / "p").stat().st_mode & 0o777 == 0o777 & ~umask  # readable by others
