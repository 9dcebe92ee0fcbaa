"""RDMs and their comparisons: equal to rsatoolbox, unbiased crossnobis, planted match, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import calc_rdm, compare

from brainalign.probe.metrics import compare_rdms, n_pairs, rdms, representational_similarity

N_STIMULI = 9


def reference_rdm(patterns: np.ndarray, metric: str) -> np.ndarray:
    """rsatoolbox's RDM of one (n_stimuli, n_features) set: (n_pairs,)."""
    return calc_rdm(Dataset(patterns), method=metric).get_vectors()[0]


def reference_crossnobis(repeats: np.ndarray) -> np.ndarray:
    """rsatoolbox's leave-one-repeat-out crossnobis RDM of (n_repeats, n_stimuli, n_features)."""
    n_repeats, n_stimuli, n_features = repeats.shape
    dataset = Dataset(
        repeats.reshape(-1, n_features),
        obs_descriptors={
            "stimulus": np.tile(np.arange(n_stimuli), n_repeats),
            "repeat": np.repeat(np.arange(n_repeats), n_stimuli),
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rsatoolbox casts NaN to int inside
        result = calc_rdm(
            dataset, method="crossnobis", descriptor="stimulus", cv_descriptor="repeat"
        )
    return result.get_vectors()[0]


@pytest.mark.parametrize("metric", ["correlation", "euclidean"])
def test_rdms_of_sets_of_different_widths_equal_rsatoolbox(metric):
    rng = np.random.default_rng(0)
    sets = [rng.normal(size=(N_STIMULI, width)) + rng.normal() for width in (7, 8, 13)]
    ours = rdms(sets, metric)
    assert ours.shape == (3, n_pairs(N_STIMULI)) == (3, 36)
    expected = np.stack([reference_rdm(patterns, metric) for patterns in sets])
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


def test_stacked_array_gives_the_same_rdms_as_a_list():
    rng = np.random.default_rng(1)
    stacked = rng.normal(size=(4, N_STIMULI, 8))
    np.testing.assert_allclose(rdms(stacked, "euclidean"), rdms(list(stacked), "euclidean"))
    float32 = rdms(stacked, "correlation", dtype="float32")
    assert float32.dtype == np.float32
    np.testing.assert_allclose(float32, rdms(stacked, "correlation"), atol=1e-5)


def test_crossnobis_equals_rsatoolbox_leave_one_repeat_out():
    rng = np.random.default_rng(2)
    sets = [rng.normal(size=(n_repeats, N_STIMULI, width)) for n_repeats, width in ((3, 7), (4, 8))]
    ours = rdms(sets, "crossnobis")
    expected = np.stack([reference_crossnobis(repeats) for repeats in sets])
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


def test_crossnobis_is_unbiased_where_the_euclidean_distance_of_means_is_not():
    """Noise of variance s**2 per repeat adds 2 s**2 / R to every squared distance of means."""
    rng = np.random.default_rng(3)
    n_repeats, n_features, noise = 4, 50, 1.5
    signal = rng.normal(size=(N_STIMULI, n_features))
    truth = rdms(signal[None], "euclidean")[0]
    runs = 200
    repeats = signal[None, None] + noise * rng.normal(size=(runs, n_repeats, N_STIMULI, n_features))
    crossnobis = rdms(repeats, "crossnobis").mean(axis=0)
    of_means = rdms(repeats.mean(axis=1), "euclidean").mean(axis=0)
    np.testing.assert_allclose(crossnobis, truth, atol=0.08)  # sd of the 200-run mean ~ 0.03
    np.testing.assert_allclose(of_means - truth, 2 * noise**2 / n_repeats, atol=0.08)


@pytest.mark.parametrize("method", ["spearman", "pearson", "kendall_tau_a"])
def test_compare_rdms_equals_rsatoolbox_with_ties(method):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 45))
    b = rng.normal(size=(4, 45))
    b[1] = np.round(b[1])  # a model RDM with many tied dissimilarities
    a[2, :10] = a[2, 10]
    rsatoolbox_name = {"spearman": "spearman", "pearson": "corr", "kendall_tau_a": "tau-a"}
    expected = compare(a, b, method=rsatoolbox_name[method])
    ours = compare_rdms(a, b, method)
    assert ours.shape == (3, 4)
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


def test_representational_similarity_finds_the_planted_layer_of_each_roi():
    rng = np.random.default_rng(5)
    n_stimuli = 60
    layers = [rng.normal(size=(n_stimuli, width)) for width in (10, 12, 14)]
    planted = [2, 0, 1, 1]  # layer read out by each ROI
    rois = [
        layers[k] @ rng.normal(size=(layers[k].shape[1], 20)) + rng.normal(size=(n_stimuli, 20))
        for k in planted
    ]
    scores = representational_similarity(layers, rois, method="pearson")
    assert scores.shape == (3, 4)
    assert scores.argmax(axis=0).tolist() == planted
    repeats = [roi[None] + rng.normal(size=(3, n_stimuli, 20)) for roi in rois]
    crossnobis = representational_similarity(layers, repeats, brain_metric="crossnobis")
    assert crossnobis.argmax(axis=0).tolist() == planted


def test_metric_that_needs_repeats_refuses_data_without_them():
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="needs repeats"):
        rdms(rng.normal(size=(2, N_STIMULI, 5)), "crossnobis")
    with pytest.raises(ValueError, match="needs repeats"):
        rdms([rng.normal(size=(N_STIMULI, 5))], "crossnobis")
    with pytest.raises(ValueError, match="at least 2 independent repeats"):
        rdms([rng.normal(size=(1, N_STIMULI, 5))], "crossnobis")


def test_bad_input_is_one_clear_value_error():
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError, match=r"different numbers of stimuli: data\[0\] has 9 .* 8"):
        rdms([rng.normal(size=(9, 4)), rng.normal(size=(8, 4))])
    with pytest.raises(ValueError, match="for a single set pass"):
        rdms(rng.normal(size=(N_STIMULI, 4)))
    with pytest.raises(ValueError, match="metric must be one of"):
        rdms([rng.normal(size=(N_STIMULI, 4))], "cosine")
    with pytest.raises(ValueError, match="NaN or infinite"):
        rdms([np.full((N_STIMULI, 4), np.nan)])
    with pytest.raises(ValueError, match="model and brain sets: the first has 9 stimuli"):
        representational_similarity([rng.normal(size=(9, 4))], [rng.normal(size=(8, 4))])
    with pytest.raises(ValueError, match="different lengths"):
        compare_rdms(rng.normal(size=(2, 36)), rng.normal(size=(2, 28)))
    constant_pattern = rng.normal(size=(N_STIMULI, 4))
    constant_pattern[3] = 1.0
    with pytest.raises(ValueError, match="hold NaN"):
        compare_rdms(rdms([constant_pattern]), rng.normal(size=(1, 36)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_asked_for_without_cuda_is_an_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        rdms([np.ones((N_STIMULI, 3))], device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", ["correlation", "euclidean", "crossnobis"])
def test_rdms_on_cuda_equal_cpu(metric):
    rng = np.random.default_rng(8)
    shape = (3, 2, 50, 20) if metric == "crossnobis" else (3, 50, 20)
    data = rng.normal(size=shape)
    np.testing.assert_allclose(rdms(data, metric, device="cuda"), rdms(data, metric), atol=1e-10)
