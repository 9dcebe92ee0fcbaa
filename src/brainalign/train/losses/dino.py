"""DINO loss on the CLS-token head: cross-entropy between teacher targets and student crops.

Pairs are always within one image. Global part: student global crop ``s`` against teacher crop
``t`` with ``s != t``; local part: every local crop against every teacher crop. Each part is the
mean over its pairs (and over images); the parts are weighted by their number of terms, which
for 2 global and L local crops is 2 / (2 + 2L) and 2L / (2 + 2L) (RECIPE.md, "Losses").

Example::

    teacher_probs = sinkhorn_knopp(teacher_logits.flatten(0, 1), 0.07).view(2, B, K)
    loss = DINOLoss()(student_global, student_local, teacher_probs)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DINOLoss"]


def _pair_cross_entropy_sums(student_log_probs: Tensor, teacher_probs: Tensor) -> Tensor:
    """Cross-entropy summed over images for every (student crop, teacher crop) pair.

    Parameters
    ----------
    student_log_probs : Tensor of shape (n_student_crops, batch, n_prototypes)
    teacher_probs : Tensor of shape (n_teacher_crops, batch, n_prototypes)

    Returns
    -------
    Tensor of shape (n_student_crops, n_teacher_crops)
        ``-sum_b sum_k teacher[t, b, k] * student[s, b, k]``.
    """
    return -torch.einsum("sbk,tbk->st", student_log_probs, teacher_probs)


class DINOLoss(nn.Module):
    """Multi-crop DINO cross-entropy with the DINOv3 term weighting.

    The module has no state (no centering buffer: teacher targets come from
    :func:`~brainalign.train.losses.sinkhorn.sinkhorn_knopp`).
    """

    def forward(
        self,
        student_global_logits: Tensor,
        student_local_logits: Tensor | None,
        teacher_probs: Tensor,
        student_temp: float = 0.1,
    ) -> Tensor:
        """Compute the loss.

        Parameters
        ----------
        student_global_logits : Tensor of shape (n_global_crops, batch, n_prototypes)
            Student head logits for the global crops (n_global_crops is 2 in the recipe).
        student_local_logits : Tensor of shape (n_local_crops, batch, n_prototypes) or None
            Student head logits for the local crops; None (or 0 crops) when there are none.
        teacher_probs : Tensor of shape (n_global_crops, batch, n_prototypes)
            Teacher targets for the same global crops, in the same crop order; rows sum to 1.
        student_temp : float, default=0.1
            Student softmax temperature (> 0).

        Returns
        -------
        Tensor of shape ()
            Float32 scalar loss.
        """
        self._check_shapes(student_global_logits, student_local_logits, teacher_probs)
        if not student_temp > 0:
            raise ValueError(f"DINOLoss: student_temp must be > 0, got {student_temp}")
        n_global, batch, _ = student_global_logits.shape
        teacher = teacher_probs.float()  # (G, B, K)

        global_log_probs = torch.log_softmax(student_global_logits.float() / student_temp, dim=-1)
        global_pairs = _pair_cross_entropy_sums(global_log_probs, teacher)  # (G, G)
        global_sum = global_pairs.sum() - global_pairs.diagonal().sum()  # s != t only
        n_global_terms = n_global * (n_global - 1)

        n_local = 0 if student_local_logits is None else student_local_logits.shape[0]
        n_local_terms = n_local * n_global
        if n_local_terms > 0:
            local_log_probs = torch.log_softmax(student_local_logits.float() / student_temp, dim=-1)
            local_sum = _pair_cross_entropy_sums(local_log_probs, teacher).sum()  # (L, G) -> ()
        else:
            local_sum = global_sum.new_zeros(())

        # Mean per part, weighted by its share of terms == mean over all terms and images.
        n_terms = n_global_terms + n_local_terms
        return (global_sum + local_sum) / (n_terms * batch)

    @staticmethod
    def _check_shapes(
        student_global_logits: Tensor, student_local_logits: Tensor | None, teacher_probs: Tensor
    ) -> None:
        """Raise a ValueError naming the argument whose shape does not fit."""
        if student_global_logits.ndim != 3:
            raise ValueError(
                "DINOLoss: student_global_logits must be (n_global_crops, batch, n_prototypes), "
                f"got shape {tuple(student_global_logits.shape)}"
            )
        if teacher_probs.shape != student_global_logits.shape:
            raise ValueError(
                f"DINOLoss: teacher_probs shape {tuple(teacher_probs.shape)} must equal "
                f"student_global_logits shape {tuple(student_global_logits.shape)} "
                "(same global crops, same images, same prototypes)"
            )
        n_global, batch, n_prototypes = student_global_logits.shape
        if batch == 0:
            raise ValueError("DINOLoss: the batch is empty (second axis of the logits is 0)")
        n_local = 0
        if student_local_logits is not None:
            if student_local_logits.ndim != 3 or student_local_logits.shape[1:] != (
                batch,
                n_prototypes,
            ):
                raise ValueError(
                    "DINOLoss: student_local_logits must be (n_local_crops, "
                    f"{batch}, {n_prototypes}), got shape {tuple(student_local_logits.shape)}"
                )
            n_local = student_local_logits.shape[0]
        if n_global * (n_global - 1) + n_local * n_global == 0:
            raise ValueError(
                f"DINOLoss: no crop pairs with {n_global} global and {n_local} local crops; "
                "pass at least 2 global crops, or 1 global crop and some local crops"
            )
