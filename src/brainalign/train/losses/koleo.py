"""KoLeo regulariser: spread L2-normalised features by pushing nearest neighbours apart.

Loss = mean over samples of ``-log(distance to nearest other sample + eps)`` (Kozachenko-Leonenko
entropy estimator). Applied per global crop to the student's backbone CLS token, within this
process's batch only (RECIPE.md, "Losses").

Numerical safety (a frequent source of NaN in the reference): features are normalised with a
floor on the norm, the nearest-neighbour distance is ``sqrt(max(squared distance, eps**2))`` so
duplicate points give a finite loss ``-log(2 * eps)`` and a zero (not NaN) gradient, and the
computation runs in float32 even under autocast.

Example::

    koleo = KoLeoLoss()
    loss = 0.1 * sum(koleo(cls_tokens[crop]) for crop in range(2))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["KoLeoLoss"]


class KoLeoLoss(nn.Module):
    """Kozachenko-Leonenko nearest-neighbour loss on the unit sphere.

    Parameters
    ----------
    eps : float, default=1e-8
        Floor on distances and on feature norms; a pair of identical points contributes
        ``-log(2 * eps)`` (about 17.7 for 1e-8) instead of infinity.
    """

    def __init__(self, *, eps: float = 1e-8) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"KoLeoLoss: eps must be > 0, got {eps}")
        self.eps = float(eps)

    def forward(self, features: Tensor) -> Tensor:
        """Compute the loss.

        Parameters
        ----------
        features : Tensor of shape (batch, dim)
            Features of one crop for every image on this process (batch >= 2).

        Returns
        -------
        Tensor of shape ()
            Float32 scalar loss.
        """
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(
                "KoLeoLoss: features must be (batch, dim) with batch >= 2 (each sample needs a "
                f"neighbour), got shape {tuple(features.shape)}"
            )
        with torch.autocast(device_type=features.device.type, enabled=False):
            unit = nn.functional.normalize(features.float(), dim=1, eps=self.eps)  # (B, D)
            with torch.no_grad():
                similarity = unit @ unit.T  # (B, B)
                similarity.fill_diagonal_(float("-inf"))  # never pick oneself
                neighbour = similarity.argmax(dim=1)  # (B,) nearest = most similar on sphere
            squared = (unit - unit[neighbour]).pow(2).sum(dim=1)  # (B,)
            distance = squared.clamp_min(self.eps**2).sqrt()
            return -torch.log(distance + self.eps).mean()
