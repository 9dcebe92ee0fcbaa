"""Variance partitioning through the probe core: planted shares recovered, rows, shares, modes.

Two planted feature spaces go into ``fit_targets`` as the activations and the gradients of the
same layers (``variance_partitioning.spaces: kinds``): A = [a_only, common], B = [b_only, common],
with 0.2 of each target's variance from a_only, 0.1 from b_only, 0.3 from common and 0.4 noise.
The components are orthogonal over the stimuli, so the planted shares are exact in the sample;
what remains is estimation (held-out R2 loses about p / n_train of the unexplained variance):
the tolerance is 0.05 on the mean over an ROI's targets, as in the library's own test.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import (
    EncodingConfig,
    FeatureConfig,
    ProbeConfig,
    VariancePartitioningConfig,
)
from brainalign.probe.run import ProbeTarget, StimulusGroup, fit_targets, summarise
from brainalign.probe.stimuli import StimulusSet

TOLERANCE = 0.05
N_STIMULI, N_PER_ROI = 600, 10


def orthogonal(rng, widths):
    total = rng.normal(size=(N_STIMULI, sum(widths)))
    basis, _ = np.linalg.qr(total - total.mean(0))
    return np.split(basis * np.sqrt(N_STIMULI), np.cumsum(widths)[:-1], axis=1)


def share(rng, components, variance, n_targets):
    signal = components @ rng.normal(size=(components.shape[1], n_targets))
    return np.sqrt(variance) * (signal - signal.mean(0)) / signal.std(0)


@pytest.fixture(scope="module")
def planted():
    """ROI "AB" holds the planted mixture; ROI "A" only a_only (0.6) and noise."""
    rng = np.random.default_rng(0)
    a_only, b_only, common, noise = orthogonal(rng, (8, 8, 6, 40))
    mixed = (
        share(rng, a_only, 0.2, N_PER_ROI)
        + share(rng, b_only, 0.1, N_PER_ROI)
        + share(rng, common, 0.3, N_PER_ROI)
        + share(rng, noise, 0.4, N_PER_ROI)
    )
    only_a = share(rng, a_only, 0.6, N_PER_ROI) + share(rng, noise, 0.4, N_PER_ROI)
    ids = [f"s{index:03d}" for index in range(N_STIMULI)]
    brain = BrainData(
        modality="fmri",
        subject="planted",
        data=np.hstack([mixed, only_a]),
        stimulus_ids=ids,
        targets=pd.DataFrame({"roi": ["AB"] * N_PER_ROI + ["A"] * N_PER_ROI}),
    )
    images = rng.integers(0, 255, (N_STIMULI, 16, 16, 3), dtype=np.uint8)
    target = ProbeTarget(spec="planted", brain=brain, stimuli=StimulusSet.from_array(ids, images))
    spaces = {
        "activation": 3.0 * np.hstack([a_only, common]),
        "gradient": 0.2 * np.hstack([b_only, common]),  # scales the penalties must absorb
    }
    return target, spaces


def config_for(spaces="kinds", layers=None, metrics=("encoding",)):
    return ProbeConfig(
        brain=["planted"],
        metrics=list(metrics),
        features=FeatureConfig(kinds=["activation", "gradient"]),
        encoding=EncodingConfig(backend="numpy", n_folds=5),
        variance_partitioning=VariancePartitioningConfig(spaces=spaces, layers=layers),
        cache_dir=None,
    )


def run_core(target, features, config, share=(0, 1)):
    group = StimulusGroup(stimuli=target.stimuli, rows={0: np.arange(N_STIMULI)})
    return fit_targets([target], [group], [features], config, share=share)


def kinds_run(planted, config):
    """The probe run of the planted spaces as the activations and gradients of one layer."""
    target, spaces = planted
    features = {kind: {0: array.astype(np.float32)} for kind, array in spaces.items()}
    fits = run_core(target, features, config)
    return summarise([target], fits, {0: 1.0}, config, model_name="planted", architecture="-")


@pytest.mark.slow
def test_kinds_partition_recovers_the_planted_unique_and_shared_shares(planted):
    run = kinds_run(planted, config_for())
    table = run.table
    rows = table[table["feature_kind"] == "activation+gradient"]
    value = rows.set_index(["metric", "space", "group"])["value"]
    assert value["unique_variance", "activation", "AB"] == pytest.approx(0.2, abs=TOLERANCE)
    assert value["unique_variance", "gradient", "AB"] == pytest.approx(0.1, abs=TOLERANCE)
    assert value["shared_variance", "activation+gradient", "AB"] == pytest.approx(
        0.3, abs=TOLERANCE
    )
    assert value["unique_variance", "activation", "A"] == pytest.approx(0.6, abs=TOLERANCE)
    assert abs(value["unique_variance", "gradient", "A"]) < TOLERANCE
    assert abs(value["shared_variance", "activation+gradient", "A"]) < TOLERANCE
    assert value["r2_joint", "activation+gradient", "AB"] == pytest.approx(0.6, abs=0.1)
    assert value["r2_single", "gradient", "AB"] == pytest.approx(0.4, abs=0.1)
    # the regions add up to the joint model; "all" is the mean over every target
    for group in ("AB", "A", "all"):
        total = sum(
            value[name, space, group]
            for name, space in (
                ("unique_variance", "activation"),
                ("unique_variance", "gradient"),
                ("shared_variance", "activation+gradient"),
            )
        )
        assert total == pytest.approx(value["r2_joint", "activation+gradient", group])
    assert value["unique_variance", "activation", "all"] == pytest.approx(
        (value["unique_variance", "activation", "AB"] + value["unique_variance", "activation", "A"])
        / 2
    )
    assert set(rows["layer"]) == {0} and "space" in table.columns
    assert table.loc[table["metric"] == "r", "space"].isna().all()
    entry = run.summary["results"][0]["variance_partitioning"][0]
    assert entry["spaces"] == ["activation", "gradient"] and entry["layer"] == 0


@pytest.mark.slow
def test_layer_pairs_are_partitioned_once_whatever_the_share(planted):
    """Two layers (``spaces: layers``): the first DDP share partitions them, the others don't."""
    target, spaces = planted
    features = {
        "activation": {0: spaces["activation"], 1: spaces["gradient"], 2: spaces["activation"]}
    }
    config = ProbeConfig(
        brain=["planted"],
        metrics=["cka"],
        encoding=EncodingConfig(backend="numpy", n_folds=5),
        variance_partitioning=VariancePartitioningConfig(
            spaces="layers", layers=[0.0, 0.5], n_iter=10
        ),
        cache_dir=None,
    )
    whole = run_core(target, features, config)
    first, second = (
        run_core(target, features, config, (0, 2)),
        run_core(target, features, config, (1, 2)),
    )
    partitions = [p for fit in whole[(0, "activation")] for p in fit.partitions]
    assert len(partitions) == 1 and partitions[0].spaces == ("layer_0", "layer_1")
    assert partitions[0].layer == -1
    shared = [p for fit in first[(0, "activation")] for p in fit.partitions]
    assert [p for fit in second[(0, "activation")] for p in fit.partitions] == []
    np.testing.assert_allclose(shared[0].regions, partitions[0].regions)
    unique = dict(zip(partitions[0].subsets, partitions[0].regions[:, 1]))  # ROI "AB"
    assert unique[("layer_0",)] == pytest.approx(0.2, abs=TOLERANCE)
    # the union of the shares holds every layer's other metrics, equal to one share's
    merged = {fit.layer: fit for part in (first, second) for fit in part[(0, "activation")]}
    for fit in whole[(0, "activation")]:
        np.testing.assert_allclose(merged[fit.layer].metrics["cka"].group, fit.metrics["cka"].group)


@pytest.mark.slow
def test_low_level_partition_runs_on_the_stimulus_images(planted):
    target, spaces = planted
    features = {"activation": {0: spaces["activation"]}}
    config = ProbeConfig(
        brain=["planted"],
        encoding=EncodingConfig(backend="numpy", n_folds=5),
        variance_partitioning=VariancePartitioningConfig(
            spaces="low_level", n_iter=5, low_level_size=16
        ),
        cache_dir=None,
    )
    fits = run_core(target, features, config)
    run = summarise([target], fits, {0: 1.0}, config, model_name="planted", architecture="-")
    rows = run.table[run.table["metric"] == "unique_variance"].set_index(["space", "group"])
    # random pixels carry none of the planted signal: the model keeps all its variance
    assert rows.loc[("activation", "A"), "value"] == pytest.approx(0.6, abs=TOLERANCE)
    assert abs(rows.loc[("low_level", "AB"), "value"]) < TOLERANCE


def test_a_share_without_layers_fits_nothing(planted):
    """More DDP ranks than layers: the empty shares return empty fits, no error."""
    target, spaces = planted
    features = {kind: {0: array} for kind, array in spaces.items()}
    fits = run_core(target, features, config_for(metrics=("cka",)), share=(1, 2))
    assert fits == {(0, "activation"): [], (0, "gradient"): []}


@pytest.mark.slow
def test_unique_and_shared_variance_are_followed_in_the_chronology_and_tensorboard(planted):
    from brainalign.callbacks.brain_logging import scalar_values
    from brainalign.probe.chronology import curves, half_times
    from brainalign.probe.report import chronology_curves

    run = kinds_run(planted, config_for())
    early = run.table.assign(value=run.table["value"] / 4, step=10, train_fraction=0.1)
    late = run.table.assign(step=100, train_fraction=1.0)
    table = pd.concat([early, late], ignore_index=True).assign(status="ok")
    curve_table = curves(table)
    partitioned = curve_table[curve_table["feature_kind"] == "activation+gradient"]
    by_curve = partitioned.set_index(["curve", "step"])["value"]
    value = run.table.set_index(["metric", "space", "group"])["value"]
    expected = {
        "unique_variance/activation/layer_0": value["unique_variance", "activation", "all"],
        "unique_variance/gradient/layer_0/roi/AB": value["unique_variance", "gradient", "AB"],
        "shared_variance/activation+gradient/layer_0/roi/A": value[
            "shared_variance", "activation+gradient", "A"
        ],
    }
    for curve, final in expected.items():
        assert by_curve[curve, 100] == pytest.approx(final)
        assert by_curve[curve, 10] == pytest.approx(final / 4)
    assert not partitioned["curve"].str.startswith("r2_").any()  # fits, not shares
    times = half_times(curve_table)
    row = times[times["curve"] == "unique_variance/activation/layer_0"].iloc[0]
    assert 0.1 < row["half_time"] < 1.0  # a quarter at 0.1, all at 1.0: half in between
    tags = scalar_values("brain", run.scores[0], [])
    unique = value["unique_variance", "activation", "AB"]
    assert tags["brain/planted/fmri/unique_variance/activation/layer_0/roi/AB"] == pytest.approx(
        unique
    )
    figure = chronology_curves(curve_table)
    assert "variance partitioning" in [axis.get_title() for axis in figure.axes]


@pytest.mark.slow
def test_partition_rows_get_intervals_and_their_curves_keep_their_resamples(planted):
    from brainalign.probe.config import BootstrapConfig

    run = kinds_run(planted, replace(config_for(), bootstrap=BootstrapConfig(n_resamples=40)))
    rows = run.table[run.table["feature_kind"] == "activation+gradient"]
    assert len(rows) == 18  # (2 single R2 + joint R2 + 3 regions) x (all, AB, A)
    assert rows[["ci_low", "ci_high"]].notna().all().all()
    inside = (rows["ci_low"] <= rows["value"] + 1e-9) & (rows["value"] <= rows["ci_high"] + 1e-9)
    assert inside.all() and (rows["ci_high"] > rows["ci_low"]).all()
    by_row = rows.set_index(["metric", "space", "group"])
    unique = by_row.loc[("unique_variance", "activation", "AB")]
    assert unique["ci_high"] - unique["ci_low"] < 0.1  # 600 stimuli: a narrow interval
    curves = run.replicates[run.replicates["feature_kind"] == "activation+gradient"]
    assert set(curves["curve"]) == {
        f"{region}/layer_0{group}"
        for region in (
            "unique_variance/activation",
            "unique_variance/gradient",
            "shared_variance/activation+gradient",
        )
        for group in ("", "/roi/AB", "/roi/A")
    }
    assert curves.groupby("curve").size().eq(40).all()
    resampled = curves[curves["curve"] == "unique_variance/activation/layer_0/roi/AB"]["value"]
    assert resampled.quantile(0.025) == pytest.approx(unique["ci_low"], abs=0.01)
    encoding = run.table[(run.table["metric"] == "r") & (run.table["feature_kind"] == "activation")]
    assert encoding[["ci_low", "ci_high"]].notna().all().all()  # the encoding keeps its own
