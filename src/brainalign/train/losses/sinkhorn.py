"""Sinkhorn-Knopp teacher targets (DINOv3 replaces EMA centering with this).

The recipe (see RECIPE.md, "Teacher targets"): ``P = exp(logits / temperature)`` over a
(samples x prototypes) matrix, divided by its total; then ``n_iterations`` rounds of "normalise
each prototype column (divide by its sum, then by K)" and "normalise each sample row (divide by
its sum, then by the number of samples N)"; finally multiply by N so every row sums to 1.

Every global factor in that recipe (the total sum, 1/K, 1/N and the final xN) cancels in the very
next normalisation, so the result equals alternating column and row normalisation of ``P``,
ending with a row normalisation. This module runs exactly that, in the log domain and in
float32, so large logits or small temperatures never overflow ``exp`` (the plain version turns
``exp(5 / 0.04)`` into ``inf`` and then NaN). Across processes only the per-prototype column
sums couple the ranks; they are all-reduced (as a max followed by a sum of shifted exponentials),
and each rank may hold a different number of samples, zero included. This makes the same
function serve the DINO targets (both global crops of all images) and the iBOT targets (the
masked patches of all images, a different count on each rank).

Example::

    probs = sinkhorn_knopp(teacher_logits, temperature=0.07)  # (N, K), rows sum to 1
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["sinkhorn_knopp"]


def _should_reduce(reduce: bool, group: dist.ProcessGroup | None) -> bool:
    """Whether the column sums must be all-reduced across processes."""
    if not reduce or not dist.is_available() or not dist.is_initialized():
        return False
    return dist.get_world_size(group) > 1


def _column_logsumexp(log_values: Tensor, distributed: bool, group: dist.ProcessGroup | None):
    """Log of each column's sum of ``exp(log_values)``, over the rows of every process.

    Parameters
    ----------
    log_values : Tensor of shape (n_samples, n_prototypes)
        Float32 log-domain matrix; ``n_samples`` may be 0 and may differ between processes.
    distributed : bool
        All-reduce across ``group`` when True.
    group : ProcessGroup or None
        Process group for the reductions (None: the default group).

    Returns
    -------
    Tensor of shape (n_prototypes,)
        ``log(sum over all samples of exp(log_values))`` per prototype column.
    """
    n_samples, n_prototypes = log_values.shape
    if n_samples > 0:
        column_max = log_values.amax(dim=0)  # (K,)
    else:
        column_max = log_values.new_full((n_prototypes,), float("-inf"))
    if distributed:
        dist.all_reduce(column_max, op=dist.ReduceOp.MAX, group=group)
    # A column is -inf everywhere only when no process holds any sample; shift by 0 there.
    shift = torch.where(torch.isfinite(column_max), column_max, torch.zeros_like(column_max))
    column_sum = torch.exp(log_values - shift).sum(dim=0)  # (K,), >= 1 where the max lives
    if distributed:
        dist.all_reduce(column_sum, op=dist.ReduceOp.SUM, group=group)
    return shift + torch.log(column_sum)


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: Tensor,
    temperature: float,
    n_iterations: int = 3,
    *,
    reduce: bool = True,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """Turn teacher logits into Sinkhorn-Knopp balanced targets.

    Parameters
    ----------
    teacher_logits : Tensor of shape (n_samples, n_prototypes)
        Teacher head outputs for this process's samples (for DINO: both global crops of every
        image, stacked; for iBOT: the masked patches only). Any float dtype; computed in float32.
        ``n_samples`` may differ between processes and may be 0.
    temperature : float
        Teacher temperature (> 0), e.g. warmed up from 0.04 to 0.07.
    n_iterations : int, default=3
        Rounds of column-then-row normalisation (>= 1). DINOv3 uses 3.
    reduce : bool, default=True
        When torch.distributed is initialised with more than one process, all-reduce the
        per-prototype column sums so the normalisation is over the samples of all processes.
        Every process in ``group`` must then call this function (also one with no samples).
    group : ProcessGroup or None, default=None
        Process group for the all-reduces; None means the default group.

    Returns
    -------
    probs : Tensor of shape (n_samples, n_prototypes), float32
        Targets; each row sums to 1 and, summed over all processes, each prototype column
        approaches ``n_samples_total / n_prototypes``. No gradient flows through.
    """
    if not isinstance(teacher_logits, Tensor) or teacher_logits.ndim != 2:
        shape = getattr(teacher_logits, "shape", type(teacher_logits).__name__)
        raise ValueError(
            f"sinkhorn_knopp: teacher_logits must be a 2-D tensor (n_samples, n_prototypes), "
            f"got {shape}; flatten crops/patches into the first axis first."
        )
    if teacher_logits.shape[1] == 0:
        raise ValueError("sinkhorn_knopp: teacher_logits has 0 prototypes (second axis).")
    if not teacher_logits.is_floating_point():
        raise ValueError(
            f"sinkhorn_knopp: teacher_logits must be a float tensor, got {teacher_logits.dtype}"
        )
    if not temperature > 0:
        raise ValueError(f"sinkhorn_knopp: temperature must be > 0, got {temperature}")
    if int(n_iterations) != n_iterations or n_iterations < 1:
        raise ValueError(
            f"sinkhorn_knopp: n_iterations must be an integer >= 1, got {n_iterations}"
        )

    distributed = _should_reduce(reduce, group)
    with torch.autocast(device_type=teacher_logits.device.type, enabled=False):
        log_q = teacher_logits.float() / temperature  # (N, K), log of P up to a constant
        for _ in range(int(n_iterations)):
            log_q = log_q - _column_logsumexp(log_q, distributed, group)  # columns sum to 1
            log_q = torch.log_softmax(log_q, dim=1)  # rows sum to 1
        return torch.exp(log_q)  # (N, K)
