"""Cross-validated ridge encoding with a per-target ridge penalty.

One call fits, for every target at once, the model of Study A (PAPERS.md): ``n_folds`` outer
train/test splits; on each training part a ridge penalty is chosen per target among ``alphas``;
the held-out score is the Pearson R between prediction and data, averaged over folds.

How it is computed (one SVD per fold serves every alpha and every target):

- the training part of X and of Y is centred (this is the intercept); ``Xc = U diag(s) V^T``;
- ``inner="loo"``: efficient leave-one-out, the same closed form as scikit-learn's
  ``RidgeCV(alphas, alpha_per_target=True)`` (``fit_intercept=True``, default GCV mode). With
  ``g = s**2 / (s**2 + alpha)`` and ``Z = U^T Yc``, the LOO residual of sample i is
  ``(Yc - U diag(g) Z)_i / (1 - sum_k g_k U_ik**2 - 1 / n_train)``; the ``1 / n_train`` term is
  the leverage of the intercept. Per target the alpha with the smallest mean squared LOO
  residual wins (first alpha in the given order on ties, as in scikit-learn);
- ``inner=K``: K contiguous inner folds of the training part (GroupKFold when ``groups`` is
  given), each with its own centring and SVD; per target the alpha with the smallest validation
  mean squared error averaged over inner folds wins (first on ties). This is the criterion of
  himalaya's ``solve_ridge_cv_svd`` (``l2_neg_loss``, ``local_alpha=True``);
- the held-out prediction uses the chosen alpha: ``(Xtest - mean) V diag(s / (s**2 + a_t)) Z``
  (plus the training mean of Y, which is not added since Pearson R ignores it).

The SVDs (from the eigendecomposition of the smaller Gram matrix) are computed in float64, the
large matrix products in the working dtype (float32 by default on torch). Where the float32 LOO
errors of two alphas lie within float32 rounding of each other, those targets' candidate errors
are recomputed in float64, so the chosen alphas equal the float64 fit's and R matches it to about
1e-6 (``benchmarks/probe.py`` prints the difference from scikit-learn). Targets are processed
in batches to bound memory: each batch is read straight from Y (no copy of the whole of Y; on
CPU torch a float32 batch is a zero-copy view), its training rows are gathered into one reused
buffer and centred in place, and the per-alpha LOO residuals are written into a second reused
buffer (the held-out part likewise), so the working memory is about three (n_stimuli, batch)
blocks whatever the number of targets or alphas.

Targets that are constant (on a training or test part) get R = NaN; callers drop them
(:func:`brainalign.probe.scores.encoding_score` ignores NaN).

Benchmark against the plain scikit-learn loop: ``python benchmarks/ridge_vs_sklearn.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import GroupKFold, KFold

from brainalign.probe.config import DEFAULT_ALPHAS, EncodingConfig
from brainalign.probe.ridge_backend import (
    BLAS,
    Ops,
    Workspace,
    check_finite,
    pearson_r_overwriting,
    resolve_ops,
)

__all__ = [
    "DEFAULT_ALPHAS",
    "EncodingResult",
    "PredictionSink",
    "fit_encoding",
    "fit_mapping",
    "outer_splits",
]

#: Receives the held-out predictions of each (outer fold, target batch) as they are made:
#: ``sink(fold_index, test_rows, targets, prediction, observed)`` with ``test_rows`` (n_test,)
#: stimulus rows, ``targets`` a slice of target columns, ``prediction`` and ``observed``
#: (n_test, n_batch) float arrays (prediction without the training mean: Pearson R ignores it).
PredictionSink = Callable[[int, np.ndarray, slice, np.ndarray, np.ndarray], None]
_SINGLE_THREAD_EIGH_SIZE = 1024  # Gram matrices up to this size use one BLAS thread on CPU
_AUTO_BATCH_ELEMENTS = 2**21  # CPU: one (n_stimuli, batch) float32 working block is about 8 MiB
_AUTO_BATCH_ELEMENTS_CUDA = 2**22  # larger blocks keep the GPU busy (about 16 MiB each)
# Two float32 LOO errors closer than this many float32 epsilons x sqrt(rank) x the target's
# centred sum of squares are decided in float64. The rounding error of a float32 error was
# measured at up to 1.1 of those units (ViT activations, rank 192): a margin of about 7.
_NEAR_TIE_UNITS = 8.0


@dataclass(frozen=True)
class EncodingResult:
    """Held-out encoding performance of a cross-validated ridge mapping.

    Attributes
    ----------
    r : ndarray of shape (n_targets,)
        Pearson R between prediction and held-out data, averaged over outer folds (NaN for a
        target that is constant on any training or test part).
    r_per_fold : ndarray of shape (n_folds, n_targets)
        The same per outer fold.
    alphas : ndarray of shape (n_folds, n_targets)
        Ridge penalty chosen per target inside each outer training part.
    test_indices : tuple of n_folds ndarrays
        Stimulus rows held out in each outer fold.
    direction : {"encoding", "decoding"}
        "encoding": features -> brain, targets are brain targets; "decoding": brain ->
        features, targets are feature dimensions.
    """

    r: np.ndarray
    r_per_fold: np.ndarray
    alphas: np.ndarray
    test_indices: tuple[np.ndarray, ...]
    direction: str = "encoding"


def _check_inputs(
    X: Any, Y: Any, alphas: Any, n_folds: int, inner: int | str, groups: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n_stimuli, n_features), got shape {X.shape}")
    if Y.ndim != 2:
        raise ValueError(
            f"Y must have shape (n_stimuli, n_targets), got shape {Y.shape}; reshape it, e.g. "
            "MEG (n_stimuli, n_channels, n_times) with Y.reshape(len(Y), -1)"
        )
    if 0 in X.shape or 0 in Y.shape:
        raise ValueError(
            f"X and Y need at least one stimulus, feature and target: X has shape {X.shape}, "
            f"Y has shape {Y.shape}"
        )
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must have one row per stimulus: X has shape {X.shape}, Y has shape {Y.shape}"
        )
    for name, array in (("X", X), ("Y", Y)):
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
        check_finite(array, name)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if X.shape[0] < n_folds:
        raise ValueError(
            f"{X.shape[0]} stimuli cannot be split into {n_folds} outer folds; use more "
            "stimuli or fewer folds"
        )
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be a non-empty list of positive numbers, got {alphas}")
    if inner != "loo" and (
        isinstance(inner, bool) or not isinstance(inner, (int, np.integer)) or inner < 2
    ):
        raise ValueError(f"inner must be 'loo' or an integer number of folds >= 2, got {inner!r}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (X.shape[0],):
            raise ValueError(
                f"groups must have one label per stimulus ({X.shape[0]}), got shape {groups.shape}"
            )
    return X, Y, alphas, groups


def outer_splits(
    n_stimuli: int,
    n_folds: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outer train/test splits used by :func:`fit_encoding`.

    Without ``groups``: scikit-learn ``KFold(n_folds, shuffle=shuffle, random_state=seed if
    shuffle else None)`` (contiguous blocks by default, the first ``n % n_folds`` folds one
    stimulus larger). With ``groups``: ``GroupKFold(n_folds)`` so a group (e.g. repeats of one
    image, or one concept) never straddles train and test (``shuffle``/``seed`` then ignored).

    Returns
    -------
    splits : list of (train_indices, test_indices)
    """
    rows = np.arange(n_stimuli)
    if groups is not None:
        n_groups = np.unique(groups).size
        if n_groups < n_folds:
            raise ValueError(f"groups has {n_groups} distinct labels, fewer than n_folds={n_folds}")
        return list(GroupKFold(n_splits=n_folds).split(rows, groups=groups))
    splitter = KFold(n_splits=n_folds, shuffle=shuffle, random_state=seed if shuffle else None)
    return list(splitter.split(rows))


@dataclass(frozen=True)
class _Decomposition:
    """What one centred training part's SVD ``U diag(s) V^T`` provides, in the working dtype.

    ``u`` (n_train, rank), ``test_projection`` (n_test, rank) = (Xtest - train mean) V,
    ``coef_factor`` (n_alphas, rank) = s / (s**2 + alpha);
    for LOO also ``shrink`` (n_alphas, rank) = s**2 / (s**2 + alpha) and ``inverse_leverage``
    (n_alphas, n_train) = 1 / (1 - h_ii(alpha) - 1 / n_train).
    """

    u: Any
    test_projection: Any
    coef_factor: Any
    shrink: Any = None
    inverse_leverage: Any = None
    exact: _ExactLoo | None = None


@dataclass(frozen=True)
class _ExactLoo:
    """Float64 copies of the LOO factors, kept when the working dtype is float32.

    ``u`` (n_train, rank), ``shrink`` (n_alphas, rank), ``inverse_leverage``
    (n_alphas, n_train), as arrays of ``ops`` (numpy, or torch on CUDA).
    """

    ops: Ops
    u: Any
    shrink: Any
    inverse_leverage: Any


def _thin_svd(ops: Ops, centred: Any) -> tuple[Any, Any, Any]:
    """Thin SVD ``centred = U diag(s) V^T`` from the eigendecomposition of the smaller Gram matrix.

    Much cheaper than a full SVD for tall (or wide) matrices, like scikit-learn's "cov"/"gram"
    GCV modes. Directions with ``s**2 <= max(s**2) * max(n, p) * eps`` (numerical zeros, among
    them the constant direction removed by centring) are dropped; their shrinkage factor
    ``s**2 / (s**2 + alpha)`` would be zero to working precision anyway.

    Returns
    -------
    u : (n, k), singular : (k,), v : (p, k), all float64.
    """
    n_rows, n_columns = centred.shape
    tall = n_rows > n_columns
    gram = centred.T @ centred if tall else centred @ centred.T  # (p, p) or (n, n)
    eigenvalues, eigenvectors = ops.eigh(gram)  # ascending
    tolerance = float(eigenvalues[-1]) * max(n_rows, n_columns) * np.finfo(np.float64).eps
    keep = ops.indices(np.flatnonzero(ops.numpy(eigenvalues) > max(tolerance, 0.0)))
    singular = ops.sqrt(eigenvalues[keep])  # (k,)
    if tall:
        v = eigenvectors[:, keep]  # (p, k)
        u = (centred @ v) / singular  # (n, k)
    else:
        u = eigenvectors[:, keep]  # (n, k)
        v = (centred.T @ u) / singular  # (p, k)
    return u, singular, v


def _decompose(
    ops: Ops, x_train: np.ndarray, x_test: np.ndarray, alphas: np.ndarray, loo: bool
) -> _Decomposition:
    linalg = ops.for_decomposition()
    x_train64 = linalg.float64(x_train)
    x_mean = x_train64.mean(0)  # (n_features,)
    if linalg.kind == "numpy" and min(x_train.shape) <= _SINGLE_THREAD_EIGH_SIZE:
        # Small eigendecompositions run faster on one BLAS thread, and much faster when
        # other thread pools (torch's OpenMP) are busy on the same cores.
        with BLAS.limit(limits=1, user_api="blas"):
            u, singular, v = _thin_svd(linalg, x_train64 - x_mean)  # (n, k), (k,), (p, k)
    else:
        u, singular, v = _thin_svd(linalg, x_train64 - x_mean)
    test_projection = (linalg.float64(x_test) - x_mean) @ v  # (n_test, k)
    alphas64 = linalg.float64(alphas)[:, None]  # (n_alphas, 1)
    squared = singular * singular  # (k,)
    coef_factor = singular / (squared + alphas64)  # (n_alphas, k)
    shrink = inverse_leverage = exact = None
    if loo:
        shrink = squared / (squared + alphas64)  # (n_alphas, k)
        hat_diagonal = ((u * u) @ shrink.T).T  # (n_alphas, n_train)
        inverse_leverage = 1.0 / (1.0 - hat_diagonal - 1.0 / x_train.shape[0])
        if ops.dtype not in (np.float64, torch.float64):
            exact = _ExactLoo(linalg, u, shrink, inverse_leverage)
        shrink, inverse_leverage = ops.work(shrink), ops.work(inverse_leverage)
    return _Decomposition(
        u=ops.work(u),
        test_projection=ops.work(test_projection),
        coef_factor=ops.work(coef_factor),
        shrink=shrink,
        inverse_leverage=inverse_leverage,
        exact=exact,
    )


def _loo_errors(
    ops: Ops, fold: _Decomposition, y_centred: Any, z: Any, workspace: Workspace
) -> Any:
    """Sum of squared LOO residuals, shape (n_alphas, n_targets_batch)."""
    n_alphas = fold.shrink.shape[0]
    n_train, n_batch = y_centred.shape
    residual_buffer = workspace.view("residual", n_train, n_batch)
    scaled_z = workspace.view("scaled_z", z.shape[0], n_batch)
    errors = ops.empty((n_alphas, n_batch))
    for index in range(n_alphas):
        ops.multiply(fold.shrink[index][:, None], z, out=scaled_z)  # (k, n_batch)
        residual = ops.minus_product(y_centred, fold.u, scaled_z, out=residual_buffer)
        residual *= fold.inverse_leverage[index][:, None]  # (n_train, n_targets_batch)
        errors[index] = ops.column_sum_of_squares(residual)
    return errors


def _near_ties(
    ops: Ops, errors: Any, sum_of_squares: Any, rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """Columns whose smallest LOO errors are within float32 rounding of each other.

    The float32 rounding error of a LOO error scales with the target's centred sum of squares
    (the size of the terms the residual is the difference of) and with sqrt(rank), not with the
    error itself: a well-predicted target has a small error computed from large terms.

    Parameters
    ----------
    errors : array of shape (n_alphas, n_batch)
        Float32 sums of squared LOO residuals.
    sum_of_squares : array of shape (n_batch,)
        Each target's centred sum of squares on the training part.
    rank : int
        Rank of the training part's SVD.

    Returns
    -------
    columns : int ndarray of shape (n_ties,)
    candidates : bool ndarray of shape (n_alphas, n_ties)
        The alphas whose error is that close to the column's smallest.
    """
    errors = ops.numpy(errors)  # (n_alphas, n_batch), a view on CPU
    unit = float(np.finfo(np.float32).eps) * np.sqrt(rank)
    margin = _NEAR_TIE_UNITS * unit * ops.numpy(sum_of_squares)  # (n_batch,)
    close = errors <= errors.min(0) + margin
    columns = np.flatnonzero(close.sum(0) > 1)
    return columns, close[:, columns]


def _exact_loo_choice(exact: _ExactLoo, y_train: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Alpha index per column from LOO errors computed in float64, among candidate alphas.

    Parameters
    ----------
    exact : the fold's float64 LOO factors.
    y_train : ndarray of shape (n_train, n_columns)
        The columns' training rows, as given (not centred).
    candidates : bool ndarray of shape (n_alphas, n_columns)
        Alphas to compare per column (the others are not computed).

    Returns
    -------
    best : int ndarray of shape (n_columns,), first minimum on ties.
    """
    linalg = exact.ops
    y_centred = linalg.float64(y_train)
    y_centred = y_centred - y_centred.mean(0)
    z = exact.u.T @ y_centred  # (k, n_columns)
    errors = np.full(candidates.shape, np.inf)  # (n_alphas, n_columns)
    for index in np.flatnonzero(candidates.any(1)):
        columns = np.flatnonzero(candidates[index])
        selected = linalg.indices(columns)
        fitted = exact.u @ (exact.shrink[index][:, None] * z[:, selected])  # (n_train, n_selected)
        residual = y_centred[:, selected] - fitted
        residual *= exact.inverse_leverage[index][:, None]
        errors[index, columns] = linalg.numpy(linalg.column_sum_of_squares(residual))
    return errors.argmin(0)


def _kfold_errors(
    ops: Ops,
    inner_folds: list[tuple[Any, Any, _Decomposition]],
    y_train: Any,
) -> Any:
    """Validation mean squared error averaged over inner folds, (n_alphas, n_targets_batch)."""
    errors = None
    for train_rows, validation_rows, fold in inner_folds:
        y_fit = y_train[train_rows]
        y_mean = y_fit.mean(0)
        z = fold.u.T @ (y_fit - y_mean)  # (k, n_targets_batch)
        y_validation = y_train[validation_rows] - y_mean  # (n_val, n_targets_batch)
        fold_errors = ops.empty((fold.coef_factor.shape[0], y_fit.shape[1]))
        for index in range(fold.coef_factor.shape[0]):
            residual = ops.minus_product(
                y_validation, fold.test_projection, fold.coef_factor[index][:, None] * z
            )
            fold_errors[index] = ops.column_sum_of_squares(residual) / y_validation.shape[0]
        errors = fold_errors if errors is None else errors + fold_errors
    return errors / len(inner_folds)


def _prepare_inner_folds(
    ops: Ops,
    x_train: np.ndarray,
    alphas: np.ndarray,
    n_inner: int,
    groups_train: np.ndarray | None,
) -> list[tuple[Any, Any, _Decomposition]]:
    n_train = x_train.shape[0]
    if n_train < n_inner:
        raise ValueError(
            f"an outer training part of {n_train} stimuli cannot be split into inner={n_inner} "
            "folds; use fewer inner folds or inner='loo'"
        )
    if groups_train is not None:
        n_groups = np.unique(groups_train).size
        if n_groups < n_inner:
            raise ValueError(
                f"an outer training part holds {n_groups} groups, fewer than inner={n_inner}"
            )
        splits = GroupKFold(n_splits=n_inner).split(x_train, groups=groups_train)
    else:
        splits = KFold(n_splits=n_inner).split(x_train)
    return [
        (
            ops.indices(fit_rows),
            ops.indices(validation_rows),
            _decompose(ops, x_train[fit_rows], x_train[validation_rows], alphas, loo=False),
        )
        for fit_rows, validation_rows in splits
    ]


def fit_encoding(
    X: np.ndarray,
    Y: np.ndarray,
    config: EncodingConfig | None = None,
    *,
    groups: np.ndarray | None = None,
    prediction_sink: PredictionSink | None = None,
    **settings: Any,
) -> EncodingResult:
    """Cross-validated ridge from X to every column of Y, with a per-target penalty.

    Parameters
    ----------
    X : ndarray of shape (n_stimuli, n_features)
        Predictors (e.g. one layer's activations).
    Y : ndarray of shape (n_stimuli, n_targets)
        Responses (voxels, vertices, or MEG sensor x time pairs flattened).
    config : EncodingConfig, optional
        The settings below, as one object (default ``EncodingConfig()``); keyword ``settings``
        replace some of its fields (``fit_encoding(X, Y, n_folds=3)``). ``direction`` is not
        used here (see :func:`fit_mapping`).
    groups : array of shape (n_stimuli,) or None
        Group label per stimulus; folds (outer, and inner when ``inner`` is an int) never
        split a group. Leave-one-out ignores groups.
    prediction_sink : callable, optional
        Called with the held-out predictions of every (fold, target batch), see
        :data:`PredictionSink` (e.g. to bootstrap scores without keeping the predictions).

    The fields of :class:`~brainalign.probe.config.EncodingConfig`:

    alphas : array of shape (n_alphas,), default=``np.logspace(0, 8, 10)``
        Candidate ridge penalties, all positive.
    n_folds : int, default=5
        Number of outer folds (see :func:`outer_splits`).
    inner : "loo" or int, default="loo"
        How alpha is chosen inside each training part: efficient leave-one-out (matches
        scikit-learn ``RidgeCV``) or that many contiguous inner K-folds.
    backend : {"auto", "numpy", "torch", "torch_cuda"}, default="auto"
        "auto" is torch on CUDA when available, else torch on CPU.
    dtype : {"float32", "float64"} or None, default=None
        Working dtype of the large products; None is float32 on torch and float64 on numpy.
        SVDs are always float64.
    target_batch_size : int or None, default=None
        Targets per batch; None picks equal batches of at most 2**21 / n_stimuli targets on
        CPU (a ~8 MiB float32 block) and 2**22 / n_stimuli on CUDA (~16 MiB); peak working
        memory is about three such blocks, plus a cast copy of the batch when Y's dtype
        differs from the working dtype.
    shuffle : bool, default=False
        Shuffle stimuli before the outer KFold (with ``seed``); default contiguous folds.
    seed : int, default=0
        Random state of the shuffled outer folds.

    Returns
    -------
    result : EncodingResult
        ``r`` (n_targets,), ``r_per_fold`` and ``alphas`` (n_folds, n_targets).

    Raises
    ------
    ValueError
        Fewer stimuli than folds, X/Y row mismatch, NaN or infinite values, bad alphas.
    """
    config = replace(config or EncodingConfig(), **settings)
    n_folds, inner, target_batch_size = config.n_folds, config.inner, config.target_batch_size
    X, Y, alpha_grid, groups = _check_inputs(X, Y, config.alphas, n_folds, inner, groups)
    ops = resolve_ops(config.backend, config.dtype)
    n_stimuli, n_targets = Y.shape
    if target_batch_size is None:
        on_cuda = ops.kind == "torch" and ops.device.type == "cuda"
        batch_elements = _AUTO_BATCH_ELEMENTS_CUDA if on_cuda else _AUTO_BATCH_ELEMENTS
        n_batches = -(-n_targets * n_stimuli // batch_elements)  # ceil
        target_batch_size = max(1, -(-n_targets // n_batches))  # equal-sized batches
    if target_batch_size < 1:
        raise ValueError(f"target_batch_size must be positive, got {target_batch_size}")
    loo = inner == "loo"
    splits = outer_splits(
        n_stimuli, n_folds, shuffle=config.shuffle, seed=config.seed, groups=groups
    )

    folds = []
    for train_rows, test_rows in splits:
        inner_folds = None
        if not loo:
            groups_train = None if groups is None else groups[train_rows]
            inner_folds = _prepare_inner_folds(ops, X[train_rows], alpha_grid, inner, groups_train)
        decomposition = _decompose(ops, X[train_rows], X[test_rows], alpha_grid, loo=loo)
        folds.append((ops.indices(train_rows), ops.indices(test_rows), decomposition, inner_folds))

    r_per_fold = np.empty((n_folds, n_targets))
    chosen_alphas = np.empty((n_folds, n_targets))
    # Big working arrays live in a workspace allocated once and reused by every batch, fold and
    # alpha: no per-step (n_train, n_batch) allocations that the C allocator may keep around.
    workspace = Workspace(
        ops,
        n_batch=min(target_batch_size, n_targets),
        n_train=max(len(train_rows) for train_rows, _ in splits),
        n_test=max(len(test_rows) for _, test_rows in splits),
        rank=max(fold[2].u.shape[1] for fold in folds),
        loo=loo,
    )
    for start in range(0, n_targets, target_batch_size):
        batch = slice(start, min(start + target_batch_size, n_targets))
        y_batch = ops.work(Y[:, batch])  # (n_stimuli, n_batch), a view when no cast is needed
        n_batch = batch.stop - batch.start
        for fold_index, (train_rows, test_rows, fold, inner_folds) in enumerate(folds):
            n_train, rank = train_rows.shape[0], fold.u.shape[1]
            y_train = ops.take_rows(
                y_batch, train_rows, out=workspace.view("train", n_train, n_batch)
            )  # (n_train, n_batch)
            z = workspace.view("z", rank, n_batch)
            if loo:
                y_centred = y_train
                y_centred -= y_train.mean(0)  # in place
                ops.matmul(fold.u.T, y_centred, out=z)  # (k, n_batch)
                errors = _loo_errors(ops, fold, y_centred, z, workspace)
                if fold.exact is not None:
                    sum_of_squares = ops.column_sum_of_squares(y_centred)  # (n_batch,)
            else:
                ops.matmul(fold.u.T, y_train - y_train.mean(0), out=z)  # (k, n_batch)
                errors = _kfold_errors(ops, inner_folds, y_train)
            best = errors.argmin(0)  # (n_batch,) first minimum wins ties
            if fold.exact is not None:
                # Where two alphas' float32 errors are within rounding of each other, the
                # float32 choice may differ from the exact one; decide those few in float64.
                ties, candidates = _near_ties(ops, errors, sum_of_squares, rank)
                if ties.size:
                    rows = splits[fold_index][0]
                    y_ties = Y[np.ix_(rows, batch.start + ties)]  # (n_train, n_ties)
                    with BLAS.limit(limits=1, user_api="blas"):  # see for_decomposition
                        exact_best = _exact_loo_choice(fold.exact, y_ties, candidates)
                    best[ops.indices(ties)] = ops.indices(exact_best)
            weights = z
            weights *= fold.coef_factor[best].T  # (k, n_batch), in place
            # The intercept (training mean of Y) is left out of the prediction: Pearson R
            # ignores it, and adding it in float32 would round away heavily shrunk predictions.
            n_test = test_rows.shape[0]
            centred_prediction = ops.matmul(
                fold.test_projection, weights, out=workspace.view("prediction", n_test, n_batch)
            )  # (n_test, n_batch)
            y_test = ops.take_rows(
                y_batch, test_rows, out=workspace.view("test", n_test, n_batch)
            )  # (n_test, n_batch)
            if prediction_sink is not None:  # copies: the R below overwrites both buffers
                prediction_sink(
                    fold_index,
                    splits[fold_index][1],
                    batch,
                    ops.numpy(centred_prediction).copy(),
                    ops.numpy(y_test).copy(),
                )
            r = pearson_r_overwriting(ops, centred_prediction, y_test)
            r_per_fold[fold_index, batch] = ops.numpy(r)
            chosen_alphas[fold_index, batch] = alpha_grid[ops.numpy(best)]
    return EncodingResult(
        r=r_per_fold.mean(axis=0),
        r_per_fold=r_per_fold,
        alphas=chosen_alphas,
        test_indices=tuple(test for _, test in splits),
    )


def fit_mapping(
    features: np.ndarray,
    brain: np.ndarray,
    config: EncodingConfig | None = None,
    *,
    groups: np.ndarray | None = None,
    prediction_sink: PredictionSink | None = None,
    **settings: Any,
) -> EncodingResult:
    """Ridge mapping between model features and brain data in the config's direction.

    Parameters
    ----------
    features : ndarray of shape (n_stimuli, n_features)
        Model features (e.g. 50 PCA components of an LLM layer).
    brain : ndarray of shape (n_stimuli, n_brain_targets)
        Brain data (e.g. MEG sensors at one time sample).
    config : EncodingConfig, optional
        ``config.direction`` "encoding": features -> brain, R per brain target (Study A);
        "decoding": brain -> features, R per feature dimension (Study C's published
        direction; for MEG time courses call it once per time sample). Keyword ``settings``
        replace fields, as in :func:`fit_encoding`.
    groups, prediction_sink
        As in :func:`fit_encoding`.

    Returns
    -------
    result : EncodingResult
        ``result.direction`` records the direction.
    """
    config = replace(config or EncodingConfig(), **settings)
    if config.direction == "encoding":
        predictors, targets = features, brain
    else:
        predictors, targets = brain, features
    result = fit_encoding(
        predictors, targets, config, groups=groups, prediction_sink=prediction_sink
    )
    return replace(result, direction=config.direction)
