"""Cross-validated ridge encoding against scikit-learn, himalaya and straightforward loops."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import KFold

from brainalign.probe.ridge import DEFAULT_ALPHAS, fit_encoding, fit_mapping, outer_splits
from brainalign.probe.scores import pearson_r


def planted_data(
    n_stimuli: int, n_features: int, n_targets: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Targets with a linear part of varying strength, noise and an offset."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_stimuli, n_features))
    weights = rng.standard_normal((n_features, n_targets))
    strength = np.linspace(0.0, 1.0, n_targets)
    noise = rng.standard_normal((n_stimuli, n_targets)) * 3.0
    return features, features @ weights * strength + noise + 5.0


def sklearn_loo_reference(
    features: np.ndarray, targets: np.ndarray, splits: list, alphas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The plain way: RidgeCV(alpha_per_target=True) per outer fold."""
    r_per_fold, chosen = [], []
    for train, test in splits:
        model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(features[train], targets[train])
        r_per_fold.append(pearson_r(model.predict(features[test]), targets[test]))
        chosen.append(model.alpha_)
    return np.array(r_per_fold), np.array(chosen)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("shape", [(60, 7, 9), (40, 70, 9)])  # tall and wide X
def test_loo_matches_sklearn_ridgecv_in_float64(backend: str, shape: tuple[int, int, int]) -> None:
    features, targets = planted_data(*shape)
    result = fit_encoding(features, targets, backend=backend, dtype="float64")
    r_expected, alphas_expected = sklearn_loo_reference(
        features, targets, list(KFold(5).split(features)), DEFAULT_ALPHAS
    )
    assert result.r_per_fold.shape == (5, shape[2])
    np.testing.assert_array_equal(result.alphas, alphas_expected)
    np.testing.assert_allclose(result.r_per_fold, r_expected, atol=1e-6)
    np.testing.assert_allclose(result.r, r_expected.mean(axis=0), atol=1e-6)
    assert len(np.unique(alphas_expected)) > 2  # the comparison covers several alphas


def test_loo_shuffled_folds_match_sklearn_kfold_shuffle() -> None:
    features, targets = planted_data(60, 7, 9, seed=1)
    result = fit_encoding(
        features, targets, backend="numpy", dtype="float64", shuffle=True, seed=3, n_folds=4
    )
    splits = list(KFold(4, shuffle=True, random_state=3).split(features))
    r_expected, alphas_expected = sklearn_loo_reference(features, targets, splits, DEFAULT_ALPHAS)
    for (_, test), got_test in zip(splits, result.test_indices):
        np.testing.assert_array_equal(got_test, test)
    np.testing.assert_array_equal(result.alphas, alphas_expected)
    np.testing.assert_allclose(result.r_per_fold, r_expected, atol=1e-6)


def test_float32_torch_close_to_sklearn() -> None:
    features, targets = planted_data(60, 7, 9, seed=2)
    result = fit_encoding(features, targets, backend="torch")  # float32 by default
    r_expected, _ = sklearn_loo_reference(
        features, targets, list(KFold(5).split(features)), DEFAULT_ALPHAS
    )
    np.testing.assert_allclose(result.r_per_fold, r_expected, atol=1e-4)


def test_float32_near_ties_choose_the_float64_alpha(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ill-conditioned float32 features (offset, decaying scales) as real activations are:
    many targets have two alphas whose LOO errors agree to float32 rounding. Those are decided
    in float64, so every chosen alpha and R equal the float64 fit's."""
    import brainalign.probe.ridge as ridge_module

    rng = np.random.default_rng(0)
    features = (rng.standard_normal((200, 32)) * np.logspace(0, -3, 32)).astype(np.float32) + 5
    weights = rng.standard_normal((32, 600)) * rng.uniform(0, 1, 600)
    clean = features @ weights
    targets = (clean + rng.standard_normal(clean.shape) * 0.5 * clean.std()).astype(np.float32)
    exact = fit_encoding(features, targets, backend="numpy", dtype="float64")

    result = fit_encoding(features, targets, backend="torch", dtype="float32")
    np.testing.assert_array_equal(result.alphas, exact.alphas)
    np.testing.assert_allclose(result.r, exact.r, atol=1e-6)

    monkeypatch.setattr(ridge_module, "_NEAR_TIE_UNITS", -1.0)  # float32 choice only
    rounded = fit_encoding(features, targets, backend="torch", dtype="float32")
    assert (rounded.alphas != exact.alphas).sum() > 10  # the data do exercise near ties


def test_target_batches_give_the_same_answer() -> None:
    features, targets = planted_data(50, 6, 11, seed=4)
    whole = fit_encoding(features, targets, backend="numpy")
    batched = fit_encoding(features, targets, backend="numpy", target_batch_size=3)
    np.testing.assert_allclose(batched.r_per_fold, whole.r_per_fold, atol=1e-12)
    np.testing.assert_array_equal(batched.alphas, whole.alphas)


def kfold_loop_reference(
    features: np.ndarray, targets: np.ndarray, alphas: np.ndarray, n_folds: int, n_inner: int
) -> tuple[np.ndarray, np.ndarray]:
    """Loop over outer folds, targets, alphas and inner folds with sklearn's Ridge."""
    r_per_fold, chosen = [], []
    for train, test in KFold(n_folds).split(features):
        x_train, y_train = features[train], targets[train]
        errors = np.zeros((len(alphas), targets.shape[1]))
        for alpha_index, alpha in enumerate(alphas):
            for fit, validation in KFold(n_inner).split(x_train):
                model = Ridge(alpha=alpha).fit(x_train[fit], y_train[fit])
                residual = y_train[validation] - model.predict(x_train[validation])
                errors[alpha_index] += (residual**2).mean(axis=0) / n_inner
        best_alphas = alphas[errors.argmin(axis=0)]
        prediction = np.column_stack(
            [
                Ridge(alpha=best_alphas[t]).fit(x_train, y_train[:, t]).predict(features[test])
                for t in range(targets.shape[1])
            ]
        )
        r_per_fold.append(pearson_r(prediction, targets[test]))
        chosen.append(best_alphas)
    return np.array(r_per_fold), np.array(chosen)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_inner_kfold_matches_straightforward_loop(backend: str) -> None:
    features, targets = planted_data(60, 7, 9, seed=5)
    result = fit_encoding(features, targets, inner=3, n_folds=4, backend=backend, dtype="float64")
    r_expected, alphas_expected = kfold_loop_reference(features, targets, DEFAULT_ALPHAS, 4, 3)
    np.testing.assert_array_equal(result.alphas, alphas_expected)
    np.testing.assert_allclose(result.r_per_fold, r_expected, atol=1e-6)


def test_inner_kfold_alphas_match_himalaya() -> None:
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_ridge_cv_svd

    features, targets = planted_data(80, 6, 10, seed=6)
    result = fit_encoding(features, targets, inner=4, backend="numpy", dtype="float64")
    set_backend("numpy", on_error="raise")
    for fold_index, (train, _) in enumerate(outer_splits(80, 5)):
        best_alphas, *_ = solve_ridge_cv_svd(
            features[train],
            targets[train],
            alphas=DEFAULT_ALPHAS,
            fit_intercept=True,
            cv=4,
            local_alpha=True,
        )
        np.testing.assert_allclose(result.alphas[fold_index], best_alphas, rtol=1e-6)


def test_inner_kfold_picks_small_alpha_for_clean_and_large_for_noise() -> None:
    rng = np.random.default_rng(7)
    features = rng.standard_normal((200, 10))
    clean = features @ rng.standard_normal((10, 3)) + 0.01 * rng.standard_normal((200, 3))
    noise = rng.standard_normal((200, 20))
    result = fit_encoding(
        features, np.hstack([clean, noise]), inner=5, backend="numpy", dtype="float64"
    )
    clean_alphas, noise_alphas = result.alphas[:, :3], result.alphas[:, 3:]
    assert np.all(clean_alphas == DEFAULT_ALPHAS[0])
    assert np.median(noise_alphas) >= 1e6
    assert noise_alphas.min() > clean_alphas.max()
    assert np.all(result.r[:3] > 0.999)


@pytest.mark.parametrize("inner", ["loo", 4])
def test_planted_linear_mapping_is_recovered(inner: str | int) -> None:
    rng = np.random.default_rng(8)
    features = rng.standard_normal((300, 20))
    signal = features @ rng.standard_normal((20, 6)) + 0.05 * rng.standard_normal((300, 6))
    noise = rng.standard_normal((300, 7))
    result = fit_encoding(features, np.hstack([signal, noise]), inner=inner)
    assert result.r.shape == (13,)
    assert np.all(result.r[:6] > 0.99)
    assert np.all(np.abs(result.r[6:]) < 0.2)


def test_decoding_direction_predicts_feature_dimensions_from_brain() -> None:
    rng = np.random.default_rng(9)
    features = rng.standard_normal((200, 5))
    brain = features[:, :3] @ rng.standard_normal((3, 8)) + 0.1 * rng.standard_normal((200, 8))
    decoding = fit_mapping(features, brain, direction="decoding", backend="numpy")
    encoding = fit_mapping(features, brain, direction="encoding", backend="numpy")
    assert decoding.direction == "decoding" and encoding.direction == "encoding"
    assert decoding.r.shape == (5,) and encoding.r.shape == (8,)
    assert np.all(decoding.r[:3] > 0.95)  # dimensions the brain carries
    assert np.all(np.abs(decoding.r[3:]) < 0.3)  # dimensions it does not
    swapped = fit_encoding(brain, features, backend="numpy")
    np.testing.assert_allclose(decoding.r_per_fold, swapped.r_per_fold)


def test_constant_target_gives_nan_without_warning() -> None:
    features, targets = planted_data(40, 5, 4, seed=10)
    targets[:, 2] = 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit_encoding(features, targets, backend="torch")
    assert np.isnan(result.r[2])
    assert np.all(np.isfinite(np.delete(result.r, 2)))


def test_groups_never_straddle_outer_folds() -> None:
    features, targets = planted_data(60, 5, 3, seed=11)
    groups = np.repeat(np.arange(12), 5)  # e.g. 5 repeats of 12 images
    result = fit_encoding(features, targets, groups=groups, inner=3, backend="numpy")
    for test in result.test_indices:
        held_out = set(groups[test])
        training = set(np.delete(groups, test))
        assert held_out.isdisjoint(training)


@pytest.mark.parametrize(
    ("features", "targets", "kwargs", "message"),
    [
        (np.zeros((4, 3)), np.zeros((4, 2)), {}, "4 stimuli cannot be split into 5 outer"),
        (np.zeros((20, 3)), np.zeros((21, 2)), {}, r"X has shape \(20, 3\), Y has shape \(21, 2\)"),
        (np.zeros((20, 3)), np.zeros((20, 2, 4)), {}, r"reshape"),
        (np.zeros((20, 3)), np.zeros((20, 2)), {"alphas": [1.0, 0.0]}, "positive"),
        (np.zeros((20, 3)), np.zeros((20, 2)), {"inner": 1}, "inner must be"),
        (np.zeros((20, 3)), np.zeros((20, 2)), {"n_folds": 1}, "n_folds must be"),
        (np.zeros((20, 3)), np.zeros((20, 2)), {"groups": np.zeros(19)}, "one label per"),
        (np.zeros((20, 3)), np.zeros((20, 2)), {"backend": "jax"}, "backend must be"),
        (np.zeros((20, 3)), np.zeros((20, 0)), {}, "at least one stimulus, feature and target"),
    ],
)
def test_bad_input_is_reported_clearly(
    features: np.ndarray, targets: np.ndarray, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_encoding(features, targets, **kwargs)


def test_nan_input_says_how_many_and_where() -> None:
    features, targets = planted_data(30, 4, 5, seed=12)
    targets[7, 3] = np.nan
    targets[9, 1] = np.nan
    with pytest.raises(ValueError, match=r"Y has 2 NaN .*first at row 7, column 3"):
        fit_encoding(features, targets)
    features[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"X has 0 NaN and 1 infinite"):
        fit_encoding(features, targets)


def test_too_few_training_stimuli_for_inner_folds() -> None:
    features, targets = planted_data(10, 3, 2, seed=13)
    with pytest.raises(ValueError, match="cannot be split into inner=9"):
        fit_encoding(features, targets, inner=9)


def test_unknown_direction_is_rejected() -> None:
    with pytest.raises(ValueError, match="direction must be"):
        fit_mapping(np.zeros((20, 3)), np.zeros((20, 2)), direction="sideways")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_torch_cuda_without_cuda_is_an_error() -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        fit_encoding(np.zeros((20, 3)), np.zeros((20, 2)), backend="torch_cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_cuda_matches_numpy() -> None:
    features, targets = planted_data(60, 7, 9)
    reference = fit_encoding(features, targets, backend="numpy", dtype="float64")
    for inner in ("loo", 3):
        expected = (
            reference
            if inner == "loo"
            else fit_encoding(features, targets, backend="numpy", dtype="float64", inner=inner)
        )
        on_gpu = fit_encoding(features, targets, backend="torch_cuda", dtype="float64", inner=inner)
        np.testing.assert_array_equal(on_gpu.alphas, expected.alphas)
        np.testing.assert_allclose(on_gpu.r_per_fold, expected.r_per_fold, atol=1e-6)
        in_float32 = fit_encoding(features, targets, backend="torch_cuda", inner=inner)
        np.testing.assert_allclose(in_float32.r_per_fold, expected.r_per_fold, atol=1e-3)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("shape", [(30, 8), (8, 30)])
def test_thin_svd_from_gram_matches_numpy_svd(kind: str, shape: tuple[int, int]) -> None:
    """The eigh-based SVD (torch is the path used on CUDA) on a rank-deficient centred matrix."""
    from brainalign.probe.ridge import _thin_svd
    from brainalign.probe.ridge_backend import Ops as _Ops

    rng = np.random.default_rng(14)
    matrix = rng.standard_normal(shape)
    matrix[:, -1] = matrix[:, 0]  # a duplicated column lowers the rank by one
    centred = matrix - matrix.mean(axis=0)
    ops = _Ops("numpy", np.dtype(np.float64))
    if kind == "torch":
        ops = _Ops("torch", torch.float64, torch.device("cpu"))
    u, singular, v = (ops.numpy(part) for part in _thin_svd(ops, ops.float64(centred)))
    reference = np.linalg.svd(centred, compute_uv=False)
    expected_rank = min(shape[0] - 1, shape[1] - 1)  # centring and the duplicate
    assert singular.shape == (expected_rank,)
    np.testing.assert_allclose(np.sort(singular)[::-1], reference[:expected_rank], rtol=1e-9)
    np.testing.assert_allclose(u @ np.diag(singular) @ v.T, centred, atol=1e-9)
    np.testing.assert_allclose(u.T @ u, np.eye(expected_rank), atol=1e-9)
