"""Banded ridge (one penalty per feature space, himalaya) and variance partitioning.

Banded ridge fits several feature spaces jointly, each scaled by its own learned weight, i.e.
with its own ridge penalty (Nunez-Elizalde, Huth & Gallant 2019, NeuroImage 197:482; Dupre la
Tour et al. 2022, NeuroImage 264:119728, the himalaya paper). It runs through himalaya:
``himalaya.ridge.GroupRidgeCV`` (primal, cost grows with the number of features) or
``himalaya.kernel_ridge.MultipleKernelRidgeCV`` on linear kernels (dual, cost grows with the
number of stimuli), both with himalaya's random search over the simplex of space weights and a
per-target penalty chosen by inner K-fold cross-validation.

Held-out scores come from outer folds (:func:`brainalign.probe.ridge.outer_splits`, so the same
folds as ``fit_encoding``): inside each outer training part the features and responses are
centred with the training means (the intercept), the model is fitted, and the held-out part is
predicted. R2 per target is scikit-learn's ``r2_score`` on each held-out part, averaged over
folds (it can be negative).

Variance partitioning (Lescroart, Stansbury & Gallant 2015, Front. Comput. Neurosci. 9:135;
de Heer et al. 2017, J. Neurosci. 37:6539): every non-empty subset S of the spaces gets its own
banded ridge and held-out ``R2(S)``. The variance explained *exactly* by the spaces of a subset
T (a region of the Venn diagram) follows by inclusion-exclusion: with ``U`` all spaces and
``h(S) = R2(U) - R2(U minus S)``, ``region(T) = sum over non-empty S in T of
(-1)**(|T| - |S|) h(S)``. For two spaces A, B this is ``unique(A) = R2(A+B) - R2(B)`` and
``shared(A, B) = R2(A) + R2(B) - R2(A+B)``. Estimated regions can be negative (noise, or
a joint model that overfits): they are reported as they are.

Example (Study B: gradients beyond the activations of the same layer)::

    partition = variance_partitioning({"activations": acts, "gradients": grads}, Y)
    partition.unique("gradients")   # (n_targets,)
    partition.shared("activations", "gradients")
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold
from threadpoolctl import threadpool_limits

from brainalign.probe.metrics._sets import check_option
from brainalign.probe.ridge import DEFAULT_ALPHAS, PredictionSink, outer_splits
from brainalign.probe.scores import pearson_r

__all__ = [
    "BandedRidgeResult",
    "VariancePartition",
    "fit_banded_ridge",
    "variance_partitioning",
    "venn_regions",
]

Solver = Literal["auto", "primal", "kernel"]
HimalayaBackend = Literal["numpy", "torch", "torch_cuda"]
SOLVERS: tuple[str, ...] = ("auto", "primal", "kernel")
BACKENDS: tuple[str, ...] = ("numpy", "torch", "torch_cuda")
_SINGLE_THREAD_SIZE = 1024  # numpy: eigendecompositions this small run on one BLAS thread
_MAX_SPACES = 4  # 15 subset fits; more gets expensive quickly (2**n - 1 fits)


@dataclass(frozen=True)
class BandedRidgeResult:
    """Held-out performance of a banded ridge over outer folds.

    Attributes
    ----------
    space_names : tuple of str
    r2 : ndarray of shape (n_targets,)
        Held-out R2 averaged over outer folds.
    r2_per_fold : ndarray of shape (n_folds, n_targets)
    r : ndarray of shape (n_targets,)
        Held-out Pearson R averaged over folds (as ``EncodingResult.r``).
    deltas : ndarray of shape (n_folds, n_spaces, n_targets)
        himalaya's log space weights chosen in each outer fold (a space's effective penalty
        is ``alpha / exp(delta)``).
    test_indices : tuple of n_folds ndarrays
    """

    space_names: tuple[str, ...]
    r2: np.ndarray
    r2_per_fold: np.ndarray
    r: np.ndarray
    deltas: np.ndarray
    test_indices: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class VariancePartition:
    """R2 of every subset of feature spaces and the variance each Venn region explains.

    Attributes
    ----------
    space_names : tuple of str
    subsets : tuple of tuples of str
        Every non-empty subset of ``space_names``, by size, then in the spaces' order.
    r2 : ndarray of shape (n_subsets, n_targets)
        Held-out R2 of the banded ridge on each subset.
    regions : ndarray of shape (n_subsets, n_targets)
        Variance explained exactly by the spaces of each subset: unique variance for a single
        space, shared variance for several (inclusion-exclusion, see the module docstring).
    """

    space_names: tuple[str, ...]
    subsets: tuple[tuple[str, ...], ...]
    r2: np.ndarray
    regions: np.ndarray

    def _row(self, names: Sequence[str]) -> int:
        unknown = [name for name in names if name not in self.space_names]
        if unknown or len(set(names)) != len(names) or not names:
            raise ValueError(
                f"names must be distinct feature spaces among {list(self.space_names)}; got "
                f"{list(names)}"
            )
        wanted = tuple(name for name in self.space_names if name in names)
        return self.subsets.index(wanted)

    def r2_of(self, *names: str) -> np.ndarray:
        """Held-out R2 of the joint model of these spaces: (n_targets,)."""
        return self.r2[self._row(names)]

    def unique(self, name: str) -> np.ndarray:
        """Variance only ``name`` explains, ``R2(all) - R2(all but name)``: (n_targets,)."""
        return self.regions[self._row([name])]

    def shared(self, *names: str) -> np.ndarray:
        """Variance explained by each of ``names`` and by no other space: (n_targets,)."""
        if len(names) < 2:
            raise ValueError("shared() needs at least two feature spaces; use unique() for one")
        return self.regions[self._row(names)]

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per subset and target (subset, n_spaces, target, r2, region)."""
        n_targets = self.r2.shape[1]
        return pd.DataFrame(
            {
                "subset": np.repeat(["+".join(subset) for subset in self.subsets], n_targets),
                "n_spaces": np.repeat([len(subset) for subset in self.subsets], n_targets),
                "target": np.tile(np.arange(n_targets), len(self.subsets)),
                "r2": self.r2.ravel(),
                "region": self.regions.ravel(),
            }
        )


# ---------------------------------------------------------------------------- checks
def _check_spaces(
    spaces: Mapping[str, np.ndarray], Y: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise ValueError(
            f"Y must have shape (n_stimuli, n_targets); got shape {Y.shape} (MEG: reshape "
            "(n_stimuli, n_channels, n_times) with Y.reshape(len(Y), -1))"
        )
    if not isinstance(spaces, Mapping) or not spaces:
        raise ValueError(
            "spaces must be a non-empty mapping of name -> (n_stimuli, n_features) array, e.g. "
            "{'activations': X1, 'gradients': X2}"
        )
    checked = {}
    for name, features in spaces.items():
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] == 0:
            raise ValueError(
                f"feature space {name!r} must have shape (n_stimuli, n_features); got shape "
                f"{features.shape}"
            )
        if features.shape[0] != Y.shape[0]:
            raise ValueError(
                f"feature space {name!r} has {features.shape[0]} rows but Y has {Y.shape[0]} "
                "stimuli; every space needs one row per stimulus, in Y's order"
            )
        if not np.isfinite(features).all():
            raise ValueError(f"feature space {name!r} has NaN or infinite values")
        checked[str(name)] = features
    if not np.isfinite(Y).all():
        raise ValueError("Y has NaN or infinite values; drop or impute those targets first")
    return checked, Y


# ---------------------------------------------------------------------------- fitting
@contextlib.contextmanager
def _himalaya_backend(name: str) -> Iterator[Any]:
    """Use himalaya backend ``name`` inside the block; restore the previous one after."""
    from himalaya.backend import get_backend, set_backend

    check_option(name, BACKENDS, "backend")
    previous = get_backend().name
    backend = set_backend(name, on_error="raise")
    try:
        yield backend
    finally:
        set_backend(previous, on_error="raise")


def _inner_cv(n_train: int, inner_folds: int, groups_train: np.ndarray | None) -> list:
    rows = np.arange(n_train)
    if groups_train is None:
        return list(KFold(n_splits=inner_folds).split(rows))
    return list(GroupKFold(n_splits=inner_folds).split(rows, groups=groups_train))


def _fit_predict(
    train: list[np.ndarray],
    test: list[np.ndarray],
    y_train: np.ndarray,
    *,
    solver: str,
    alphas: np.ndarray,
    n_iter: int,
    cv: list,
    seed: int,
    backend: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """One banded ridge on centred data: held-out prediction and deltas (n_spaces, n_targets)."""
    from himalaya.kernel_ridge import MultipleKernelRidgeCV
    from himalaya.ridge import GroupRidgeCV

    search = np.ones((1, 1)) if len(train) == 1 else n_iter  # one space: no weights to search
    solver_params = {"n_iter": search, "alphas": alphas, "progress_bar": False}
    if solver == "primal":
        solver_params["warn"] = False  # "auto" takes the kernel form where himalaya would warn
        model = GroupRidgeCV(groups="input", solver_params=solver_params, cv=cv, random_state=seed)
        model.fit(train, y_train)
        prediction = model.predict(test)
    else:
        model = MultipleKernelRidgeCV(
            kernels="precomputed", solver_params=solver_params, cv=cv, random_state=seed
        )
        model.fit(np.stack([x @ x.T for x in train]), y_train)  # (n_spaces, n_train, n_train)
        prediction = model.predict(np.stack([t @ x.T for t, x in zip(test, train)]))
    return backend.to_numpy(prediction), backend.to_numpy(model.deltas_)


def fit_banded_ridge(
    spaces: Mapping[str, np.ndarray],
    Y: np.ndarray,
    *,
    alphas: Sequence[float] | np.ndarray = DEFAULT_ALPHAS,
    n_folds: int = 5,
    inner_folds: int = 5,
    n_iter: int = 20,
    solver: Solver = "auto",
    backend: HimalayaBackend = "numpy",
    shuffle: bool = False,
    seed: int = 0,
    groups: np.ndarray | None = None,
    prediction_sink: PredictionSink | None = None,
) -> BandedRidgeResult:
    """Cross-validated banded ridge: all spaces jointly, one penalty per space and target.

    Parameters
    ----------
    spaces : mapping of str to ndarray of shape (n_stimuli, n_features_i)
        Feature spaces, one row per stimulus in Y's order (e.g. a layer's activations and its
        gradients; two layers; a layer and low-level image statistics).
    Y : ndarray of shape (n_stimuli, n_targets)
        Brain responses.
    alphas : array of shape (n_alphas,), default=``DEFAULT_ALPHAS`` (1e0 .. 1e8)
        Ridge penalties searched per target for each candidate weighting of the spaces.
    n_folds : int, default=5
        Outer folds (:func:`brainalign.probe.ridge.outer_splits`).
    inner_folds : int, default=5
        Inner K-folds for himalaya's hyperparameter search (GroupKFold with ``groups``).
    n_iter : int, default=20
        Candidate weightings of the spaces (himalaya's Dirichlet random search; the first is
        uniform). Ignored for a single space.
    solver : {"auto", "primal", "kernel"}, default="auto"
        ``GroupRidgeCV`` or ``MultipleKernelRidgeCV`` (same model); "auto" takes the kernel
        form when the spaces have more features in all than an inner training part has
        stimuli (where himalaya says the primal form is the slower).
    backend : {"numpy", "torch", "torch_cuda"}, default="numpy"
        himalaya backend, set for this call only.
    shuffle, seed, groups
        As in :func:`brainalign.probe.ridge.fit_encoding`; ``seed`` also seeds the search.
    prediction_sink : callable, optional
        Called once per outer fold with the held-out predictions of every target, as
        :data:`brainalign.probe.ridge.PredictionSink` (fold, test rows, ``slice`` of all
        targets, predictions, observed values; both centred with the training means), e.g. a
        :class:`~brainalign.probe.bootstrap.GroupRAccumulator` with ``score="r2"``.

    Returns
    -------
    result : BandedRidgeResult

    Raises
    ------
    ValueError
        Spaces with a number of rows different from Y's, non-2-D inputs, NaN values, bad
        options.
    """
    checked, Y = _check_spaces(spaces, Y)
    check_option(solver, SOLVERS, "solver")
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alphas.size == 0 or not np.all(alphas > 0):
        raise ValueError(f"alphas must be a non-empty list of positive numbers; got {alphas}")
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer; got {n_iter!r}")
    if groups is not None:
        groups = np.asarray(groups)
    splits = outer_splits(Y.shape[0], n_folds, shuffle=shuffle, seed=seed, groups=groups)
    n_features = sum(features.shape[1] for features in checked.values())
    r2_per_fold = np.empty((n_folds, Y.shape[1]))
    r_per_fold = np.empty((n_folds, Y.shape[1]))
    deltas = np.empty((n_folds, len(checked), Y.shape[1]))
    with _himalaya_backend(backend) as himalaya_backend:
        for fold, (train_rows, test_rows) in enumerate(splits):
            chosen = solver
            if solver == "auto":  # himalaya's own rule, on the inner training parts
                n_inner_train = len(train_rows) - -(-len(train_rows) // inner_folds)
                chosen = "kernel" if n_features > n_inner_train else "primal"
            train, test = [], []
            for features in checked.values():
                mean = features[train_rows].mean(axis=0)
                train.append(features[train_rows] - mean)
                test.append(features[test_rows] - mean)
            y_mean = Y[train_rows].mean(axis=0)
            cv = _inner_cv(
                len(train_rows), inner_folds, None if groups is None else groups[train_rows]
            )
            single_thread = backend == "numpy" and len(train_rows) <= _SINGLE_THREAD_SIZE
            limit = threadpool_limits(1, "blas") if single_thread else contextlib.nullcontext()
            with limit:  # small multi-threaded eigh on a busy machine: measured 40x slower
                prediction, fold_deltas = _fit_predict(
                    train,
                    test,
                    Y[train_rows] - y_mean,
                    solver=chosen,
                    alphas=alphas,
                    n_iter=n_iter,
                    cv=cv,
                    seed=seed,
                    backend=himalaya_backend,
                )
            y_test = Y[test_rows] - y_mean
            if prediction_sink is not None:
                prediction_sink(fold, test_rows, slice(0, Y.shape[1]), prediction, y_test)
            r2_per_fold[fold] = r2_score(
                y_test, prediction, multioutput="raw_values", force_finite=False
            )
            r_per_fold[fold] = pearson_r(prediction, y_test, axis=0)
            deltas[fold] = fold_deltas
    return BandedRidgeResult(
        space_names=tuple(checked),
        r2=r2_per_fold.mean(axis=0),
        r2_per_fold=r2_per_fold,
        r=r_per_fold.mean(axis=0),
        deltas=deltas,
        test_indices=tuple(test for _, test in splits),
    )


def venn_regions(
    r2_by_subset: Mapping[frozenset[str], np.ndarray], names: tuple[str, ...]
) -> dict[frozenset[str], np.ndarray]:
    """Venn regions from subset R2s by inclusion-exclusion (see the module docstring).

    The R2 arrays may have any shape (per target, per group, per bootstrap resample): the
    regions are linear combinations of them, taken elementwise.
    """
    everything = frozenset(names)
    full = r2_by_subset[everything]

    def exclusive(subset: frozenset[str]) -> np.ndarray:  # h(S) = R2(U) - R2(U minus S)
        rest = everything - subset
        return full - (r2_by_subset[rest] if rest else 0.0)

    regions = {}
    for subset in r2_by_subset:
        total = np.zeros_like(full)
        for size in range(1, len(subset) + 1):
            for part in itertools.combinations(sorted(subset), size):
                total += (-1) ** (len(subset) - size) * exclusive(frozenset(part))
        regions[subset] = total
    return regions


def variance_partitioning(
    spaces: Mapping[str, np.ndarray],
    Y: np.ndarray,
    *,
    prediction_sinks: Callable[[tuple[str, ...]], PredictionSink] | None = None,
    **options: Any,
) -> VariancePartition:
    """Unique and shared variance of 2 to 4 feature spaces, from one banded ridge per subset.

    Parameters
    ----------
    spaces : mapping of str to ndarray of shape (n_stimuli, n_features_i)
        2 to 4 feature spaces (2**n - 1 banded ridges are fitted).
    Y : ndarray of shape (n_stimuli, n_targets)
    prediction_sinks : callable, optional
        ``prediction_sinks(subset)`` gives the ``prediction_sink`` of the banded ridge of each
        subset (a tuple of space names), e.g. one bootstrap accumulator per subset.
    **options
        Keyword arguments of :func:`fit_banded_ridge` (alphas, n_folds, inner_folds, n_iter,
        solver, backend, shuffle, seed, groups); every subset uses the same folds.

    Returns
    -------
    partition : VariancePartition
    """
    checked, Y = _check_spaces(spaces, Y)
    if not 2 <= len(checked) <= _MAX_SPACES:
        raise ValueError(
            f"variance partitioning needs 2 to {_MAX_SPACES} feature spaces; got {len(checked)} "
            f"({list(checked)})"
        )
    names = tuple(checked)
    subsets = tuple(
        subset
        for size in range(1, len(names) + 1)
        for subset in itertools.combinations(names, size)
    )
    r2_by_subset = {
        frozenset(subset): fit_banded_ridge(
            {name: checked[name] for name in subset},
            Y,
            prediction_sink=None if prediction_sinks is None else prediction_sinks(subset),
            **options,
        ).r2
        for subset in subsets
    }
    regions = venn_regions(r2_by_subset, names)
    return VariancePartition(
        space_names=names,
        subsets=subsets,
        r2=np.stack([r2_by_subset[frozenset(subset)] for subset in subsets]),
        regions=np.stack([regions[frozenset(subset)] for subset in subsets]),
    )
