"""Gram anchoring: keep the student's patch-similarity structure close to an earlier teacher's.

Patch features of the student and of a frozen "Gram teacher" are L2-normalised, one
(patches x patches) cosine-similarity matrix is built per image for each, and the loss is the
mean squared difference over all entries (RECIPE.md, "Losses"; optional late training phase).

Example::

    loss = GramAnchoringLoss()(student_patches, gram_teacher_patches)  # both (B, N, D)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GramAnchoringLoss"]


def _patch_similarity(patches: Tensor, eps: float) -> Tensor:
    """Cosine similarity between all patch pairs of each image.

    Parameters
    ----------
    patches : Tensor of shape (batch, n_patches, dim)

    Returns
    -------
    Tensor of shape (batch, n_patches, n_patches)
    """
    unit = nn.functional.normalize(patches.float(), dim=-1, eps=eps)  # (B, N, D)
    return unit @ unit.transpose(1, 2)  # (B, N, N)


class GramAnchoringLoss(nn.Module):
    """MSE between student and Gram-teacher patch-similarity (Gram) matrices.

    Parameters
    ----------
    eps : float, default=1e-8
        Floor on feature norms in the L2 normalisation.
    """

    def __init__(self, *, eps: float = 1e-8) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"GramAnchoringLoss: eps must be > 0, got {eps}")
        self.eps = float(eps)

    def forward(self, student_patches: Tensor, teacher_patches: Tensor) -> Tensor:
        """Compute the loss.

        Parameters
        ----------
        student_patches : Tensor of shape (batch, n_patches, dim)
            Student patch features (backbone output, patch tokens only).
        teacher_patches : Tensor of shape (batch, n_patches, dim)
            Gram-teacher patch features of the same images and patches; treated as a constant
            (detached).

        Returns
        -------
        Tensor of shape ()
            Float32 scalar loss.
        """
        if student_patches.ndim != 3 or student_patches.shape != teacher_patches.shape:
            raise ValueError(
                "GramAnchoringLoss: student_patches and teacher_patches must both be "
                f"(batch, n_patches, dim) with equal shapes, got {tuple(student_patches.shape)} "
                f"and {tuple(teacher_patches.shape)}"
            )
        with torch.autocast(device_type=student_patches.device.type, enabled=False):
            student_gram = _patch_similarity(student_patches, self.eps)  # (B, N, N)
            with torch.no_grad():
                teacher_gram = _patch_similarity(teacher_patches.detach(), self.eps)  # (B, N, N)
            return nn.functional.mse_loss(student_gram, teacher_gram)
