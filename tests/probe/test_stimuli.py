"""StimulusSet: sources (files, HDF5, arrays), loading, subsets, content hash, errors."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brainalign.probe.stimuli import StimulusSet, resolve_image_path

# 7 images of height 5 and width 6: unequal sizes so a transposed axis fails.
N_IMAGES, HEIGHT, WIDTH = 7, 5, 6


@pytest.fixture
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (N_IMAGES, HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture
def ids() -> list[str]:
    return [f"s{i}" for i in range(N_IMAGES)]


@pytest.fixture
def image_folder(tmp_path, images, ids):
    folder = tmp_path / "images"
    folder.mkdir()
    for stimulus_id, image in zip(ids, images):
        Image.fromarray(image).save(folder / f"{stimulus_id}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_from_array_loads_exact_pixels_in_requested_order(images, ids):
    stimuli = StimulusSet.from_array(ids, images)
    assert len(stimuli) == N_IMAGES
    loaded = stimuli.load([3, 0])
    assert [image.size for image in loaded] == [(WIDTH, HEIGHT)] * 2  # PIL size is (W, H)
    np.testing.assert_array_equal(np.asarray(loaded[0]), images[3])
    np.testing.assert_array_equal(np.asarray(loaded[1]), images[0])
    array = stimuli.load_array([6, 2])
    assert array.shape == (2, HEIGHT, WIDTH, 3) and array.dtype == np.uint8
    np.testing.assert_array_equal(array, images[[6, 2]])
    np.testing.assert_array_equal(stimuli.load_array(), images)


def test_from_array_rejects_wrong_dtype_shape_and_count(images, ids):
    with pytest.raises(ValueError, match="uint8"):
        StimulusSet.from_array(ids, images.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        StimulusSet.from_array(ids, images[..., 0])
    with pytest.raises(ValueError, match="7 stimulus ids but 6 images"):
        StimulusSet.from_array(ids, images[:6])


def test_duplicate_ids_are_rejected(images):
    with pytest.raises(ValueError, match="duplicate stimulus ids: 'a'"):
        StimulusSet.from_array(["a", "b", "a", "c", "d", "e", "f"], images)


def test_subset_follows_given_order_and_reports_unknown_ids(images, ids):
    stimuli = StimulusSet.from_array(ids, images)
    subset = stimuli.subset(["s5", "s1"])
    assert subset.ids == ["s5", "s1"]
    np.testing.assert_array_equal(subset.load_array(), images[[5, 1]])
    with pytest.raises(KeyError, match=r"'x12', 'x40' \(2 of 3\)"):
        stimuli.subset(["s1", "x12", "x40"])


def test_from_folder_reads_images_sorted_by_name_and_skips_other_files(image_folder, images, ids):
    stimuli = StimulusSet.from_folder(image_folder)
    assert stimuli.ids == ids
    np.testing.assert_array_equal(stimuli.load_array(), images)  # PNG is lossless
    chosen = StimulusSet.from_folder(image_folder, ids=["s4", "s2"])
    assert chosen.ids == ["s4", "s2"]
    np.testing.assert_array_equal(np.asarray(chosen.load([0])[0]), images[4])
    assert chosen.image_paths == [image_folder / "s4.png", image_folder / "s2.png"]


def test_from_folder_missing_ids_named_up_to_five_with_count(image_folder):
    wanted = ["s0", "m1", "m2", "m3", "m4", "m5", "m6"]
    with pytest.raises(FileNotFoundError) as error:
        StimulusSet.from_folder(image_folder, ids=wanted)
    message = str(error.value)
    assert "'m1', 'm2', 'm3', 'm4', 'm5', ..." in message
    assert "(6 of 7)" in message
    assert "'m6'" not in message


def test_from_table_resolves_paths_relative_to_the_csv(tmp_path, image_folder, images):
    table = pd.DataFrame(
        {"stimulus_id": ["b", "a"], "image_path": ["images/s3.png", "images/s1.png"]}
    )
    table.to_csv(tmp_path / "stimuli.csv", index=False)
    stimuli = StimulusSet.from_table(tmp_path / "stimuli.csv")
    assert stimuli.ids == ["b", "a"]
    np.testing.assert_array_equal(stimuli.load_array(), images[[3, 1]])


def test_from_table_errors_name_the_problem(tmp_path, image_folder):
    pd.DataFrame({"stimulus_id": ["a"], "path": ["images/s0.png"]}).to_csv(
        tmp_path / "bad.csv", index=False
    )
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['image_path'\]"):
        StimulusSet.from_table(tmp_path / "bad.csv")
    pd.DataFrame(
        {"stimulus_id": ["a", "zz"], "image_path": ["images/s0.png", "images/zz.png"]}
    ).to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(FileNotFoundError, match=r"'zz' \(1 of 2\).*zz.png"):
        StimulusSet.from_table(tmp_path / "missing.csv")
    with pytest.raises(FileNotFoundError, match="stimulus table not found"):
        StimulusSet.from_table(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("../outside.png", "leaves the table's folder"),
        ("images/../../outside.png", "leaves the table's folder"),
        ("..", "leaves the table's folder"),
        ("/etc/passwd", "is an absolute path"),
        ("", "is empty"),
        (float("nan"), "is empty"),
        (".", "names the folder itself"),
    ],
)
def test_image_paths_must_stay_inside_the_table_folder(tmp_path, value, problem):
    with pytest.raises(ValueError) as error:
        resolve_image_path(tmp_path, value, where="stimuli.csv, row 3 (stimulus 'x2')")
    message = str(error.value)
    assert message.startswith("stimuli.csv, row 3 (stimulus 'x2'): image_path ")
    assert problem in message and "\n" not in message
    assert f"relative to {tmp_path} that stays inside it" in message  # what is accepted


def test_image_paths_inside_the_folder_are_normalised_and_links_followed(tmp_path, images):
    assert resolve_image_path(tmp_path, "images/s1.png", where="t") == tmp_path / "images/s1.png"
    assert resolve_image_path(tmp_path, "a/../b/./c.png", where="t") == tmp_path / "b/c.png"
    store = tmp_path / "store"  # images on another disk, linked into the data set's folder
    store.mkdir()
    Image.fromarray(images[2]).save(store / "s2.png")
    data_set = tmp_path / "data_set"
    data_set.mkdir()
    (data_set / "images").symlink_to(store, target_is_directory=True)
    pd.DataFrame({"stimulus_id": ["a"], "image_path": ["images/s2.png"]}).to_csv(
        data_set / "stimuli.csv", index=False
    )
    np.testing.assert_array_equal(
        StimulusSet.from_table(data_set / "stimuli.csv").load_array()[0], images[2]
    )


def test_from_table_refuses_paths_out_of_its_folder_naming_the_row(tmp_path, image_folder):
    """An existing file outside the table's folder is refused, not read."""
    table_folder = tmp_path / "table"
    table_folder.mkdir()
    for values, expected in (
        (["../images/s0.png", "../images/s1.png"], r"row 1 \(stimulus 'a'\).*'\.\./images/s0"),
        (["s.png", str(image_folder / "s1.png")], r"row 2 \(stimulus 'b'\).*absolute path"),
    ):
        pd.DataFrame({"stimulus_id": ["a", "b"], "image_path": values}).to_csv(
            table_folder / "stimuli.csv", index=False
        )
        with pytest.raises(ValueError, match=r"stimuli\.csv, " + expected):
            StimulusSet.from_table(table_folder / "stimuli.csv")


def test_hdf5_rows_are_read_on_demand_in_the_requested_order(tmp_path, images):
    path = tmp_path / "brick.hdf5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("imgBrick", data=images)
    stimuli = StimulusSet.from_hdf5(["a", "b", "c"], path, "imgBrick", rows=[4, 1, 4])
    np.testing.assert_array_equal(stimuli.load_array(), images[[4, 1, 4]])
    np.testing.assert_array_equal(np.asarray(stimuli.load([1])[0]), images[1])
    # the set holds no pixels: a change in the file shows up at the next load
    with h5py.File(path, "r+") as handle:
        handle["imgBrick"][1] = 0
    assert stimuli.load_array([1]).max() == 0


def test_hdf5_errors(tmp_path, images):
    path = tmp_path / "brick.hdf5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("imgBrick", data=images)
    with pytest.raises(KeyError, match=r"no dataset 'pixels'.*imgBrick"):
        StimulusSet.from_hdf5(["a"], path, "pixels", rows=[0])
    with pytest.raises(IndexError, match=r"\[0, 7\)"):
        StimulusSet.from_hdf5(["a"], path, "imgBrick", rows=[7])


def test_content_hash_depends_on_ids_order_and_pixels_and_is_cached(images, ids):
    first = StimulusSet.from_array(ids, images)
    same = StimulusSet.from_array(list(ids), images.copy())
    assert first.content_hash == same.content_hash
    assert len(first.content_hash) == 64
    renamed = StimulusSet.from_array(["t0", *ids[1:]], images)
    assert renamed.content_hash != first.content_hash
    reordered = StimulusSet.from_array(ids[::-1], images[::-1])
    assert reordered.content_hash != first.content_hash
    changed = images.copy()
    changed[3, 2, 1, 0] ^= 1
    assert StimulusSet.from_array(ids, changed).content_hash != first.content_hash
    # cached: replacing the source afterwards does not change the stored hash
    cached = first.content_hash
    first._source = StimulusSet.from_array(ids, changed)._source
    assert first.content_hash == cached


def test_content_hash_of_files_follows_file_bytes(image_folder, ids):
    before = StimulusSet.from_folder(image_folder).content_hash
    assert StimulusSet.from_folder(image_folder).content_hash == before
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(image_folder / "s2.png")
    assert StimulusSet.from_folder(image_folder).content_hash != before


def test_load_array_refuses_images_of_different_sizes(tmp_path, image_folder):
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(image_folder / "s9.png")
    stimuli = StimulusSet.from_folder(image_folder)
    assert len(stimuli.load()) == N_IMAGES + 1
    with pytest.raises(ValueError, match="differ in size"):
        stimuli.load_array()


def test_grey_images_are_loaded_as_rgb(tmp_path):
    Image.fromarray(np.full((5, 6), 200, np.uint8)).save(tmp_path / "g.png")
    array = StimulusSet.from_folder(tmp_path).load_array()
    assert array.shape == (1, 5, 6, 3)
    assert (array == 200).all()


def test_data_set_image_lookup_refuses_paths_out_of_the_image_folder(tmp_path, image_folder):
    """THINGS-MEG's events tables name images relative to the image folder given in the spec."""
    from brainalign.probe.datasets._common import find_images

    found = find_images(["s1", "s2"], image_folder, ["s1.png", "elsewhere/s2.png"])
    assert found.image_paths == [image_folder / "s1.png", image_folder / "s2.png"]  # by stem
    (tmp_path / "secret.png").write_bytes((image_folder / "s0.png").read_bytes())
    with pytest.raises(ValueError, match=r"image_path of stimulus 's0': image_path '\.\./secret"):
        find_images(["s0"], image_folder, ["../secret.png"])
