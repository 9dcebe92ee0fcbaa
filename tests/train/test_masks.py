"""Tests for the iBOT block masks."""

from __future__ import annotations

import math
import time

import pytest
import torch

from brainalign.train.masks import block_masks


def _masks(n_images=64, grid=(14, 14), seed=0, **kwargs):
    return block_masks(n_images, grid, generator=torch.Generator().manual_seed(seed), **kwargs)


def _has_2x2_block(mask_2d: torch.Tensor) -> bool:
    corners = mask_2d[:-1, :-1] & mask_2d[1:, :-1] & mask_2d[:-1, 1:] & mask_2d[1:, 1:]
    return bool(corners.any())


def _adjacent_masked_pairs(mask_2d: torch.Tensor) -> int:
    horizontal = (mask_2d[:, :-1] & mask_2d[:, 1:]).sum()
    vertical = (mask_2d[:-1, :] & mask_2d[1:, :]).sum()
    return int(horizontal + vertical)


def test_half_of_images_masked_with_ratios_spread_over_range():
    grid = (12, 13)  # unequal sides so a transposed grid fails
    n_patches = 12 * 13
    masks = _masks(64, grid, ratio_range=(0.1, 0.5))
    assert masks.shape == (64, n_patches) and masks.dtype == torch.bool
    counts = masks.sum(dim=1)
    masked_counts = counts[counts > 0].sort().values
    assert len(masked_counts) == 32
    ratios = masked_counts.double() / n_patches
    assert ratios.min() >= 0.1 and ratios.max() <= 0.5
    # Evenly spread: the i-th smallest ratio lies in (about) the i-th of 32 equal bins.
    bin_edges = torch.linspace(0.1, 0.5, 33, dtype=torch.float64)
    half_patch = 0.5 / n_patches
    assert (ratios >= bin_edges[:-1] - half_patch).all()
    assert (ratios <= bin_edges[1:] + half_patch).all()


def test_masked_image_choice_is_random_not_the_first_half():
    masks = _masks(64)
    masked = masks.any(dim=1)
    assert masked[:32].sum() not in (0, 32)


@pytest.mark.parametrize(
    ("n_images", "probability", "expected"),
    [(5, 0.5, 3), (4, 0.5, 2), (7, 0.3, 2), (3, 0.0, 0), (3, 1.0, 3), (0, 0.5, 0)],
)
def test_number_of_masked_images_is_rounded_share(n_images, probability, expected):
    masks = _masks(n_images, (6, 5), mask_probability=probability)
    assert masks.shape == (n_images, 30)
    assert int(masks.any(dim=1).sum()) == expected


def test_single_masked_image_gets_exact_target_count():
    # A fixed ratio pins the target; blocks plus top-up must hit it exactly for every seed.
    for seed in range(20):
        masks = _masks(1, (14, 14), seed=seed, mask_probability=1.0, ratio_range=(0.3, 0.3))
        assert int(masks.sum()) == round(0.3 * 196)  # 58.8 -> 59


def test_exact_counts_when_blocks_cannot_fill_tiny_grid():
    # 2x3 grid with min_block_patches=4: ratio 0.5 -> 3 patches, below one block: top-up only.
    masks = _masks(4, (2, 3), mask_probability=1.0, ratio_range=(0.5, 0.5))
    assert masks.sum(dim=1).tolist() == [3, 3, 3, 3]


def test_same_seed_same_masks_different_seed_different_masks():
    first, again, other = _masks(seed=3), _masks(seed=3), _masks(seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_global_generator_used_when_none_given():
    torch.manual_seed(11)
    first = block_masks(8, (7, 7))
    torch.manual_seed(11)
    assert torch.equal(first, block_masks(8, (7, 7)))


def test_masks_are_blocks_not_scattered_patches():
    grid = (14, 14)
    masks = _masks(64, grid, seed=5).view(64, *grid)
    masked_images = [mask for mask in masks if mask.any()]
    low_ratio = min(masked_images, key=lambda mask: int(mask.sum()))
    assert int(low_ratio.sum()) <= math.ceil(0.11 * 196)
    assert _has_2x2_block(low_ratio)
    assert sum(_has_2x2_block(mask) for mask in masked_images) >= 0.9 * len(masked_images)
    # Block masks have far more masked 4-neighbour pairs than the same count scattered at random.
    generator = torch.Generator().manual_seed(0)
    block_pairs, random_pairs = 0, 0
    for mask in masked_images:
        block_pairs += _adjacent_masked_pairs(mask)
        scattered = torch.zeros(196, dtype=torch.bool)
        scattered[torch.randperm(196, generator=generator)[: int(mask.sum())]] = True
        random_pairs += _adjacent_masked_pairs(scattered.view(grid))
    assert block_pairs > 1.5 * random_pairs


def test_fast_enough_for_batch_64_on_14x14():
    start = time.perf_counter()
    for seed in range(5):
        _masks(64, (14, 14), seed=seed)
    assert (time.perf_counter() - start) / 5 < 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_images": -1}, "n_images"),
        ({"grid": (14,)}, "grid"),
        ({"grid": (0, 4)}, "grid"),
        ({"mask_probability": 1.5}, "mask_probability"),
        ({"ratio_range": (0.5, 0.1)}, "ratio_range"),
        ({"ratio_range": (0.0, 0.0)}, "ratio_range"),
        ({"min_block_patches": 0}, "min_block_patches"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    arguments = {"n_images": 4, "grid": (4, 4), **kwargs}
    with pytest.raises(ValueError, match=message):
        block_masks(arguments.pop("n_images"), arguments.pop("grid"), **arguments)
