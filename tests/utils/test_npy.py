"""Safe .npy readers: plain arrays with allow_pickle=False, label mappings without running code."""

from __future__ import annotations

import io
import pickle
import re

import numpy as np
import pytest
from payloads import unpickle_unsafely, write_npy_header_then_pickle, write_npy_payload

from brainalign.utils.npy import load_array, load_label_mapping


def test_the_payload_files_run_when_loaded_unsafely(tmp_path):
    """The files the other tests feed the readers really do run code when unpickled."""
    writers = [
        lambda path, marker: write_npy_payload(path, marker),
        lambda path, marker: write_npy_payload(path, marker, inside_dict=True),
        write_npy_header_then_pickle,
    ]
    for index, write in enumerate(writers):
        marker = tmp_path / f"marker{index}"
        unpickle_unsafely(write(tmp_path / f"payload{index}.npy", marker))
        assert marker.exists()


def test_label_mapping_as_the_data_set_ships_it(tmp_path):
    path = tmp_path / "mapping_prf-visualrois.npy"
    np.save(path, {0: "Unknown", 1: "V1v", 2: "V1d", 7: "hV4"})  # a pickled dict, as released
    assert load_label_mapping(path) == {0: "Unknown", 1: "V1v", 2: "V1d", 7: "hV4"}
    # numpy integer keys and numpy strings (what a mapping built from arrays holds) also load
    np.save(path, {np.int64(3): np.str_("V2v"), np.uint8(4): "V2d"})
    mapping = load_label_mapping(path)
    assert mapping == {3: "V2v", 4: "V2d"}
    assert all(type(key) is int and type(value) is str for key, value in mapping.items())


def test_numpy_1x_files_are_accepted(tmp_path):
    """numpy 1.x (which wrote the challenge files) pickles with protocol 3 and numpy.core."""
    path = tmp_path / "mapping.npy"
    holder = np.empty((), dtype=object)
    holder[()] = {1: "V1v", 2: "V1d"}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|O", "fortran_order": False, "shape": ()}
    )
    text_globals = pickle.dumps(holder, protocol=3)  # GLOBAL opcodes name modules as text
    old_names = text_globals.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in old_names
    path.write_bytes(header.getvalue() + old_names)
    assert load_label_mapping(path) == {1: "V1v", 2: "V1d"}


@pytest.mark.parametrize("inside_dict", [False, True])
def test_label_mapping_payload_is_refused_before_it_runs(tmp_path, inside_dict):
    marker = tmp_path / "marker"
    path = write_npy_payload(tmp_path / "mapping_x.npy", marker, inside_dict=inside_dict)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*refused.*io\.open"):
        load_label_mapping(path)
    assert not marker.exists()


def test_label_mapping_with_a_bare_payload_after_a_valid_header(tmp_path):
    marker = tmp_path / "marker"
    path = write_npy_header_then_pickle(tmp_path / "mapping.npy", marker)
    with pytest.raises(ValueError, match="refused"):
        load_label_mapping(path)
    assert not marker.exists()


def test_label_mapping_refuses_other_content_naming_the_file(tmp_path):
    path = tmp_path / "mapping.npy"
    cases = {
        "list": (np.array([1, 2, 3]), r"shape \(3,\), dtype int64"),
        "list of str": (np.array(["a", "b"]), r"shape \(2,\)"),
        "wrong keys": ({"1": "V1v"}, r"integer label values.*'1': 'V1v'"),
        "wrong values": ({1: 2.5}, r"integer label values.*1: 2\.5"),
        "bool keys": ({True: "x"}, r"integer label values"),
        "not a dict": (["V1v", "V1d"], r"should hold a dict .* list"),
    }
    for content, expected in cases.values():
        if isinstance(content, np.ndarray):
            np.save(path, content)
        else:
            holder = np.empty((), dtype=object)
            holder[()] = content
            np.save(path, holder, allow_pickle=True)
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + expected):
            load_label_mapping(path)


def test_label_mapping_damaged_or_not_npy(tmp_path):
    path = tmp_path / "mapping.npy"
    np.save(path, {1: "V1v", 2: "V1d"})
    path.write_bytes(path.read_bytes()[:-20])  # truncated pickle
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": cannot read a pickled label"):
        load_label_mapping(path)
    path.write_bytes(pickle.dumps({1: "V1v"}))  # a plain pickle, not a .npy file
    with pytest.raises(ValueError, match="does not start with a .npy header"):
        load_label_mapping(path)
    with pytest.raises(FileNotFoundError):
        load_label_mapping(tmp_path / "absent.npy")


def test_load_array_reads_numbers_and_memory_maps(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", values)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy"), values)
    mapped = load_array(tmp_path / "a.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped[1], values[1])


def test_load_array_refuses_object_arrays_without_inviting_allow_pickle(tmp_path):
    marker = tmp_path / "marker"
    for index, path in enumerate(
        [
            write_npy_payload(tmp_path / "responses.npy", marker),
            write_npy_header_then_pickle(tmp_path / "raw.npy", marker),
        ]
    ):
        with pytest.raises(ValueError, match=re.escape(str(path)) + ": holds Python objects") as e:
            load_array(path)
        assert "allow_pickle" not in str(e.value), index
        assert "never unpickles" in str(e.value)
    path = tmp_path / "pickle.npy"
    path.write_bytes(pickle.dumps(np.zeros(3)))  # np.load would try to unpickle it
    with pytest.raises(ValueError, match="not a NumPy .npy file"):
        load_array(path)
    assert not marker.exists()
