"""One image list: stimulus folders, training folders and shards see the same files."""

from __future__ import annotations

import json
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from brainalign.probe.stimuli import StimulusSet
from brainalign.train.data import DataSource, decode_image, list_images, select_image
from brainalign.train.shards import write_image_shards

# one image per format, each a different flat colour (GIF is palette-based: colours survive)
FORMATS = {"a.gif": 10, "b.tif": 60, "c.webp": 110, "d.png": 160, "e.jpg": 210, "f.JPG": 240}


def image_folder(folder: Path) -> Path:
    folder.mkdir()
    for name, value in FORMATS.items():
        Image.fromarray(np.full((6, 5, 3), value, dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def shard_samples(folder: Path) -> dict[str, dict[str, bytes]]:
    """Samples of every shard in ``folder``, by key: {extension: bytes}."""
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                key, extension = member.name.split(".", 1)
                samples[key][extension] = archive.extractfile(member).read()
    return samples


def test_stimuli_training_folders_and_shards_take_the_same_images(tmp_path):
    folder = image_folder(tmp_path / "images")
    expected = sorted(FORMATS)

    stimuli = StimulusSet.from_folder(folder)
    assert sorted(path.name for path in stimuli.image_paths) == expected

    training = list_images(DataSource(path=str(folder), kind="folder"))
    assert sorted(Path(path).name for path in training) == expected

    write_image_shards(folder, tmp_path / "shards", max_count=4, progress=False)
    samples = shard_samples(tmp_path / "shards")
    by_path = {json.loads(sample["json"])["path"]: sample for sample in samples.values()}
    assert sorted(by_path) == expected
    # each shard sample decodes, as training reads it, to the pixels of its file
    for name, value in FORMATS.items():
        image = decode_image(select_image(by_path[name]))
        assert np.abs(np.asarray(image).astype(int) - value).max() <= 3, name
    assert set(by_path["a.gif"]) == {"gif", "json"}
    assert set(by_path["b.tif"]) == {"tif", "json"}
