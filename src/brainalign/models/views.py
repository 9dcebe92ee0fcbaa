"""Seeded per-image views: the same augmentation for probing objectives and training's.

A view of an image is drawn from the image's own seed (a hash of its pixels), the objective's
seed and the view index, so it never depends on the batch the image is in. Used by the probe's
invariance objective and by the DINO + iBOT gradient objective of training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SeededViews"]


@dataclass(frozen=True)
class SeededViews:
    """Per-image seeded augmentation, applied to a preprocessed batch on its device.

    Parameters
    ----------
    scale : tuple of float
        (min, max) fraction of the image area kept by the random resized crop.
    ratio : tuple of float
        (min, max) aspect ratio of the crop (drawn log-uniformly).
    flip_p : float
        Probability of a horizontal flip.
    brightness, contrast : float
        Multiplicative factors drawn uniformly in ``[1 - value, 1 + value]`` (0: none), applied
        on the [0, 1] pixel scale.
    """

    scale: tuple[float, float] = (0.32, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")
        if not (0.0 <= self.brightness < 1.0 and 0.0 <= self.contrast < 1.0):
            raise ValueError(
                f"brightness and contrast must be in [0, 1), got {self.brightness}, {self.contrast}"
            )

    def draw(self, seed: int, image_seed: int, view: int) -> tuple[np.ndarray, float, float]:
        """Parameters of one view: affine crop matrix (2, 3), brightness and contrast factors."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(image_seed), view]))
        area = rng.uniform(*self.scale)
        aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        width = min(1.0, math.sqrt(area * aspect))  # fractions of the image side
        height = min(1.0, math.sqrt(area / aspect))
        centre_x = rng.uniform(-(1.0 - width), 1.0 - width)  # grid_sample coordinates
        centre_y = rng.uniform(-(1.0 - height), 1.0 - height)
        flip = -1.0 if rng.random() < self.flip_p else 1.0
        brightness = rng.uniform(1.0 - self.brightness, 1.0 + self.brightness)
        contrast = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast)
        theta = np.array([[width * flip, 0.0, centre_x], [0.0, height, centre_y]])
        return theta, brightness, contrast

    def __call__(
        self,
        images: Tensor,
        image_seeds: Tensor,
        *,
        n_views: int,
        seed: int,
        preprocess: Any,
    ) -> Tensor:
        """Make ``n_views`` views of every image.

        Parameters
        ----------
        images : Tensor of shape (B, 3, H, W)
            Normalised with ``preprocess.mean`` / ``preprocess.std``.
        image_seeds : Tensor of shape (B,), int64
        n_views : int
        seed : int
            The objective's seed (mixed with each image's seed and the view index).
        preprocess : object with ``mean`` and ``std`` (3 floats each)
            Gives the normalisation, undone for the photometric changes and redone after.

        Returns
        -------
        Tensor of shape (n_views, B, 3, H, W), normalised like ``images``
        """
        n_images = images.shape[0]
        drawn = [
            self.draw(seed, image_seed, view)
            for view in range(n_views)
            for image_seed in image_seeds.tolist()
        ]  # view-major: row v * B + i
        options = {"device": images.device, "dtype": torch.float32}
        theta = torch.tensor(np.stack([d[0] for d in drawn]), **options)  # (V*B, 2, 3)
        brightness = torch.tensor([d[1] for d in drawn], **options).view(-1, 1, 1, 1)
        contrast = torch.tensor([d[2] for d in drawn], **options).view(-1, 1, 1, 1)
        repeated = images.float().repeat(n_views, 1, 1, 1)  # (V*B, 3, H, W)
        grid = F.affine_grid(theta, list(repeated.shape), align_corners=False)
        views = F.grid_sample(
            repeated, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        mean = torch.tensor(preprocess.mean, **options).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.std, **options).view(1, 3, 1, 1)
        pixels = views * std + mean  # [0, 1] scale
        image_mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
        pixels = ((pixels - image_mean) * contrast + image_mean) * brightness
        views = (pixels - mean) / std
        return views.view(n_views, n_images, *views.shape[1:])  # (V, B, 3, H, W)
