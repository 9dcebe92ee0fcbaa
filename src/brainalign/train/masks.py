"""iBOT block masks for the global crops (BEiT-style blocks topped up with random patches).

DINOv3 masks a fixed share of the global-crop images (half by default). Their masking ratios
are spread evenly over ``ratio_range``: the range is cut into as many equal bins as there are
masked images and each masked image draws its ratio from its own bin, so one batch always covers
the whole range. Each mask is built from random rectangles (area at least ``min_block_patches``,
aspect ratio log-uniform in [0.3, 1/0.3]) that never overshoot the target count; whatever the
rectangles cannot fill is topped up with random single patches, so the count is exact.

Example::

    generator = torch.Generator().manual_seed(0)
    masks = block_masks(2 * batch_size, (14, 14), generator=generator)  # (2B, 196) bool
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["block_masks"]

_MIN_ASPECT = 0.3
_MAX_FAILED_BLOCKS = 10  # consecutive rejected rectangles before topping up at random


def _masked_counts(
    n_masked_images: int,
    n_patches: int,
    ratio_range: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Number of masked patches for each masked image, ratios spread evenly over the range.

    Returns
    -------
    ndarray of shape (n_masked_images,), int
        Counts in ``[ceil(low * n_patches), floor(high * n_patches)]`` and at least 1 (when the
        grid is too coarse for that interval, ``round(ratio * n_patches)`` clipped to
        ``[1, n_patches]``), in increasing-ratio order.
    """
    low, high = ratio_range
    bin_edges = np.linspace(low, high, n_masked_images + 1)
    ratios = rng.uniform(bin_edges[:-1], bin_edges[1:])  # one ratio per bin
    counts = np.rint(ratios * n_patches).astype(np.int64)
    min_count = max(1, math.ceil(low * n_patches - 1e-9))
    max_count = math.floor(high * n_patches + 1e-9)
    if max_count < min_count:
        min_count, max_count = 1, n_patches
    return np.clip(counts, min_count, max_count)


def _block_mask(
    height: int,
    width: int,
    n_masked: int,
    min_block_patches: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One mask of exactly ``n_masked`` patches made of random rectangles plus random top-up.

    Returns
    -------
    ndarray of shape (height, width), bool
    """
    mask = np.zeros((height, width), dtype=bool)
    remaining = n_masked
    log_aspect_range = (math.log(_MIN_ASPECT), -math.log(_MIN_ASPECT))
    failed = 0
    while remaining >= min_block_patches and failed < _MAX_FAILED_BLOCKS:
        area = rng.uniform(min_block_patches, remaining)
        aspect = math.exp(rng.uniform(*log_aspect_range))
        block_height = round(math.sqrt(area * aspect))
        block_width = round(math.sqrt(area / aspect))
        if not (1 <= block_height <= height and 1 <= block_width <= width):
            failed += 1
            continue
        top = int(rng.integers(0, height - block_height + 1))
        left = int(rng.integers(0, width - block_width + 1))
        block = mask[top : top + block_height, left : left + block_width]  # view into mask
        n_new = block.size - int(block.sum())
        if 0 < n_new <= remaining:
            block[...] = True
            remaining -= n_new
            failed = 0
        else:
            failed += 1
    if remaining > 0:
        free = np.flatnonzero(~mask)
        mask.flat[rng.choice(free, size=remaining, replace=False)] = True
    return mask


def block_masks(
    n_images: int,
    grid: tuple[int, int],
    *,
    mask_probability: float = 0.5,
    ratio_range: tuple[float, float] = (0.1, 0.5),
    generator: torch.Generator | None = None,
    min_block_patches: int = 4,
) -> torch.Tensor:
    """Draw iBOT masks for a batch of global-crop images.

    Parameters
    ----------
    n_images : int
        Number of global-crop images (e.g. 2 x batch size), >= 0.
    grid : tuple of (int, int)
        Patch grid ``(grid_height, grid_width)`` of one crop, e.g. (14, 14) for 224 px / 16.
    mask_probability : float, default=0.5
        Share of images that get a mask: exactly ``floor(n_images * mask_probability + 0.5)``
        images (round half up), chosen at random; the others are all False.
    ratio_range : tuple of (float, float), default=(0.1, 0.5)
        Range of masking ratios, ``0 <= low <= high <= 1`` and ``high > 0``. Every masked image
        has at least one masked patch.
    generator : torch.Generator or None, default=None
        Source of randomness (one draw seeds the rest); None uses torch's global generator.
        Same generator state, same masks.
    min_block_patches : int, default=4
        Smallest rectangle area, in patches (>= 1).

    Returns
    -------
    masks : BoolTensor of shape (n_images, grid_height * grid_width)
        True where the student's patch is replaced by the mask token (row-major patch order).
    """
    _check_arguments(n_images, grid, mask_probability, ratio_range, min_block_patches)
    height, width = (int(side) for side in grid)
    n_patches = height * width
    n_masked_images = math.floor(n_images * mask_probability + 0.5)

    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    counts = _masked_counts(n_masked_images, n_patches, ratio_range, rng)
    masked_images = rng.permutation(n_images)[:n_masked_images]

    masks = np.zeros((n_images, height, width), dtype=bool)
    for image, n_masked in zip(masked_images, counts):
        masks[image] = _block_mask(height, width, int(n_masked), min_block_patches, rng)
    return torch.from_numpy(masks.reshape(n_images, n_patches))


def _check_arguments(
    n_images: int,
    grid: tuple[int, int],
    mask_probability: float,
    ratio_range: tuple[float, float],
    min_block_patches: int,
) -> None:
    """Raise a ValueError naming the first bad argument of :func:`block_masks`."""
    if int(n_images) != n_images or n_images < 0:
        raise ValueError(f"block_masks: n_images must be an integer >= 0, got {n_images}")
    if len(grid) != 2 or any(int(side) != side or side < 1 for side in grid):
        raise ValueError(
            f"block_masks: grid must be (grid_height, grid_width) positive integers, got {grid}"
        )
    if not 0.0 <= mask_probability <= 1.0:
        raise ValueError(f"block_masks: mask_probability must be in [0, 1], got {mask_probability}")
    if len(ratio_range) != 2 or not (0.0 <= ratio_range[0] <= ratio_range[1] <= 1.0):
        raise ValueError(
            f"block_masks: ratio_range must be (low, high) with 0 <= low <= high <= 1, "
            f"got {ratio_range}"
        )
    if ratio_range[1] == 0.0:
        raise ValueError("block_masks: ratio_range high must be > 0 (nothing would be masked)")
    if int(min_block_patches) != min_block_patches or min_block_patches < 1:
        raise ValueError(
            f"block_masks: min_block_patches must be an integer >= 1, got {min_block_patches}"
        )
