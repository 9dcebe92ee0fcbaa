"""The CKA bootstrap: equal to a plain loop that resamples the stimuli, and calibrated.

The reference resamples the (once centred) features, forms the Gram matrices, zeroes the
entries of two copies of one stimulus (unbiased) and applies the HSIC formulas with numpy; the
biased bootstrap is also checked against ``linear_cka`` of the resampled features. Calibration:
Gaussian stimuli whose population CKA is known in closed form (Kornblith et al. 2019:
``||S_xy||_F**2 / (||S_xx||_F ||S_yy||_F)``); 95% intervals from 60 stimuli must cover it in
90-99% of 200 independent samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainalign.probe.bootstrap import percentile_interval, resample_counts, resample_indices
from brainalign.probe.metrics.cka import cross_validated_cka, linear_cka
from brainalign.probe.metrics.cka_bootstrap import (
    bootstrap_cross_validated_cka,
    bootstrap_linear_cka,
)


def hsic_reference(x, y, drawn, unbiased):
    """HSIC of the resample ``drawn`` (indices) of two feature sets, with numpy."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    xs, ys = x[drawn], y[drawn]
    k, l_ = xs @ xs.T, ys @ ys.T
    n = len(drawn)
    if not unbiased:
        centring = np.eye(n) - 1.0 / n
        return np.trace(k @ centring @ l_ @ centring) / (n - 1) ** 2
    copies = drawn[:, None] == drawn[None, :]  # the diagonal and two copies of one stimulus
    k[copies], l_[copies] = 0.0, 0.0
    one = np.ones(n)
    return (
        np.trace(k @ l_)
        + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ l_ @ one)
    ) / (n * (n - 3))


def cka_reference(x, y, drawn, unbiased):
    cross = hsic_reference(x, y, drawn, unbiased)
    return cross / np.sqrt(
        hsic_reference(x, x, drawn, unbiased) * hsic_reference(y, y, drawn, unbiased)
    )


def sets(rng, n):
    layers = [rng.normal(size=(n, 7)), rng.normal(size=(n, 4)) + 3.0]  # an offset: centring
    related = layers[0][:, :3] @ rng.normal(size=(3, 5)) + rng.normal(size=(n, 5))
    return layers, [related, rng.normal(size=(n, 2))]


@pytest.mark.parametrize("unbiased", [True, False])
def test_counts_equal_resampling_the_stimuli(unbiased):
    rng = np.random.default_rng(0)
    n = 20
    layers, brain = sets(rng, n)
    fast = bootstrap_linear_cka(layers, brain, resample_counts(n, 12, seed=4), unbiased=unbiased)
    for b, drawn in enumerate(resample_indices(n, 12, seed=4)):
        for i, layer in enumerate(layers):
            for j, target in enumerate(brain):
                expected = cka_reference(layer, target, drawn, unbiased)
                assert fast[b, i, j] == pytest.approx(expected, abs=1e-10)
                if not unbiased:  # duplicates are genuine stimuli to the biased estimator
                    plain = linear_cka([layer[drawn]], [target[drawn]], unbiased=False)[0, 0]
                    assert fast[b, i, j] == pytest.approx(plain, abs=1e-10)


def test_cross_validated_counts_equal_resampling_the_stimuli():
    rng = np.random.default_rng(1)
    n = 18
    layers, _ = sets(rng, n)
    repeats = layers[0][:, :4] + rng.normal(size=(3, n, 4))  # (R, n, p)
    fast = bootstrap_cross_validated_cka(layers, [repeats], resample_counts(n, 10, seed=2))
    for b, drawn in enumerate(resample_indices(n, 10, seed=2)):
        mean, even, odd = (
            repeats.mean(axis=0),
            repeats[0::2].mean(axis=0),
            repeats[1::2].mean(axis=0),
        )
        for i, layer in enumerate(layers):
            expected = hsic_reference(layer, mean, drawn, True) / np.sqrt(
                hsic_reference(layer, layer, drawn, True) * hsic_reference(even, odd, drawn, True)
            )
            assert fast[b, i, 0] == pytest.approx(expected, abs=1e-10)


def test_all_ones_counts_give_the_point_estimates():
    rng = np.random.default_rng(2)
    n = 16
    layers, brain = sets(rng, n)
    ones = np.ones((2, n))
    for unbiased in (True, False):
        np.testing.assert_allclose(
            bootstrap_linear_cka(layers, brain, ones, unbiased=unbiased)[1],
            linear_cka(layers, brain, unbiased=unbiased),
            atol=1e-12,
        )
    repeats = [layers[0][:, :3] + rng.normal(size=(4, n, 3))]
    np.testing.assert_allclose(
        bootstrap_cross_validated_cka(layers, repeats, ones)[0],
        cross_validated_cka(layers, repeats),
        atol=1e-12,
    )


def test_model_grams_over_the_memory_budget_are_recomputed_with_the_same_values(monkeypatch):
    import brainalign.probe.metrics.cka_bootstrap as module

    rng = np.random.default_rng(3)
    layers, brain = sets(rng, 14)
    counts = resample_counts(14, 6, seed=1)
    held = bootstrap_linear_cka(layers, brain, counts)
    monkeypatch.setattr(module, "_GRAM_BUDGET_BYTES", 8)
    np.testing.assert_array_equal(bootstrap_linear_cka(layers, brain, counts), held)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_values():
    rng = np.random.default_rng(4)
    layers, brain = sets(rng, 30)
    counts = resample_counts(30, 20, seed=0)
    np.testing.assert_allclose(
        bootstrap_linear_cka(layers, brain, counts, device="cuda"),
        bootstrap_linear_cka(layers, brain, counts),
        atol=1e-10,
    )


def test_bad_inputs_are_one_clear_error():
    a = [np.random.default_rng(0).normal(size=(10, 3))]
    with pytest.raises(ValueError, match="do not match 10 stimuli"):
        bootstrap_linear_cka(a, a, np.ones((2, 9)))
    with pytest.raises(ValueError, match="must sum to the 10 stimuli"):
        bootstrap_linear_cka(a, a, np.full((2, 10), 2.0))
    with pytest.raises(ValueError, match="stimuli"):
        bootstrap_linear_cka(a, [np.zeros((9, 3))], np.ones((2, 10)))


def population(rng, n, weights, noise, n_repeats=0):
    """Gaussian stimuli x (n, 6) and brain responses x @ weights + noise (or their repeats)."""
    x = rng.normal(size=(n, weights.shape[0]))
    shape = (n_repeats, n, weights.shape[1]) if n_repeats else (n, weights.shape[1])
    return x, x @ weights + noise * rng.normal(size=shape)


def population_cka(weights, noise):
    """Linear CKA of x with x @ weights + noise at the population: covariances in closed form."""
    brain_covariance = weights.T @ weights + noise**2 * np.eye(weights.shape[1])
    return np.sum(weights**2) / (np.sqrt(weights.shape[0]) * np.linalg.norm(brain_covariance))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cka", "cka_cv"])
def test_intervals_cover_the_population_value(kind):
    rng = np.random.default_rng(20)
    weights = rng.normal(size=(6, 4)) * np.array([1.0, 0.8, 0.5, 0.2])
    # cka_cv estimates the CKA with the noise-free brain representation
    truth = population_cka(weights, noise=1.0 if kind == "cka" else 0.0)
    covered = []
    for repetition in range(200):
        counts = resample_counts(60, n_boot=300, seed=repetition)
        if kind == "cka":
            x, y = population(rng, 60, weights, noise=1.0)
            boot = bootstrap_linear_cka([x], [y], counts)[:, 0, 0]
        else:
            x, repeats = population(rng, 60, weights, noise=1.5, n_repeats=4)
            boot = bootstrap_cross_validated_cka([x], [repeats], counts)[:, 0, 0]
        interval = percentile_interval(boot, 0.95)
        covered.append(interval.low <= truth <= interval.high)
    coverage = float(np.mean(covered))
    assert 0.90 <= coverage <= 0.99, coverage
