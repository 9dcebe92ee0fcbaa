"""The content-keyed feature cache, alone and inside extract_features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from brainalign.models import save_teacher_export
from brainalign.probe.cache import FeatureCache, feature_key_parts
from brainalign.probe.features import extract_features
from brainalign.probe.models import load_probe_model
from brainalign.probe.stimuli import StimulusSet


def _parts(**changes):
    parts = {
        "model_identity": "a" * 64,
        "preprocess": {"resolution": 32, "mean": [0.5, 0.5, 0.5]},
        "layer": 3,
        "pooling": "mean",
        "stimulus_hash": "b" * 64,
    }
    return feature_key_parts(**(parts | changes))


def _stimuli(n: int = 6, seed: int = 0) -> StimulusSet:
    images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return StimulusSet.from_array([f"s{i}" for i in range(n)], images)


class _ForwardCounter:
    """Counts forward passes of a DinoBackbone through its patch embedding."""

    def __init__(self, backbone) -> None:
        self.calls = 0
        backbone.vit.patch_embed.register_forward_hook(self._count)

    def _count(self, *args) -> None:
        self.calls += 1


# ---------------------------------------------------------------------------- the store
def test_put_then_get_round_trips_with_a_sidecar(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    array = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    assert cache.get(_parts()) is None
    path = cache.put(_parts(), array)
    assert path.parent.parent == tmp_path / "cache" and path.name == f"{path.stem}.npy"
    np.testing.assert_array_equal(cache.get(_parts()), array)
    assert _parts() in cache
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["parts"] == _parts()
    assert sidecar["shape"] == [7, 9] and sidecar["dtype"] == "float32"
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary files after atomic writes


@pytest.mark.parametrize(
    "change",
    [
        {"layer": 4},
        {"pooling": "cls"},
        {"stimulus_hash": "c" * 64},
        {"model_identity": "d" * 64},
        {"preprocess": {"resolution": 64, "mean": [0.5, 0.5, 0.5]}},
        {"feature_kind": "gradient"},
        {"precision": "bfloat16"},
    ],
)
def test_every_key_part_changes_the_key(change):
    assert FeatureCache.key(_parts(**change)) != FeatureCache.key(_parts())
    assert FeatureCache.key(dict(reversed(list(_parts().items())))) == FeatureCache.key(_parts())


def test_bad_keys_and_unreadable_entries(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(ValueError, match=r"lack \['pooling'\]"):
        cache.get({key: value for key, value in _parts().items() if key != "pooling"})
    with pytest.raises(ValueError, match="feature_kind must be one of"):
        _parts(feature_kind="saliency")
    path = cache.put(_parts(), np.zeros(3, dtype=np.float32))
    path.write_bytes(b"not an npy file")
    with pytest.warns(UserWarning, match="unreadable feature cache entry"):
        assert cache.get(_parts()) is None
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        FeatureCache(tmp_path / "file")


# ---------------------------------------------------------------------------- with extraction
def test_second_extraction_reads_the_cache_without_running_the_model(tiny_backbone, tmp_path):
    cache = FeatureCache(tmp_path)
    model = load_probe_model(tiny_backbone)
    counter = _ForwardCounter(tiny_backbone)
    stimuli = _stimuli()
    first = extract_features(
        model, stimuli, layers=[0, 3], batch_size=4, cache=cache, progress=False
    )
    assert counter.calls == 2  # 6 stimuli in batches of 4
    second = extract_features(
        model, stimuli, layers=[3, 0], batch_size=4, cache=cache, progress=False
    )
    assert counter.calls == 2
    for layer in (0, 3):
        np.testing.assert_array_equal(first[layer], second[layer])
    assert list(second) == [3, 0]
    assert len(list(tmp_path.rglob("*.npy"))) == 2


def test_other_pooling_layers_or_stimuli_are_recomputed(tiny_backbone, tmp_path):
    cache = FeatureCache(tmp_path)
    model = load_probe_model(tiny_backbone)
    counter = _ForwardCounter(tiny_backbone)
    stimuli = _stimuli()
    cached = extract_features(model, stimuli, layers=[1], cache=cache, progress=False)
    assert counter.calls == 1
    extract_features(model, stimuli, layers=[1], pooling="cls", cache=cache, progress=False)
    assert counter.calls == 2
    mixed = extract_features(model, stimuli, layers=[1, 2], cache=cache, progress=False)
    assert counter.calls == 3  # layer 2 was missing; layer 1 comes from the cache
    np.testing.assert_array_equal(mixed[1], cached[1])
    extract_features(model, _stimuli(seed=1), layers=[1], cache=cache, progress=False)
    assert counter.calls == 4
    assert len(list(tmp_path.rglob("*.npy"))) == 4


def test_cache_is_keyed_on_weights_not_on_objects(tiny_backbone, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    stimuli = _stimuli()
    extract_features(
        load_probe_model(tiny_backbone), stimuli, layers=[2], cache=cache, progress=False
    )
    export = load_probe_model(save_teacher_export(tiny_backbone, tmp_path / "export", {}))
    counter = _ForwardCounter(export.module)
    extract_features(export, stimuli, layers=[2], cache=cache, progress=False)
    assert counter.calls == 0  # same weights, same key
    with torch.no_grad():
        export.module.vit.blocks[0].attn.proj.weight.mul_(0.5)
    extract_features(export, stimuli, layers=[2], cache=cache, progress=False)
    assert counter.calls == 1  # updated weights, new key
