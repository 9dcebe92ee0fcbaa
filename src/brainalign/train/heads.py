"""The DINO / iBOT projection head: 3-layer MLP, L2-normalised bottleneck, prototypes."""

from __future__ import annotations

import itertools

import torch.nn.functional as F
from torch import Tensor, nn


class DINOHead(nn.Module):
    """MLP (GELU) -> L2-normalised bottleneck -> linear layer to the prototypes.

    Parameters
    ----------
    in_dim : int
        Backbone width.
    n_prototypes : int
        Output size K (65,536 at full scale).
    hidden_dim : int
        Width of the hidden MLP layers.
    bottleneck_dim : int
        Width of the normalised bottleneck.
    n_layers : int
        Number of MLP layers before the bottleneck normalisation (3 in DINOv3).
    """

    def __init__(
        self,
        in_dim: int,
        n_prototypes: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(width_in, width_out))
            if index < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, n_prototypes, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map features (..., in_dim) to prototype logits (..., n_prototypes)."""
        x = self.mlp(x)  # (..., bottleneck)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6)
        return self.last_layer(x)  # (..., K)
