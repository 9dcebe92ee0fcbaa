"""RSA, CKA and noise ceilings through the probe core (load_targets -> fit_targets -> summarise).

Known answers on the simulated subject: with the oracle layers (layer k = planted level k) every
metric's best layer of each ROI is its planted level, so its spatial score is positive, its MEG
time courses peak in the planted order (temporal score positive), and reversing the layers
flips both signs. The table's values equal the numeric library's on the same sets; adding
metrics leaves the encoding rows unchanged; the split-half ceiling recovers the planted
reliability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainalign.callbacks.brain_logging import scalar_values
from brainalign.probe.chronology import curves
from brainalign.probe.config import EncodingConfig, ProbeConfig, RSAConfig
from brainalign.probe.metrics import linear_cka, representational_similarity
from brainalign.probe.run import fit_targets, load_targets, stimulus_groups, summarise
from brainalign.probe.simulate import oracle_features, simulate_subject

ENCODING = EncodingConfig(backend="numpy", n_folds=5)
DEPTHS = {index: index / 3 for index in range(4)}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    subject = simulate_subject(
        tmp_path_factory.mktemp("sim") / "sim", n_stimuli=160, image_size=32, seed=2
    )
    latents = pd.read_csv(subject.stimuli_csv, dtype={"stimulus_id": str}).set_index("stimulus_id")
    return subject, latents


def oracle(groups, latents, *, reverse=False):
    """The oracle layers of every stimulus group, rows in the group's order."""
    features = []
    for group in groups:
        images = group.stimuli.load_array()
        levels = oracle_features(images, latents.loc[group.stimuli.ids].reset_index())
        levels = list(reversed(levels)) if reverse else levels
        features.append({"activation": dict(enumerate(levels))})
    return features


def probe(simulated, metrics, *, reverse=False, **options):
    subject, latents = simulated
    config = ProbeConfig(
        brain=[str(subject.fmri_dir), str(subject.meg_path)],
        metrics=metrics,
        encoding=ENCODING,
        cache_dir=None,
        **options,
    )
    targets = load_targets(config)
    groups = stimulus_groups(targets)
    fits = fit_targets(targets, groups, oracle(groups, latents, reverse=reverse), config)
    run = summarise(targets, fits, DEPTHS, config, model_name="oracle", architecture="oracle")
    return run, targets, groups


def entry(run, modality):
    return next(item for item in run.summary["results"] if item["modality"] == modality)


@pytest.fixture(scope="module")
def forward(simulated):
    return probe(simulated, ["rsa", "cka", "cka_cv"])


@pytest.fixture(scope="module")
def backward(simulated):
    return probe(simulated, ["rsa", "cka", "cka_cv"], reverse=True)


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["rsa", "cka", "cka_cv"])
def test_every_metric_recovers_the_planted_hierarchy_and_reversal_flips_it(
    simulated, forward, backward, metric
):
    subject, _ = simulated
    truth = subject.truth()["rois"]
    for run, sign in ((forward[0], 1.0), (backward[0], -1.0)):
        fmri = entry(run, "fmri")["metrics"][metric]
        for roi, depth in fmri["roi_best_depth"].items():
            planted = truth[roi]["level"] / 3
            assert depth == pytest.approx(planted if sign > 0 else 1 - planted), roi
        assert sign * fmri["spatial_score"] > 0.8
        meg = entry(run, "meg")["metrics"][metric]
        assert sign * meg["temporal_score"] > 0.8
        table = run.table
        for name, value in (
            (f"spatial_score_{metric}", fmri["spatial_score"]),
            (f"temporal_score_{metric}", meg["temporal_score"]),
        ):
            rows = table[(table["metric"] == name) & (table["layer"] == -1)]
            assert len(rows) == 1 and rows["value"].iloc[0] == pytest.approx(value)
    # without encoding there are no encoding rows at all, and no encoding summary
    assert not set(forward[0].table["metric"]) & {"r", "encoding_score", "spatial_score"}
    assert "encoding_score" not in entry(forward[0], "fmri")


@pytest.mark.slow
def test_table_values_equal_the_library_on_the_same_sets(forward, simulated):
    run, targets, groups = forward
    index = next(i for i, target in enumerate(targets) if target.brain.modality == "fmri")
    fmri = targets[index].brain
    group = next(group for group in groups if index in group.rows)
    by_layer = oracle([group], simulated[1])[0]["activation"]
    layers = [by_layer[layer][group.rows[index]] for layer in sorted(by_layer)]
    rois = list(dict.fromkeys(fmri.targets["roi"]))
    sets = [fmri.data[:, (fmri.targets["roi"] == roi).to_numpy()] for roi in rois]
    expected = {
        "rsa": representational_similarity(layers, sets),
        "cka": linear_cka(layers, sets),
    }
    table = run.table
    for metric, values in expected.items():
        got = table[(table["metric"] == metric) & (table["modality"] == "fmri")]
        got = got.pivot_table(index="layer", columns="group", values="value")[rois]
        np.testing.assert_allclose(got.to_numpy(), values, rtol=1e-6, atol=1e-9)
    everything = representational_similarity(layers, [fmri.data])[:, 0]
    whole = table[(table["metric"] == "rsa") & (table["group"] == "all") & (table["layer"] >= 0)]
    whole = whole[whole["modality"] == "fmri"].sort_values("layer")
    np.testing.assert_allclose(whole["value"], everything, rtol=1e-6)


@pytest.mark.slow
def test_adding_metrics_leaves_the_encoding_rows_and_summary_unchanged(simulated):
    alone, _, _ = probe(simulated, ["encoding"])
    together, _, _ = probe(simulated, ["encoding", "rsa", "cka"])
    keys = ["subject", "modality", "feature_kind", "layer", "group", "time", "metric"]
    encoding_rows = set(alone.table["metric"])
    both = together.table[together.table["metric"].isin(encoding_rows)]
    pd.testing.assert_frame_equal(
        alone.table.sort_values(keys, ignore_index=True)[[*keys, "value"]],
        both.sort_values(keys, ignore_index=True)[[*keys, "value"]],
    )
    for modality in ("fmri", "meg"):
        first, second = entry(alone, modality), entry(together, modality)
        assert {key: second[key] for key in first} == first
        assert set(second["metrics"]) == {"rsa", "cka"}
    # curves and TensorBoard scalars of encoding are the same; the metrics add their own
    steps = together.table.assign(step=10, train_fraction=1.0, status="ok")
    curve_names = set(curves(steps)["curve"])
    assert set(curves(alone.table.assign(step=10, train_fraction=1.0))["curve"]) < curve_names
    assert {"rsa", "rsa/spatial_score", "rsa/roi/V1", "cka/temporal_score"} <= curve_names
    assert "cka/window/80-130ms" in curve_names
    fmri_scores = next(s for s in together.scores if s.summary["modality"] == "fmri")
    tags = scalar_values("brain", fmri_scores, ProbeConfig().meg_windows)
    assert tags["brain/sim01/fmri/rsa/spatial_score"] == pytest.approx(
        fmri_scores.summary["metrics"]["rsa"]["spatial_score"]
    )
    assert tags["brain/sim01/fmri/cka"] == pytest.approx(
        fmri_scores.summary["metrics"]["cka"]["score"]
    )
    assert "brain/sim01/fmri/encoding" in tags and "brain/sim01/fmri/rsa/roi/V1" in tags
    alone_fmri = next(s for s in alone.scores if s.summary["modality"] == "fmri")
    alone_tags = scalar_values("brain", alone_fmri, ProbeConfig().meg_windows)
    assert {tag: tags[tag] for tag in alone_tags} == pytest.approx(alone_tags)


@pytest.mark.slow
def test_split_half_noise_ceiling_recovers_the_planted_reliability(forward):
    """Noise sd 1 per repeat on unit-variance voxels, 2 repeats: the mean's reliability is 2/3."""
    run, _, _ = forward
    table = run.table
    fmri = table[(table["modality"] == "fmri") & (table["layer"] == -1)]
    ceiling = fmri[fmri["metric"] == "noise_ceiling"].set_index("group")["value"]
    assert ceiling["all"] == pytest.approx(2 / 3, abs=0.05)
    assert set(ceiling.index) == {"all", *entry(run, "fmri")["metrics"]["rsa"]["roi_best_depth"]}
    ceiling_r = fmri[fmri["metric"] == "noise_ceiling_r"].set_index("group")["value"]
    assert ceiling_r["all"] == pytest.approx(np.sqrt(2 / 3), abs=0.05)
    assert entry(run, "fmri")["noise_ceiling_source"] == "split_half"
    # the RSA ceiling bounds every layer's RSA in each ROI (within sampling noise)
    rsa_ceiling = fmri[fmri["metric"] == "rsa_noise_ceiling"].set_index("group")["value"]
    best_rsa = table[(table["metric"] == "rsa") & (table["modality"] == "fmri")]
    best_rsa = best_rsa.groupby("group")["value"].max()
    assert (best_rsa <= rsa_ceiling.reindex(best_rsa.index) + 0.05).all()
    meg = table[(table["modality"] == "meg") & (table["metric"] == "noise_ceiling")]
    assert set(meg["group"]) == {"all", "time", "80-130ms", "130-180ms", "500-550ms"}
    by_window = meg.set_index("group")["value"]
    assert by_window["130-180ms"] > by_window["500-550ms"] + 0.2  # signal vs noise only


@pytest.mark.slow
def test_crossnobis_rsa_runs_on_the_repeats_and_keeps_the_hierarchy(simulated):
    run, _, _ = probe(simulated, ["rsa"], rsa=RSAConfig(distance="crossnobis"))
    assert entry(run, "fmri")["metrics"]["rsa"]["spatial_score"] > 0.8
    assert entry(run, "meg")["metrics"]["rsa"]["temporal_score"] > 0.8


def test_rsa_ceiling_across_subjects_on_the_same_stimuli(simulated):
    """Two "subjects": the simulated fMRI's two repeats (one signal, independent noise).

    With two subjects the lower bound compares each with the other: Spearman between their
    RDMs, exactly; the upper bound (each against the mean of both) lies above it.
    """
    import dataclasses

    from brainalign.probe.metrics import compare_rdms, rdms
    from brainalign.probe.run import ProbeTarget, noise_ceilings

    subject, _ = simulated
    config = ProbeConfig(brain=[str(subject.fmri_dir)], metrics=["rsa"], cache_dir=None)
    (target,) = load_targets(config)
    brain = target.brain
    halves = [
        dataclasses.replace(brain, subject=name, data=brain.repeats[index], repeats=None)
        for index, name in enumerate(("a", "b"))
    ]
    order = np.argsort(brain.stimulus_ids)  # the bounds compare RDMs in sorted-id order
    shuffled = dataclasses.replace(halves[1], data=halves[1].data[::-1].copy(),
                                   stimulus_ids=halves[1].stimulus_ids[::-1])  # fmt: skip
    targets = [ProbeTarget("a", halves[0], target.stimuli), ProbeTarget("b", shuffled, None)]
    ceilings = noise_ceilings(targets, config)
    lower, upper = ceilings[0].rsa_subjects
    np.testing.assert_array_equal(ceilings[1].rsa_subjects[0], lower)  # one value for both
    first, second = (rdms([half.data[order]]) for half in halves)
    assert lower[0] == pytest.approx(compare_rdms(first, second)[0, 0], rel=1e-9)
    assert np.all(upper > lower)
    v1 = (brain.targets["roi"] == "V1").to_numpy()
    v1_rdms = [rdms([half.data[order][:, v1]]) for half in halves]
    rois = list(dict.fromkeys(brain.targets["roi"]))
    assert lower[1 + rois.index("V1")] == pytest.approx(compare_rdms(*v1_rdms)[0, 0], rel=1e-9)
    assert ceilings[0].rsa is None  # the halves have no repeats: no split-half ceiling


@pytest.mark.slow
def test_rsa_and_cka_get_intervals_and_curve_resamples(simulated):
    from brainalign.probe.config import BootstrapConfig

    run, _, _ = probe(simulated, ["rsa", "cka"], bootstrap=BootstrapConfig(n_resamples=60))
    table = run.table
    for metric in ("rsa", "cka"):
        rows = table[table["metric"] == metric]
        assert rows[["ci_low", "ci_high"]].notna().all().all(), metric
        assert (rows["ci_low"] <= rows["value"] + 1e-9).mean() > 0.95, metric
        assert (rows["value"] <= rows["ci_high"] + 1e-9).mean() > 0.95, metric
        assert (rows["ci_high"] > rows["ci_low"]).all(), metric  # real resamples
        for score, modality in (("spatial_score", "fmri"), ("temporal_score", "meg")):
            name = f"{score}_{metric}"
            row = table[(table["metric"] == name) & (table["modality"] == modality)].iloc[0]
            assert row["ci_low"] <= row["value"] <= row["ci_high"], name
            assert row["ci_low"] > 0.5, name  # the planted hierarchy is far from chance
    curves = set(run.replicates["curve"])
    assert {"rsa", "rsa/spatial_score", "rsa/roi/V1", "rsa/window/80-130ms"} <= curves
    assert {"cka", "cka/spatial_score", "cka/roi/V1", "cka/window/80-130ms"} <= curves
