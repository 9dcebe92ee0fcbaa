"""A crafted file never runs code: a payload test for every reader that could meet a pickle.

Each payload file (see ``tests/support/payloads.py``) creates a marker file when unpickled;
:func:`test_payload_files_run_when_loaded_unsafely` shows that they really do. Every other test
hands one to a public entry point and asserts that the marker is not created (and that the
refusal is a one-line error naming the file).

Readers covered elsewhere: Algonauts ``mapping_*.npy`` and arrays
(``tests/probe/test_datasets_algonauts.py``), the fMRI folder's ``.npy`` files
(``tests/probe/test_formats.py``), :mod:`brainalign.utils.npy` (``tests/utils/test_npy.py``).
Readers that cannot unpickle and need no payload test: CSV/JSON/Parquet tables (pandas,
pyarrow >= 14.0.1), MNE ``.fif`` (metadata stored as JSON), NIfTI/MGH (nibabel), ``.mat``
(scipy's loadmat builds MATLAB objects as plain records), safetensors.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from payloads import (
    BrainalignGlobalPayload,
    payload_pickle,
    unpickle_unsafely,
    write_npy_payload,
    write_torch_payload,
)

TINY_TIMM = "timm:vit_test_tiny_patch4_dinov3"


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "marker"


def tiny_gpt2_folder(folder: Path, marker: Path) -> Path:
    """A Hugging Face folder (config.json) whose pytorch_model.bin holds a payload."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=8, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    config.save_pretrained(folder)
    model = transformers.GPT2Model(config)
    write_torch_payload(folder / "pytorch_model.bin", marker, tensors=model.state_dict())
    return folder


@pytest.mark.parametrize("kind", ["zip", "legacy", "brainalign-global", "npy"])
def test_payload_files_run_when_loaded_unsafely(tmp_path, marker, kind):
    """The payloads are real: loaded the unsafe way, each one creates its marker."""
    if kind == "npy":
        path = write_npy_payload(tmp_path / "payload.npy", marker)
    else:
        payload = BrainalignGlobalPayload if kind == "brainalign-global" else None
        path = write_torch_payload(
            tmp_path / "payload.ckpt",
            marker,
            legacy=kind == "legacy",
            **({"payload": payload} if payload else {}),
        )
    unpickle_unsafely(path)
    assert marker.exists()


# ---------------------------------------------------------------------- model weights
@pytest.mark.parametrize("legacy", [False, True])
def test_probe_model_from_a_lightning_checkpoint_payload(tmp_path, marker, legacy):
    from brainalign.probe.models import load_probe_model

    path = write_torch_payload(tmp_path / "run.ckpt", marker, legacy=legacy)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_probe_model(path)
    assert not marker.exists()


def test_probe_model_checkpoint_calling_a_brainalign_function(tmp_path, marker):
    """``brainalign.*`` names are read as inert records: the function is never called."""
    from brainalign.probe.models import load_probe_model

    path = write_torch_payload(tmp_path / "run.ckpt", marker, payload=BrainalignGlobalPayload)
    with pytest.raises(ValueError):  # no backbone weights in it
        load_probe_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt"])
def test_timm_weights_file_payload(tmp_path, marker, suffix):
    from brainalign.probe.models import load_probe_model

    path = write_torch_payload(tmp_path / f"weights{suffix}", marker)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_probe_model(TINY_TIMM, weights=path)
    assert not marker.exists()


def test_weights_file_payload_for_an_nn_module(tmp_path, marker, tiny_backbone):
    from brainalign.probe.models import load_probe_model, read_weights_file

    path = write_torch_payload(tmp_path / "weights.pth", marker)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_weights_file(path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_probe_model(tiny_backbone, weights=path)
    assert not marker.exists()


def test_hugging_face_folder_with_a_pickled_pytorch_model_bin(tmp_path, marker):
    from brainalign.probe.models import load_probe_model

    folder = tiny_gpt2_folder(tmp_path / "hf", marker)
    with pytest.raises(ValueError, match=re.escape(str(folder / "pytorch_model.bin"))):
        load_probe_model(folder)
    assert not marker.exists()


def test_language_model_folder_with_a_pickled_pytorch_model_bin(tmp_path, marker):
    from brainalign.probe.language import load_language_model

    folder = tiny_gpt2_folder(tmp_path / "hf", marker)
    with pytest.raises(ValueError, match=re.escape(str(folder / "pytorch_model.bin"))):
        load_language_model(folder)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["zip", "legacy", "brainalign-global"])
def test_gradient_objective_from_a_checkpoint_payload(tmp_path, marker, kind):
    from brainalign.train.gradient_objective import DinoGradientObjective

    extra = {"payload": BrainalignGlobalPayload} if kind == "brainalign-global" else {}
    path = write_torch_payload(tmp_path / "run.ckpt", marker, legacy=kind == "legacy", **extra)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        DinoGradientObjective.from_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------------- data and caches
def test_feature_cache_entry_replaced_by_a_payload_is_a_miss(tmp_path, marker):
    from brainalign.probe.cache import FeatureCache, feature_key_parts

    cache = FeatureCache(tmp_path / "cache")
    parts = feature_key_parts(
        model_identity="m", preprocess={}, layer=0, pooling="mean", stimulus_hash="s"
    )
    cache.put(parts, np.zeros((3, 2), dtype=np.float32))
    write_npy_payload(cache.path(parts), marker)  # a shared cache folder someone wrote into
    with pytest.warns(UserWarning, match="unreadable feature cache entry"):
        assert cache.get(parts) is None
    assert not marker.exists()


def test_things_fmri_frame_with_a_pickled_block(tmp_path, marker):
    """pandas' HDF5 stores object columns as pickles; the h5py reader refuses them."""
    from brainalign.probe.datasets.things_fmri import read_pandas_fixed_frame

    path = tmp_path / "sub-01_ResponseData.h5"
    with h5py.File(path, "w") as handle:
        group = handle.create_group("ResponseData")
        group.attrs["pandas_type"] = np.bytes_("frame")
        group.attrs["nblocks"] = 1
        labels = np.array([b"voxel_id", b"trial1"])
        group.create_dataset("axis0", data=labels)
        group.create_dataset("axis1", data=np.arange(3))
        group.create_dataset("block0_items", data=labels)
        block = group.create_dataset("block0_values", (1,), dtype=h5py.vlen_dtype(np.uint8))
        block[0] = np.frombuffer(payload_pickle(marker), dtype=np.uint8)  # PyTables ObjectAtom
        block.attrs["transposed"] = 1
    with pytest.raises(
        ValueError, match=re.escape(str(path)) + r": .*block0_values .*never unpickles"
    ):
        read_pandas_fixed_frame(path, ["trial1"])
    assert not marker.exists()


@pytest.mark.slow
def test_fit_resuming_from_a_payload_checkpoint(tmp_path, marker):
    from runs import run_fit

    path = write_torch_payload(tmp_path / "evil.ckpt", marker)
    result = run_fit(tmp_path, "--ckpt_path", str(path), "--trainer.max_steps", "1", check=False)
    assert result.returncode != 0
    assert not marker.exists()


def test_torch_load_refuses_pickles_by_default(tmp_path, marker):
    """Lightning loads ``--ckpt_path`` with ``torch.load(weights_only=None)``: torch's default.

    That default refuses pickled objects since torch 2.6 (unless the environment variable
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set); this pins it.
    """
    import pickle

    path = write_torch_payload(tmp_path / "last.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location="cpu")
    assert not marker.exists()
