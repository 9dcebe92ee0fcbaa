"""The metric options of ProbeConfig, and bad input caught before any model runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import (
    FeatureConfig,
    ProbeConfig,
    RSAConfig,
    VariancePartitioningConfig,
)
from brainalign.probe.formats import write_fmri_folder
from brainalign.probe.run import load_targets


def test_defaults_keep_the_probe_as_it_was():
    config = ProbeConfig()
    assert config.metrics == ["encoding"]
    assert not config.variance_partitioning.enabled
    assert config.repeats_needed == {}
    assert ProbeConfig(metrics=["rsa", "encoding", "rsa"]).metrics == ["rsa", "encoding"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metrics": []}, "metrics is empty"),
        ({"metrics": ["encoding", "rdm"]}, r"unknown metrics \['rdm'\]"),
        (
            {"variance_partitioning": VariancePartitioningConfig(spaces="kinds")},
            "features.kinds lacks \\['gradient'\\]",
        ),
    ],
)
def test_bad_metric_options_are_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        ProbeConfig(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"spaces": "layers"}, "two different relative depths"),
        ({"spaces": "layers", "layers": [0.5, 0.5]}, "two different relative depths"),
        ({"spaces": "low_level", "layers": [1.5]}, r"relative depths in \[0, 1\]"),
        ({"spaces": "everything"}, "variance_partitioning.spaces must be one of"),
        ({"spaces": "kinds", "inner_folds": 1}, "inner_folds must be an integer >= 2"),
    ],
)
def test_bad_partition_options_are_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        VariancePartitioningConfig(**options)


def test_rsa_options():
    assert RSAConfig().layer_distance == "correlation"
    assert RSAConfig(distance="crossnobis").layer_distance == "euclidean"  # no model repeats
    assert RSAConfig(distance="crossnobis", model_distance="correlation").layer_distance == (
        "correlation"
    )
    with pytest.raises(ValueError, match="rsa.comparison must be one of"):
        RSAConfig(comparison="kendall")
    with pytest.raises(ValueError, match="rsa.model_distance must be one of"):
        RSAConfig(model_distance="crossnobis")


def test_what_needs_repeats_is_listed():
    config = ProbeConfig(metrics=["cka_cv", "rsa"], rsa=RSAConfig(distance="crossnobis"))
    assert set(config.repeats_needed) == {"metrics: cka_cv", "rsa.distance: crossnobis"}
    kinds = FeatureConfig(kinds=["activation", "gradient"])
    partition = VariancePartitioningConfig(spaces="kinds")
    assert ProbeConfig(features=kinds, variance_partitioning=partition).repeats_needed == {}


@pytest.fixture
def folder_without_repeats(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"s{index}" for index in range(20)]
    brain = BrainData(
        modality="fmri",
        subject="no_repeats",
        data=rng.normal(size=(20, 6)),
        stimulus_ids=ids,
        targets=pd.DataFrame({"roi": ["V1"] * 3 + ["V2"] * 3, "x": 0.0, "y": 0.0, "z": 0.0}),
    )
    folder = write_fmri_folder(tmp_path / "fmri", brain, pd.DataFrame({"stimulus_id": ids}))
    (folder / "images").mkdir()
    from PIL import Image

    for stimulus_id in ids:
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            folder / "images" / f"{stimulus_id}.png"
        )
    return folder


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"metrics": ["encoding", "cka_cv"]}, "metrics: cka_cv"),
        ({"metrics": ["rsa"], "rsa": RSAConfig(distance="crossnobis")}, "rsa.distance: crossnobis"),
    ],
)
def test_a_metric_needing_repeats_on_data_without_them_fails_at_load(
    folder_without_repeats, options, named
):
    config = ProbeConfig(brain=[str(folder_without_repeats)], cache_dir=None, **options)
    with pytest.raises(ValueError, match=f"{folder_without_repeats}: {named} needs single repeats"):
        load_targets(config)
    assert load_targets(ProbeConfig(brain=[str(folder_without_repeats)], metrics=["rsa", "cka"]))


def test_two_partition_depths_on_one_probed_layer_fail_before_extraction():
    from brainalign.probe.metrics.per_group import check_partition_layers

    partition = VariancePartitioningConfig(spaces="layers", layers=[0.0, 0.2])
    config = ProbeConfig(variance_partitioning=partition)
    with pytest.raises(ValueError, match=r"pick the same probed layer \[0\]"):
        check_partition_layers(config, {0: 0.0, 5: 0.5, 11: 1.0})
    check_partition_layers(config, {0: 0.0, 2: 0.2, 11: 1.0})  # two layers: fine
