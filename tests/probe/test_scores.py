"""Alignment scores on planted answers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from brainalign.probe.scores import (
    best_layer_depths,
    distance_from_v1,
    encoding_score,
    noise_ceiling_from_ncsnr,
    noise_ceiling_split_half,
    normalised_r,
    pearson_r,
    roi_scores,
    spatial_score,
    t_max,
    temporal_score,
)


@pytest.mark.parametrize("axis", [0, 1])
def test_pearson_r_matches_corrcoef(axis: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 9))
    b = a + rng.standard_normal((7, 9))
    r = pearson_r(a, b, axis=axis)
    n_pairs = a.shape[1 - axis]
    assert r.shape == (n_pairs,)
    for index in range(n_pairs):
        pair_a = a[:, index] if axis == 0 else a[index]
        pair_b = b[:, index] if axis == 0 else b[index]
        assert r[index] == pytest.approx(np.corrcoef(pair_a, pair_b)[0, 1], abs=1e-12)
    from_torch = pearson_r(torch.from_numpy(a), torch.from_numpy(b), axis=axis)
    assert isinstance(from_torch, torch.Tensor)
    np.testing.assert_allclose(from_torch.numpy(), r, atol=1e-12)


def test_pearson_r_constant_column_is_nan_without_warning() -> None:
    a = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    b = np.array([[1.0, 5.0], [3.0, 1.0], [2.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = pearson_r(a, b)
        r_torch = pearson_r(torch.from_numpy(a), torch.from_numpy(b))
    assert r[0] == pytest.approx(0.5) and np.isnan(r[1])
    assert torch.isnan(r_torch[1]) and float(r_torch[0]) == pytest.approx(0.5)


def test_pearson_r_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\(7, 9\) and \(9, 7\)"):
        pearson_r(np.zeros((7, 9)), np.zeros((9, 7)))


def test_normalised_r_divides_by_the_maximum() -> None:
    r = np.array([[0.1, 0.4], [0.2, 0.2], [np.nan, 0.1]])  # (n_layers=3, n_targets=2)
    np.testing.assert_allclose(normalised_r(r), r / 0.4)
    per_target = normalised_r(r, axis=0)
    np.testing.assert_allclose(per_target[:2], [[0.5, 1.0], [1.0, 0.5]])
    assert np.isnan(per_target[2, 0])


def test_normalised_r_non_positive_maximum_is_nan_with_warning() -> None:
    with pytest.warns(RuntimeWarning, match="not positive"):
        result = normalised_r(np.array([[-0.2, 0.3], [-0.1, 0.6]]), axis=0)
    assert np.all(np.isnan(result[:, 0]))
    np.testing.assert_allclose(result[:, 1], [0.5, 1.0])


def test_noise_ceiling_from_ncsnr_known_values() -> None:
    ncsnr = np.array([0.0, 1.0, 1.0, np.sqrt(2.0)])
    np.testing.assert_allclose(noise_ceiling_from_ncsnr(ncsnr[:2], 1), [0.0, 50.0])
    np.testing.assert_allclose(noise_ceiling_from_ncsnr(ncsnr[2:], 3), [75.0, 600.0 / 7.0])
    with pytest.raises(ValueError, match="at least 1"):
        noise_ceiling_from_ncsnr(ncsnr, 0)
    with pytest.raises(TypeError, match="integer"):
        noise_ceiling_from_ncsnr(ncsnr, 2.5)


def test_split_half_reliability_recovers_planted_snr() -> None:
    rng = np.random.default_rng(1)
    n_repeats, n_stimuli = 4, 2000
    noise_sd = np.array([0.5, 1.0, 2.0])
    signal = rng.standard_normal((n_stimuli, 3))  # unit variance
    repeats = signal + rng.standard_normal((n_repeats, n_stimuli, 3)) * noise_sd
    pure_noise = rng.standard_normal((n_repeats, n_stimuli, 1))
    constant = np.ones((n_repeats, n_stimuli, 1))
    reliability = noise_ceiling_split_half(np.concatenate([repeats, pure_noise, constant], 2))
    expected = 1.0 / (1.0 + noise_sd**2 / n_repeats)  # signal share of the 4-repeat mean
    np.testing.assert_allclose(reliability[:3], expected, atol=0.03)
    assert abs(reliability[3]) < 0.1
    assert np.isnan(reliability[4])


@pytest.mark.parametrize(
    ("shape", "message"),
    [((5, 4), "n_repeats, n_stimuli, n_targets"), ((1, 5, 2), "at least 2 repeats")],
)
def test_split_half_bad_shapes(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        noise_ceiling_split_half(np.zeros(shape))


def test_encoding_score_ignores_nan_targets() -> None:
    assert encoding_score(np.array([0.1, np.nan, 0.3])) == pytest.approx(0.2)
    with pytest.warns(RuntimeWarning, match="no finite"):
        assert np.isnan(encoding_score(np.array([np.nan, np.nan])))


def test_roi_scores_mean_per_roi_in_order_of_appearance() -> None:
    r = np.array([0.1, 0.5, 0.3, np.nan, 0.7])
    scores = roi_scores(r, ["V2", "V1", "V2", "V1", "FFC"])
    assert list(scores.index) == ["V2", "V1", "FFC"]
    np.testing.assert_allclose(scores.to_numpy(), [0.2, 0.5, 0.7])
    with pytest.raises(ValueError, match="one ROI label per target"):
        roi_scores(r, ["V1"] * 4)


def test_best_layer_depths_picks_the_argmax_layer() -> None:
    depths = np.array([0.0, 0.5, 1.0])
    r_by_layer = np.array(
        [
            [0.9, 0.1, 0.2, np.nan],
            [0.2, 0.1, 0.5, np.nan],
            [0.1, 0.3, 0.5, np.nan],
        ]
    )  # (n_layers=3, n_rois=4); ROI 2 ties between layers 1 and 2
    best = best_layer_depths(r_by_layer, depths)
    np.testing.assert_array_equal(best[:3], [0.0, 1.0, 0.5])
    assert np.isnan(best[3])
    with pytest.raises(ValueError, match="one value per layer"):
        best_layer_depths(r_by_layer, depths[:2])


def hierarchy_centroids() -> pd.DataFrame:
    """Five ROIs placed 10 mm apart along a line starting at V1 (listed out of order)."""
    return pd.DataFrame(
        {
            "roi": ["V2", "V1", "V4", "LO", "IT"],
            "x": [10.0, 0.0, 20.0, 30.0, 40.0],
            "y": [0.0] * 5,
            "z": [0.0] * 5,
        }
    )


def test_spatial_score_is_plus_one_for_monotone_and_minus_one_for_reversed() -> None:
    distances = distance_from_v1(hierarchy_centroids())
    depths = np.linspace(0.0, 1.0, 5)
    rank = np.argsort(np.argsort(distances.to_numpy()))  # 0 for V1 ... 4 for the farthest
    layers = np.arange(5)[:, None]  # (n_layers, 1)
    monotone = -np.abs(layers - rank[None, :]).astype(float)  # ROI peaks at its rank's layer
    reversed_hierarchy = -np.abs(layers - (4 - rank)[None, :]).astype(float)
    best_monotone = best_layer_depths(monotone, depths)
    assert spatial_score(distances.to_numpy(), best_monotone) == pytest.approx(1.0)
    best_reversed = best_layer_depths(reversed_hierarchy, depths)
    assert spatial_score(distances.to_numpy(), best_reversed) == pytest.approx(-1.0)


def test_spatial_score_undefined_cases_warn_and_return_nan() -> None:
    with pytest.warns(RuntimeWarning, match="at least 3"):
        assert np.isnan(spatial_score(np.array([0.0, 10.0]), np.array([0.1, 0.9])))
    with pytest.warns(RuntimeWarning, match="at least 3"):
        assert np.isnan(spatial_score(np.array([0.0, 10.0, 5.0]), np.array([0.1, 0.9, np.nan])))
    with pytest.warns(RuntimeWarning, match="zero variance"):
        assert np.isnan(spatial_score(np.array([0.0, 10.0, 20.0]), np.array([0.5, 0.5, 0.5])))
    with pytest.raises(ValueError, match="same length"):
        spatial_score(np.zeros(3), np.zeros(4))


def gaussian_courses(peaks: list[float], times: np.ndarray, width: float = 0.03) -> np.ndarray:
    return np.stack([np.exp(-0.5 * ((times - peak) / width) ** 2) for peak in peaks])


def test_t_max_returns_planted_peak_times() -> None:
    times = np.linspace(-0.1, 0.5, 601)  # 1 ms grid, 601 samples
    peaks = [0.08, 0.15, 0.3, 0.42]
    courses = gaussian_courses(peaks, times) * np.array([[0.2], [1.0], [3.0], [0.05]])
    np.testing.assert_allclose(t_max(courses, times), peaks, atol=1e-9)


def test_t_max_non_positive_maximum_is_nan_with_warning() -> None:
    times = np.linspace(0.0, 0.4, 41)
    courses = np.vstack([gaussian_courses([0.2], times), -gaussian_courses([0.1], times)])
    with pytest.warns(RuntimeWarning, match=r"layer\(s\) \[1\]"):
        result = t_max(courses, times)
    assert result[0] == pytest.approx(0.2)
    assert np.isnan(result[1])
    with pytest.raises(ValueError, match="one value per time point"):
        t_max(courses, times[:-1])


def test_temporal_score_sign_follows_the_order_of_peaks() -> None:
    times = np.linspace(-0.1, 0.6, 701)
    depths = np.linspace(0.0, 1.0, 5)
    later_with_depth = t_max(gaussian_courses([0.07, 0.1, 0.16, 0.25, 0.4], times), times)
    assert temporal_score(depths, later_with_depth) > 0.9
    earlier_with_depth = t_max(gaussian_courses([0.4, 0.25, 0.16, 0.1, 0.07], times), times)
    assert temporal_score(depths, earlier_with_depth) < -0.9


def test_distance_from_v1_euclidean_mm() -> None:
    centroids = pd.DataFrame(
        {"roi": ["V1", "MT", "FFC"], "x": [1.0, 4.0, 1.0], "y": [2.0, 6.0, 2.0], "z": [0, 0, 12.0]}
    )
    distances = distance_from_v1(centroids)
    assert distances.name == "distance_from_V1_mm"
    assert distances.to_dict() == pytest.approx({"V1": 0.0, "MT": 5.0, "FFC": 12.0})
    from_mt = distance_from_v1(centroids, reference="MT")
    assert from_mt["V1"] == pytest.approx(5.0)


def test_distance_from_v1_errors_name_the_problem() -> None:
    no_v1 = pd.DataFrame({"roi": ["V2", "MT"], "x": [0, 1], "y": [0, 1], "z": [0, 1]})
    with pytest.raises(ValueError, match=r"reference ROI 'V1' is not in .*'MT', 'V2'"):
        distance_from_v1(no_v1)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['z'\]"):
        distance_from_v1(no_v1.drop(columns="z"))
    duplicated = pd.DataFrame({"roi": ["V1", "V1"], "x": [0, 1], "y": [0, 1], "z": [0, 1]})
    with pytest.raises(ValueError, match="more than once"):
        distance_from_v1(duplicated)
