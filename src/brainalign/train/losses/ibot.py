"""iBOT masked-patch loss on the patch head, with DINOv3's per-image weighting.

Cross-entropy between the teacher targets and the student log-softmax, on masked patches only.
Each masked patch is weighted by 1 / (masked patches in its image), so every masked image counts
the same whatever its masking ratio; the weighted sum is divided by the number of global-crop
images *including* the unmasked ones (RECIPE.md, "Losses").

Example::

    index, weights = masked_patch_indices_and_weights(masks)  # masks: (n_images, n_patches)
    student_masked = student_patch_logits.flatten(0, 1)[index]  # (M, K)
    teacher_probs = sinkhorn_knopp(teacher_patch_logits.flatten(0, 1)[index], 0.07)
    loss = IBOTPatchLoss()(student_masked, teacher_probs, weights, n_images=masks.shape[0])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["IBOTPatchLoss", "masked_patch_indices_and_weights"]


def masked_patch_indices_and_weights(masks: Tensor) -> tuple[Tensor, Tensor]:
    """Flat indices of the masked patches and their iBOT weights.

    Parameters
    ----------
    masks : BoolTensor of shape (n_images, n_patches)
        True where a patch is masked for the student.

    Returns
    -------
    flat_indices : LongTensor of shape (n_masked,)
        Row-major indices into the flattened ``(n_images * n_patches)`` axis, image by image.
    weights : Tensor of shape (n_masked,), float32
        ``1 / (number of masked patches in that patch's image)``; each masked image's weights
        sum to 1.
    """
    if not isinstance(masks, Tensor) or masks.ndim != 2 or masks.dtype != torch.bool:
        described = (
            f"{masks.dtype} tensor of shape {tuple(masks.shape)}"
            if isinstance(masks, Tensor)
            else type(masks).__name__
        )
        raise ValueError(
            f"masked_patch_indices_and_weights: masks must be a bool tensor (n_images, n_patches), "
            f"got {described}"
        )
    n_masked_per_image = masks.sum(dim=1)  # (n_images,)
    flat_indices = torch.nonzero(masks.flatten(), as_tuple=False).squeeze(1)  # (M,)
    n_patches = masks.shape[1]
    image_of_patch = torch.div(flat_indices, n_patches, rounding_mode="floor")  # (M,)
    weights = 1.0 / n_masked_per_image[image_of_patch].float()  # (M,)
    return flat_indices, weights


class IBOTPatchLoss(nn.Module):
    """Weighted cross-entropy over masked patches (no state, no centering)."""

    def forward(
        self,
        student_patch_logits: Tensor,
        teacher_patch_probs: Tensor,
        mask_weights: Tensor,
        n_images: int,
        student_temp: float = 0.1,
    ) -> Tensor:
        """Compute the loss.

        Parameters
        ----------
        student_patch_logits : Tensor of shape (n_masked, n_prototypes)
            Student patch-head logits of the masked patches only.
        teacher_patch_probs : Tensor of shape (n_masked, n_prototypes)
            Teacher targets for the same patches (teacher saw them unmasked); rows sum to 1.
        mask_weights : Tensor of shape (n_masked,)
            ``1 / (masked patches in that image)``, see :func:`masked_patch_indices_and_weights`.
        n_images : int
            Number of global-crop images on this process, masked or not (> 0).
        student_temp : float, default=0.1
            Student softmax temperature (> 0).

        Returns
        -------
        Tensor of shape ()
            Float32 scalar loss; 0 (still attached to the graph) when no patch is masked.
        """
        if student_patch_logits.ndim != 2:
            raise ValueError(
                "IBOTPatchLoss: student_patch_logits must be (n_masked, n_prototypes), got shape "
                f"{tuple(student_patch_logits.shape)}; select the masked patches first"
            )
        if teacher_patch_probs.shape != student_patch_logits.shape:
            raise ValueError(
                f"IBOTPatchLoss: teacher_patch_probs shape {tuple(teacher_patch_probs.shape)} must "
                f"equal student_patch_logits shape {tuple(student_patch_logits.shape)}"
            )
        if mask_weights.shape != student_patch_logits.shape[:1]:
            raise ValueError(
                f"IBOTPatchLoss: mask_weights shape {tuple(mask_weights.shape)} must be "
                f"({student_patch_logits.shape[0]},), one weight per masked patch"
            )
        if int(n_images) != n_images or n_images < 1:
            raise ValueError(f"IBOTPatchLoss: n_images must be an integer >= 1, got {n_images}")
        if not student_temp > 0:
            raise ValueError(f"IBOTPatchLoss: student_temp must be > 0, got {student_temp}")

        log_probs = torch.log_softmax(student_patch_logits.float() / student_temp, dim=-1)
        per_patch = -(teacher_patch_probs.float() * log_probs).sum(dim=-1)  # (M,)
        return (per_patch * mask_weights.float()).sum() / n_images
