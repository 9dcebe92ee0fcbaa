"""Banded ridge and variance partitioning: planted shares recovered, himalaya equality, errors."""

from __future__ import annotations

import numpy as np
import pytest
from himalaya.backend import get_backend
from himalaya.ridge import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold

from brainalign.probe.metrics import fit_banded_ridge, variance_partitioning
from brainalign.probe.ridge import outer_splits

# The planted components are orthogonal in the sample, so the planted shares are exact there;
# what remains is estimation: held-out R2 loses about p / n_train of the unexplained variance,
# which the shared share (two single-space models minus one joint model) feels most.
MEAN_TOLERANCE, TARGET_TOLERANCE = 0.05, 0.1


def orthogonal_components(rng, n_stimuli: int, widths: tuple[int, ...]) -> list[np.ndarray]:
    """Blocks of centred columns, all mutually orthogonal over the stimuli (one QR)."""
    total = rng.normal(size=(n_stimuli, sum(widths)))
    basis, _ = np.linalg.qr(total - total.mean(0))
    basis *= np.sqrt(n_stimuli)
    return np.split(basis, np.cumsum(widths)[:-1], axis=1)


def unit_part(rng, components: np.ndarray, share: float, n_targets: int) -> np.ndarray:
    """A random read-out of ``components`` with exactly ``share`` variance per target."""
    signal = components @ rng.normal(size=(components.shape[1], n_targets))
    return np.sqrt(share) * (signal - signal.mean(0)) / signal.std(0)


def two_planted_spaces(seed: int, n_stimuli: int = 600, n_targets: int = 20):
    """A = [a_only, common], B = [b_only, common]; shares 0.2 / 0.1 / 0.3, noise 0.4."""
    rng = np.random.default_rng(seed)
    a_only, b_only, common, noise = orthogonal_components(rng, n_stimuli, (8, 8, 6, 40))
    responses = (
        unit_part(rng, a_only, 0.2, n_targets)
        + unit_part(rng, b_only, 0.1, n_targets)
        + unit_part(rng, common, 0.3, n_targets)
        + unit_part(rng, noise, 0.4, n_targets)
    )
    # very different scales: the per-space penalties must absorb them
    spaces = {"A": 3.0 * np.hstack([a_only, common]), "B": 0.2 * np.hstack([b_only, common])}
    return spaces, responses


def test_two_planted_spaces_recover_the_unique_and_shared_shares():
    spaces, responses = two_planted_spaces(0)
    partition = variance_partitioning(spaces, responses, solver="primal")
    assert partition.subsets == (("A",), ("B",), ("A", "B"))
    for estimate, planted in (
        (partition.unique("A"), 0.2),
        (partition.unique("B"), 0.1),
        (partition.shared("A", "B"), 0.3),
    ):
        assert estimate.shape == (20,)
        assert abs(estimate.mean() - planted) < MEAN_TOLERANCE
        assert np.abs(estimate - planted).max() < TARGET_TOLERANCE
    joint = partition.r2_of("A", "B")  # 0.6 planted, less the cost of estimating 22 weights
    assert 0.5 < joint.mean() < 0.6
    np.testing.assert_allclose(
        partition.unique("A") + partition.unique("B") + partition.shared("A", "B"),
        partition.r2_of("A", "B"),
    )
    table = partition.to_frame()
    assert len(table) == 3 * 20 and set(table["subset"]) == {"A", "B", "A+B"}


@pytest.mark.slow
def test_three_planted_spaces_recover_every_venn_region():
    rng = np.random.default_rng(1)
    n_stimuli, n_targets = 600, 10
    a_only, b_only, c_only, ab, abc, noise = orthogonal_components(
        rng, n_stimuli, (5, 5, 5, 4, 4, 40)
    )
    only = {"A": a_only, "B": b_only, "C": c_only}
    planted = {("A",): 0.15, ("B",): 0.1, ("C",): 0.1, ("A", "B"): 0.2, ("A", "B", "C"): 0.15}
    responses = sum(
        unit_part(rng, components, share, n_targets)
        for components, share in (
            (only["A"], 0.15),
            (only["B"], 0.1),
            (only["C"], 0.1),
            (ab, 0.2),
            (abc, 0.15),
            (noise, 0.3),
        )
    )
    spaces = {
        "A": np.hstack([only["A"], ab, abc]),
        "B": np.hstack([only["B"], ab, abc]),
        "C": np.hstack([only["C"], abc]),
    }
    partition = variance_partitioning(spaces, responses, solver="primal", n_iter=30)
    assert len(partition.subsets) == 7
    for subset in partition.subsets:
        estimate = partition.regions[partition.subsets.index(subset)]
        assert abs(estimate.mean() - planted.get(subset, 0.0)) < MEAN_TOLERANCE, subset


def test_primal_and_kernel_solvers_fit_the_same_model():
    spaces, responses = two_planted_spaces(2, n_stimuli=120, n_targets=4)
    primal = fit_banded_ridge(spaces, responses, solver="primal", n_iter=5)
    kernel = fit_banded_ridge(spaces, responses, solver="kernel", n_iter=5)
    np.testing.assert_allclose(kernel.r2_per_fold, primal.r2_per_fold, atol=1e-8)
    np.testing.assert_allclose(kernel.deltas, primal.deltas, atol=1e-8)


def test_one_space_equals_himalaya_ridgecv_on_the_same_folds():
    spaces, responses = two_planted_spaces(3, n_stimuli=200, n_targets=5)
    alphas = np.logspace(-2, 4, 7)
    ours = fit_banded_ridge({"A": spaces["A"]}, responses, alphas=alphas)
    expected = []
    for train, test in outer_splits(200, 5):
        features, targets = spaces["A"], responses
        model = RidgeCV(alphas=alphas, cv=KFold(5), fit_intercept=True)
        model.fit(features[train], targets[train])
        expected.append(
            r2_score(targets[test], model.predict(features[test]), multioutput="raw_values")
        )
    np.testing.assert_allclose(ours.r2_per_fold, np.array(expected), atol=1e-8)
    assert [test.tolist() for test in ours.test_indices] == [
        test.tolist() for _, test in outer_splits(200, 5)
    ]


@pytest.mark.slow
def test_per_space_penalties_ignore_a_wide_noise_space_that_one_penalty_cannot():
    rng = np.random.default_rng(4)
    n_stimuli = 300
    signal_space = rng.normal(size=(n_stimuli, 10))
    noise_space = 5.0 * rng.normal(size=(n_stimuli, 250))
    responses = unit_part(rng, signal_space, 0.5, 6) + unit_part(
        rng, rng.normal(size=(n_stimuli, 30)), 0.5, 6
    )
    banded = fit_banded_ridge({"signal": signal_space, "noise": noise_space}, responses)
    one_penalty = fit_banded_ridge({"both": np.hstack([signal_space, noise_space])}, responses)
    alone = fit_banded_ridge({"signal": signal_space}, responses)
    assert banded.r2.mean() > one_penalty.r2.mean() + 0.05
    assert abs(banded.r2.mean() - alone.r2.mean()) < 0.03
    assert get_backend().name == "numpy"  # the call restored himalaya's backend


def test_bad_input_is_one_clear_value_error():
    rng = np.random.default_rng(5)
    responses = rng.normal(size=(100, 3))
    with pytest.raises(ValueError, match="feature space 'B' has 99 rows but Y has 100 stimuli"):
        fit_banded_ridge({"A": rng.normal(size=(100, 4)), "B": rng.normal(size=(99, 4))}, responses)
    with pytest.raises(ValueError, match="needs 2 to 4 feature spaces; got 1"):
        variance_partitioning({"A": rng.normal(size=(100, 4))}, responses)
    with pytest.raises(ValueError, match="solver must be one of"):
        fit_banded_ridge({"A": rng.normal(size=(100, 4))}, responses, solver="lbfgs")
    spaces, planted_responses = two_planted_spaces(6, n_stimuli=60, n_targets=2)
    partition = variance_partitioning(spaces, planted_responses, n_iter=2, n_folds=2)
    with pytest.raises(ValueError, match="distinct feature spaces among"):
        partition.unique("C")
    with pytest.raises(ValueError, match="at least two"):
        partition.shared("A")
