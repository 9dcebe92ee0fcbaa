"""The array layer under the ridge solvers: numpy or torch (CPU or CUDA), one interface.

:class:`Ops` holds the few operations the solvers in :mod:`brainalign.probe.ridge` need
(products written into preallocated buffers, row gathers, column sums of squares, the small
float64 eigendecompositions), so each solver is written once for every backend.
:class:`Workspace` hands out the solver's reused buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

__all__ = [
    "BLAS",
    "Backend",
    "DType",
    "Ops",
    "Workspace",
    "check_finite",
    "pearson_r_overwriting",
    "resolve_ops",
]

Backend = Literal["auto", "numpy", "torch", "torch_cuda"]
DType = Literal["float32", "float64"]
BLAS = ThreadpoolController()  # created once: each threadpool_limits() call rescans libraries


@dataclass(frozen=True)
class Ops:
    """The few array operations the solver needs, for numpy or torch."""

    kind: Literal["numpy", "torch"]
    dtype: Any
    device: Any = None

    def work(self, array: Any) -> Any:
        """Copy or cast into the working dtype and device."""
        if self.kind == "numpy":
            return np.asarray(array, dtype=self.dtype)
        if isinstance(array, torch.Tensor):
            return array.to(device=self.device, dtype=self.dtype)
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def float64(self, array: np.ndarray) -> Any:
        if self.kind == "numpy":
            return np.asarray(array, dtype=np.float64)
        return torch.as_tensor(np.asarray(array), dtype=torch.float64, device=self.device)

    def for_decomposition(self) -> Ops:
        """Float64 operations for the small decompositions: torch on CUDA, else numpy.

        On CPU numpy's LAPACK is used even for the torch backend, on one BLAS thread for small
        matrices (see ``_decompose``): multi-threaded small eigendecompositions, torch's or
        numpy's, were measured 10-50x slower on a busy two-core machine.
        """
        if self.kind == "torch" and self.device.type == "cuda":
            return Ops("torch", torch.float64, self.device)
        return Ops("numpy", np.dtype(np.float64))

    def indices(self, index: np.ndarray) -> Any:
        if self.kind == "numpy":
            return index
        return torch.as_tensor(index, dtype=torch.long, device=self.device)

    def eigh(self, matrix: Any) -> tuple[Any, Any]:
        if self.kind == "numpy":
            return np.linalg.eigh(matrix)
        return torch.linalg.eigh(matrix)

    def sqrt(self, array: Any) -> Any:
        if self.kind == "numpy":
            return np.sqrt(array)
        return torch.sqrt(array)

    def empty(self, shape: tuple[int, ...]) -> Any:
        if self.kind == "numpy":
            return np.empty(shape, dtype=self.dtype)
        return torch.empty(shape, dtype=self.dtype, device=self.device)

    def minus_product(self, base: Any, left: Any, right: Any, out: Any = None) -> Any:
        """``base - left @ right`` in one new array, or written into ``out`` (not ``base``)."""
        if self.kind == "numpy":
            product = np.matmul(left, right, out=out)
            np.subtract(base, product, out=product)
            return product
        return torch.addmm(base, left, right, alpha=-1.0, out=out)

    def matmul(self, left: Any, right: Any, out: Any) -> Any:
        """``left @ right`` written into ``out``."""
        if self.kind == "numpy":
            return np.matmul(left, right, out=out)
        return torch.mm(left, right, out=out)

    def multiply(self, left: Any, right: Any, out: Any) -> Any:
        """Broadcast ``left * right`` written into ``out``."""
        if self.kind == "numpy":
            return np.multiply(left, right, out=out)
        return torch.mul(left, right, out=out)

    def take_rows(self, array: Any, rows: Any, out: Any) -> Any:
        """``array[rows]`` written into the preallocated ``out`` of shape (len(rows), ...)."""
        if self.kind == "numpy":
            return np.take(array, rows, axis=0, out=out, mode="clip")  # "raise" would buffer
        return torch.index_select(array, 0, rows, out=out)

    def column_sum_of_squares(self, matrix: Any) -> Any:
        if self.kind == "numpy":
            return np.einsum("ij,ij->j", matrix, matrix)
        return torch.linalg.vector_norm(matrix, dim=0).square_()

    def numpy(self, array: Any) -> np.ndarray:
        if self.kind == "numpy":
            return np.asarray(array)
        return array.detach().cpu().numpy()


def resolve_ops(backend: Backend, dtype: DType | None) -> Ops:
    if dtype not in (None, "float32", "float64"):
        raise ValueError(f"dtype must be 'float32', 'float64' or None, got {dtype!r}")
    if backend == "numpy":
        return Ops("numpy", np.dtype(dtype or "float64"))
    if backend not in ("auto", "torch", "torch_cuda"):
        raise ValueError(
            f"backend must be one of 'auto', 'numpy', 'torch', 'torch_cuda', got {backend!r}"
        )
    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    cuda = torch.cuda.is_available()
    if backend == "torch_cuda" and not cuda:
        raise ValueError("backend='torch_cuda' asked for but no CUDA device is available")
    use_cuda = backend == "torch_cuda" or (backend == "auto" and cuda)
    return Ops("torch", torch_dtype, torch.device("cuda" if use_cuda else "cpu"))


def check_finite(array: np.ndarray, name: str) -> None:
    finite = np.isfinite(array)
    if finite.all():
        return
    bad_rows, bad_columns = np.nonzero(~finite)
    n_nan = int(np.isnan(array).sum())
    n_inf = int((~finite).sum()) - n_nan
    raise ValueError(
        f"{name} has {n_nan} NaN and {n_inf} infinite value(s) in {np.unique(bad_rows).size} "
        f"row(s) and {np.unique(bad_columns).size} column(s) (first at row {bad_rows[0]}, "
        f"column {bad_columns[0]}); drop or impute those stimuli or columns before fitting"
    )


class Workspace:
    """Flat working buffers allocated once, handed out as contiguous (rows, columns) views.

    ``train`` and ``residual`` hold up to (n_train, n_batch), ``z`` and ``scaled_z`` up to
    (rank, n_batch), ``prediction`` and ``test`` up to (n_test, n_batch) elements.
    """

    def __init__(
        self, ops: Ops, n_batch: int, n_train: int, n_test: int, rank: int, loo: bool
    ) -> None:
        sizes = {"train": n_train, "z": rank, "prediction": n_test, "test": n_test}
        if loo:
            sizes.update(residual=n_train, scaled_z=rank)
        self._storage = {name: ops.empty((rows * n_batch,)) for name, rows in sizes.items()}

    def view(self, name: str, rows: int, columns: int) -> Any:
        return self._storage[name][: rows * columns].reshape(rows, columns)


def pearson_r_overwriting(ops: Ops, prediction: Any, observed: Any) -> Any:
    """Pearson R per column, as :func:`pearson_r`, but centring both inputs in place.

    Parameters
    ----------
    prediction, observed : arrays of shape (n_samples, n_columns)
        Overwritten (no (n_samples, n_columns) temporaries are allocated).

    Returns
    -------
    r : array of shape (n_columns,), NaN where either column is constant.
    """
    prediction -= prediction.mean(0)
    observed -= observed.mean(0)
    norm_product = ops.sqrt(ops.column_sum_of_squares(prediction)) * ops.sqrt(
        ops.column_sum_of_squares(observed)
    )
    prediction *= observed
    covariance = prediction.sum(0)  # (n_columns,)
    positive = norm_product > 0
    r = covariance / (norm_product + ~positive)  # no division by zero
    r[~positive] = float("nan")
    return r
