"""Layer choice, token pooling, batched feature extraction and PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from brainalign.probe.features import (
    extract_features,
    pool_tokens,
    reduce_features,
    select_layers,
)
from brainalign.probe.models import TokenLayout, load_probe_model
from brainalign.probe.stimuli import StimulusSet

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _uint8_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _stimuli(n: int = 10, seed: int = 0) -> StimulusSet:
    return StimulusSet.from_array([f"s{i}" for i in range(n)], _uint8_images(n, seed=seed))


# ---------------------------------------------------------------------------- select_layers
@pytest.mark.parametrize(
    ("depth", "relative_depths", "expected"),
    [
        (12, [0.0, 0.5, 1.0], [0, 6, 11]),  # 0.5 * 11 = 5.5: ties go to the deeper layer
        (12, [1.0, 0.0, 0.5, 0.5], [0, 6, 11]),  # sorted, deduplicated
        (5, 3, [0, 2, 4]),  # 3 evenly spaced depths
        (4, [0.5], [2]),  # 1.5 -> 2
        (6, [0.5], [3]),  # 2.5 -> 3 (Python round() would give 2)
        (4, [0.49], [1]),  # 1.47 -> 1
        (12, 22, list(range(12))),  # more depths than layers: every layer once
        (24, 22, [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22, 23]),
        (7, "all", list(range(7))),
        (1, [0.0, 1.0], [0]),
    ],
)
def test_select_layers_known_answers(depth, relative_depths, expected):
    assert select_layers(depth, relative_depths) == expected


def test_select_layers_rejects_bad_requests():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        select_layers(12, [1.2])
    with pytest.raises(ValueError, match=">= 2"):
        select_layers(12, 1)
    with pytest.raises(ValueError, match="'all'"):
        select_layers(12, "some")
    with pytest.raises(ValueError, match="empty"):
        select_layers(12, [])


# ---------------------------------------------------------------------------- pool_tokens
def test_pool_tokens_known_answers():
    tokens = torch.arange(7 * 8 * 9, dtype=torch.float32).reshape(7, 8, 9)  # (B, T, D)
    layout = TokenLayout(has_cls=True, n_registers=2)  # token 0 cls, 1-2 registers, 3-7 patches
    torch.testing.assert_close(pool_tokens(tokens, layout, "cls"), tokens[:, 0])
    torch.testing.assert_close(pool_tokens(tokens, layout, "mean"), tokens[:, 3:].mean(1))
    torch.testing.assert_close(pool_tokens(tokens, layout, "registers"), tokens[:, 1:3].mean(1))
    both = pool_tokens(tokens, layout, "cls+mean")
    assert both.shape == (7, 18)
    torch.testing.assert_close(both, torch.cat([tokens[:, 0], tokens[:, 3:].mean(1)], 1))
    registers_only = TokenLayout(has_cls=False, n_registers=3)
    torch.testing.assert_close(
        pool_tokens(tokens, registers_only, "registers"), tokens[:, :3].mean(1)
    )
    torch.testing.assert_close(pool_tokens(tokens, registers_only, "mean"), tokens[:, 3:].mean(1))


def test_pool_tokens_errors_name_the_problem():
    tokens = torch.zeros(2, 5, 3)
    no_prefix = TokenLayout(has_cls=False)
    with pytest.raises(ValueError, match="needs a class token"):
        pool_tokens(tokens, no_prefix, "cls")
    with pytest.raises(ValueError, match="needs a class token"):
        pool_tokens(tokens, no_prefix, "cls+mean")
    with pytest.raises(ValueError, match="needs register tokens"):
        pool_tokens(tokens, TokenLayout(has_cls=True), "registers")
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool_tokens(tokens, no_prefix, "max")
    with pytest.raises(ValueError, match="no patch tokens"):
        pool_tokens(tokens, TokenLayout(has_cls=True, n_registers=4), "mean")


# ---------------------------------------------------------------------------- extraction
def test_extracted_features_equal_a_hand_computation(tiny_backbone):
    images = _uint8_images(5)
    model = load_probe_model(tiny_backbone)
    by_pooling = {
        pooling: extract_features(
            model, images, layers=[3, 1], pooling=pooling, batch_size=2, progress=False
        )
        for pooling in ("cls", "mean", "registers", "cls+mean")
    }
    normalised = (images.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    inputs = torch.from_numpy(normalised).permute(0, 3, 1, 2)  # (B, 3, 32, 32)
    with torch.no_grad():
        tokens = tiny_backbone.forward_layers(inputs, [3, 1])  # each (B, 1 + 4 + 64, D)
    for layer, layer_tokens in zip([3, 1], tokens):
        cls = layer_tokens[:, 0].numpy()
        registers = layer_tokens[:, 1:5].mean(1).numpy()
        patch_mean = layer_tokens[:, 5:].mean(1).numpy()
        np.testing.assert_allclose(by_pooling["cls"][layer], cls, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(by_pooling["mean"][layer], patch_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(by_pooling["registers"][layer], registers, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            by_pooling["cls+mean"][layer],
            np.concatenate([cls, patch_mean], axis=1),
            rtol=1e-5,
            atol=1e-5,
        )
    assert list(by_pooling["mean"]) == [3, 1]
    assert all(array.dtype == np.float32 for array in by_pooling["mean"].values())


def test_batch_size_does_not_change_the_features(tiny_backbone):
    model = load_probe_model(tiny_backbone)
    stimuli = _stimuli(10)
    small = extract_features(model, stimuli, layers=[0, 2, 3], batch_size=3, progress=False)
    large = extract_features(model, stimuli, layers=[0, 2, 3], batch_size=7, progress=False)
    for layer in (0, 2, 3):
        assert small[layer].shape == (10, 64)
        np.testing.assert_allclose(small[layer], large[layer], rtol=1e-5, atol=1e-5)


def test_image_files_give_the_same_features_as_arrays(tiny_backbone, tmp_path):
    images = _uint8_images(4)
    ids = [f"img{i}" for i in range(4)]
    for stimulus_id, image in zip(ids, images):
        Image.fromarray(image).save(tmp_path / f"{stimulus_id}.png")
    model = load_probe_model(tiny_backbone)
    from_files = extract_features(
        model, StimulusSet.from_folder(tmp_path, ids), layers=[2], progress=False
    )
    from_array = extract_features(
        model, StimulusSet.from_array(ids, images), layers=[2], progress=False
    )
    np.testing.assert_allclose(from_files[2], from_array[2], rtol=1e-5, atol=1e-5)


def test_images_of_different_sizes_are_resized_like_single_batches(tiny_backbone, tmp_path):
    rng = np.random.default_rng(1)
    shapes = [(48, 64), (40, 40), (64, 48)]
    for index, (height, width) in enumerate(shapes):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"x{index}.png")
    model = load_probe_model(tiny_backbone)
    stimuli = StimulusSet.from_folder(tmp_path)
    together = extract_features(model, stimuli, layers=[3], batch_size=3, progress=False)[3]
    one_by_one = extract_features(model, stimuli, layers=[3], batch_size=1, progress=False)[3]
    assert together.shape == (3, 64)
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-5)
    first = np.asarray(Image.open(tmp_path / "x0.png"))  # 48 x 64 -> 32 x 43 -> crop 32 x 32
    single = extract_features(model, first[None], layers=[3], progress=False)[3]
    np.testing.assert_allclose(together[:1], single, rtol=1e-5, atol=1e-5)


def test_extract_features_checks_its_arguments(tiny_backbone):
    model = load_probe_model(tiny_backbone)
    stimuli = _stimuli(2)
    with pytest.raises(ValueError, match=r"indices in \[0, 4\)"):
        extract_features(model, stimuli, layers=[4], progress=False)
    with pytest.raises(ValueError, match="unknown pooling"):
        extract_features(model, stimuli, pooling="max", progress=False)
    with pytest.raises(ValueError, match="dtype must be"):
        extract_features(model, stimuli, dtype="int8", progress=False)


def test_bfloat16_autocast_stays_close_to_float32(tiny_backbone):
    model = load_probe_model(tiny_backbone)
    stimuli = _stimuli(4)
    exact = extract_features(model, stimuli, layers=[3], progress=False, device="cpu")[3]
    approximate = extract_features(
        model, stimuli, layers=[3], progress=False, device="cpu", dtype="bfloat16"
    )[3]
    assert approximate.dtype == np.float32
    assert np.abs(approximate - exact).max() < 0.1 * np.abs(exact).max()
    assert not np.array_equal(approximate, exact)


# ---------------------------------------------------------------------------- PCA
def test_reduce_features_recovers_a_planted_subspace():
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((60, 3))  # (n_stimuli, 3)
    mixing = rng.standard_normal((3, 20))
    features = {
        0: (latent @ mixing + 0.01 * rng.standard_normal((60, 20))).astype(np.float32),
        5: rng.standard_normal((60, 8)).astype(np.float32),
    }
    reduced = reduce_features(features, n_components=3, seed=0)
    assert reduced[0].shape == (60, 3) and reduced[5].shape == (60, 3)
    assert reduced[0].dtype == np.float32
    # The 3 components span the planted latent space: regressing the latent on them is exact.
    centred_latent = latent - latent.mean(0)
    coefficients, *_ = np.linalg.lstsq(reduced[0], centred_latent, rcond=None)
    residual = centred_latent - reduced[0] @ coefficients
    assert np.linalg.norm(residual) / np.linalg.norm(centred_latent) < 0.02
    variances = reduced[0].var(axis=0)
    assert np.all(np.diff(variances) <= 0)
    with pytest.raises(ValueError, match=r"layer 5: n_components=9"):
        reduce_features(features, n_components=9)
