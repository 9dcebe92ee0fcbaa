"""Tests of the multi-crop augmentation (crop shapes, known-answer pixels, seeding)."""

import numpy as np
import pytest
import torch
from PIL import Image

from brainalign.train.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCropAugmentation,
    blur_kernel_size,
)

NO_PHOTOMETRIC = dict(
    color_jitter_p=0.0,
    grayscale_p=0.0,
    global1_blur_p=0.0,
    global2_blur_p=0.0,
    global2_solarize_p=0.0,
    local_blur_p=0.0,
)


def random_image(height: int = 23, width: int = 29, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def constant_image(rgb: tuple[int, int, int], size: int = 20) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), rgb, dtype=np.uint8))


def test_crop_shapes_and_counts():
    augment = MultiCropAugmentation(global_size=32, local_size=16, n_local_crops=3)
    views = augment(random_image())
    assert len(views["global_crops"]) == 2
    assert len(views["local_crops"]) == 3
    for crop in views["global_crops"]:
        assert crop.shape == (3, 32, 32) and crop.dtype == torch.float32
        assert type(crop) is torch.Tensor  # plain tensors, no tv_tensors wrapper
    for crop in views["local_crops"]:
        assert crop.shape == (3, 16, 16)


def test_no_local_crops_and_tensor_inputs():
    augment = MultiCropAugmentation(global_size=24, local_size=12, n_local_crops=0)
    gray = torch.randint(0, 256, (1, 17, 21), dtype=torch.uint8)
    views = augment(gray)
    assert views["local_crops"] == []
    assert [c.shape for c in views["global_crops"]] == [(3, 24, 24)] * 2
    rgba = Image.fromarray(np.zeros((18, 18, 4), dtype=np.uint8), mode="RGBA")
    assert augment(rgba)["global_crops"][0].shape == (3, 24, 24)


def test_bad_inputs_raise_clear_errors():
    augment = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=1)
    with pytest.raises(ValueError, match="uint8"):
        augment(torch.rand(3, 16, 16))
    with pytest.raises(TypeError, match="PIL image"):
        augment(np.zeros((16, 16, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="global_scale"):
        MultiCropAugmentation(global_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="n_local_crops"):
        MultiCropAugmentation(n_local_crops=-1)
    with pytest.raises(ValueError, match="grayscale_p"):
        MultiCropAugmentation(grayscale_p=1.5)


def test_constant_image_is_normalised_with_imagenet_statistics():
    rgb = (200, 100, 30)
    augment = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=2, **NO_PHOTOMETRIC)
    views = augment(constant_image(rgb))
    expected = (torch.tensor(rgb) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    for crop in views["global_crops"] + views["local_crops"]:
        torch.testing.assert_close(crop, expected[:, None, None].expand_as(crop), atol=1e-5, rtol=0)


def test_solarize_applies_to_second_global_crop_only():
    settings = {**NO_PHOTOMETRIC, "global2_solarize_p": 1.0}
    augment = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=1, **settings)
    views = augment(constant_image((200, 200, 200)))
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    plain = (200 / 255 - mean) / std
    solarized = ((255 - 200) / 255 - mean) / std  # pixels >= 128 are inverted
    torch.testing.assert_close(views["global_crops"][0][:, 0, 0], plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(views["global_crops"][1][:, 0, 0], solarized, atol=1e-5, rtol=0)
    torch.testing.assert_close(views["local_crops"][0][:, 0, 0], plain, atol=1e-5, rtol=0)


def test_grayscale_always_gives_equal_channels():
    settings = {**NO_PHOTOMETRIC, "grayscale_p": 1.0}
    augment = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=1, **settings)
    crop = augment(random_image())["global_crops"][0]
    pixels = (
        crop * torch.tensor(IMAGENET_STD)[:, None, None]
        + torch.tensor(IMAGENET_MEAN)[:, None, None]
    )
    torch.testing.assert_close(pixels[0], pixels[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[1], pixels[2], atol=1e-5, rtol=0)


def test_same_seed_same_crops_and_different_seed_different_crops():
    augment = MultiCropAugmentation(global_size=24, local_size=12, n_local_crops=2)
    image = random_image()
    torch.manual_seed(3)
    first = augment(image)
    torch.manual_seed(3)
    second = augment(image)
    torch.manual_seed(4)
    third = augment(image)
    for a, b in zip(
        first["global_crops"] + first["local_crops"], second["global_crops"] + second["local_crops"]
    ):
        torch.testing.assert_close(a, b)
    assert not torch.equal(first["global_crops"][0], third["global_crops"][0])
    # the two global crops of one call are different views
    assert not torch.equal(first["global_crops"][0], first["global_crops"][1])


def test_blur_kernel_scales_with_crop_size():
    assert blur_kernel_size(2.0, 224) == 9
    small = blur_kernel_size(2.0 * 16 / 224, 16)
    assert small == 3
    assert blur_kernel_size(2.0, 6) == 5  # never wider than the crop
    for size in (2, 5, 8, 33, 96, 224):
        kernel = blur_kernel_size(2.0 * size / 224, size)
        assert kernel % 2 == 1 and 1 <= kernel <= size
    augment = MultiCropAugmentation(global_size=224, local_size=96, n_local_crops=1)
    assert "kernel_size=(9, 9)" in repr(augment.global1_transform)
    tiny = MultiCropAugmentation(global_size=32, local_size=16, n_local_crops=1)
    assert "kernel_size=(3, 3)" in repr(tiny.local_transform)
