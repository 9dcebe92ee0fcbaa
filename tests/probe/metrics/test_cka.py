"""Linear CKA: equal to the plain formulas, its invariances, the bias it removes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from brainalign.probe.metrics import cross_validated_cka, linear_cka


def hsic_biased(gram_k: np.ndarray, gram_l: np.ndarray) -> float:
    """HSIC_0 = tr(K H L H) / (n - 1)**2 (Gretton et al. 2005), written out."""
    n = len(gram_k)
    centring = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(gram_k @ centring @ gram_l @ centring)) / (n - 1) ** 2


def hsic_unbiased(gram_k: np.ndarray, gram_l: np.ndarray) -> float:
    """HSIC_1 of Song et al. 2012 (eq. 5), written out term by term."""
    n = len(gram_k)
    k_tilde, l_tilde = gram_k.copy(), gram_l.copy()
    np.fill_diagonal(k_tilde, 0.0)
    np.fill_diagonal(l_tilde, 0.0)
    ones = np.ones(n)
    return float(
        np.trace(k_tilde @ l_tilde)
        + (ones @ k_tilde @ ones) * (ones @ l_tilde @ ones) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * ones @ k_tilde @ l_tilde @ ones
    ) / (n * (n - 3))


def plain_cka(x: np.ndarray, y: np.ndarray, hsic) -> float:
    gram_x, gram_y = x @ x.T, y @ y.T
    return hsic(gram_x, gram_y) / np.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y))


def some_sets(seed: int, n_stimuli: int = 11):
    rng = np.random.default_rng(seed)
    a = [rng.normal(size=(n_stimuli, width)) + 3.0 for width in (7, 8)]
    b = [
        rng.normal(size=(n_stimuli, 9)),
        a[0] @ rng.normal(size=(7, 5)) + 0.3 * rng.normal(size=(n_stimuli, 5)),
        rng.normal(size=(n_stimuli, 3)) ** 3,
    ]
    return a, b


@pytest.mark.parametrize("route", ["gram", "features", "auto"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_linear_cka_equals_the_plain_formulas(route, unbiased):
    a, b = some_sets(0)
    hsic = hsic_unbiased if unbiased else hsic_biased
    expected = np.array([[plain_cka(x, y, hsic) for y in b] for x in a])
    ours = linear_cka(a, b, unbiased=unbiased, route=route)
    assert ours.shape == (2, 3)
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


def test_float32_is_close_to_float64():
    a, b = some_sets(1, n_stimuli=40)
    np.testing.assert_allclose(
        linear_cka(a, b, dtype="float32"), linear_cka(a, b), rtol=0, atol=2e-5
    )


@pytest.mark.parametrize("unbiased", [True, False])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling_not_to_general_linear_maps(unbiased):
    rng = np.random.default_rng(2)
    n_stimuli, width = 30, 6
    x = rng.normal(size=(n_stimuli, width))
    y = x @ rng.normal(size=(width, width)) + rng.normal(size=(n_stimuli, width))
    reference = linear_cka([x], [y], unbiased=unbiased)[0, 0]
    rotated = x @ ortho_group.rvs(width, random_state=3) * 7.5 + 2.0
    np.testing.assert_allclose(linear_cka([rotated], [y], unbiased=unbiased)[0, 0], reference)
    stretch = np.diag([10.0, 5.0, 1.0, 1.0, 0.2, 0.1])  # invertible, not orthogonal
    distorted = linear_cka([x @ stretch], [y], unbiased=unbiased)[0, 0]
    assert abs(distorted - reference) > 0.05
    assert linear_cka([x], [x @ stretch], unbiased=unbiased)[0, 0] < 0.9  # itself, stretched


def test_unbiased_cka_is_near_zero_for_independent_wide_data_where_the_biased_one_is_not():
    rng = np.random.default_rng(4)
    n_stimuli, width = 40, 2000  # far more dimensions than stimuli
    x = rng.normal(size=(n_stimuli, width))
    y = rng.normal(size=(n_stimuli, width))
    assert linear_cka([x], [y], unbiased=False)[0, 0] > 0.9
    assert abs(linear_cka([x], [y], unbiased=True)[0, 0]) < 0.05


def test_cross_validated_cka_recovers_the_noise_free_value():
    rng = np.random.default_rng(5)
    n_stimuli, width, n_targets, n_repeats = 200, 8, 30, 4
    features = rng.normal(size=(n_stimuli, width))
    signal = np.tanh(features @ rng.normal(size=(width, n_targets)))
    noise_free = linear_cka([features], [signal])[0, 0]
    repeats = signal[None] + 1.5 * rng.normal(size=(n_repeats, n_stimuli, n_targets))
    on_mean = linear_cka([features], [repeats.mean(axis=0)])[0, 0]
    cross_validated = cross_validated_cka([features], [repeats])[0, 0]
    assert noise_free - on_mean > 0.1  # noise lowers the plain estimate
    assert abs(cross_validated - noise_free) < 0.05
    by_features = cross_validated_cka([features], [repeats], route="features")[0, 0]
    np.testing.assert_allclose(by_features, cross_validated, rtol=1e-10)


def test_cross_validated_cka_is_nan_for_pure_noise():
    rng = np.random.default_rng(6)
    features = rng.normal(size=(50, 5))
    noise_only = [rng.normal(size=(2, 50, 10)) for _ in range(20)]
    scores = cross_validated_cka([features], noise_only)[0]
    # HSIC_1 of two independent halves of noise is positive about half the time
    assert 3 <= np.isnan(scores).sum() <= 17


def test_bad_input_is_one_clear_value_error():
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError, match="needs repeats"):
        cross_validated_cka([rng.normal(size=(9, 3))], rng.normal(size=(2, 9, 4)))
    with pytest.raises(ValueError, match="a and b: the first has 9 stimuli and the second 8"):
        linear_cka([rng.normal(size=(9, 3))], [rng.normal(size=(8, 3))])
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka([rng.normal(size=(3, 3))], [rng.normal(size=(3, 3))])
    with pytest.raises(ValueError, match="route must be one of"):
        linear_cka([rng.normal(size=(9, 3))], [rng.normal(size=(9, 3))], route="kernel")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("route", ["gram", "features"])
def test_cka_on_cuda_equals_cpu(route):
    a, b = some_sets(8, n_stimuli=64)
    np.testing.assert_allclose(
        linear_cka(a, b, device="cuda", route=route), linear_cka(a, b, route=route), atol=1e-10
    )
    repeats = [
        np.stack([item, item + 0.5 * np.random.default_rng(9).normal(size=item.shape)])
        for item in b
    ]
    np.testing.assert_allclose(
        cross_validated_cka(a, repeats, device="cuda", route=route),
        cross_validated_cka(a, repeats, route=route),
        atol=1e-10,
    )
