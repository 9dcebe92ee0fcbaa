"""Multi-crop augmentation of the DINOv3 recipe: 2 global crops and L local crops per image.

Example::

    augment = MultiCropAugmentation(global_size=64, local_size=32, n_local_crops=4)
    views = augment(pil_image)
    views["global_crops"][0].shape  # torch.Size([3, 64, 64])

Every random draw goes through the global torch random generator (torchvision v2), so seeding
``torch.manual_seed`` before a call reproduces the crops exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The recipe's crop sizes; blur widths are given at these sizes and scaled with the actual size.
REFERENCE_GLOBAL_SIZE = 224
REFERENCE_LOCAL_SIZE = 96


def blur_kernel_size(sigma_max: float, crop_size: int) -> int:
    """Odd Gaussian kernel size covering +-2 sigma, never wider than the crop.

    Parameters
    ----------
    sigma_max : float
        Largest blur standard deviation in pixels.
    crop_size : int
        Side of the (square) crop the blur is applied to.

    Returns
    -------
    kernel_size : int
        Odd kernel size in ``[1, crop_size]`` (9 for sigma 2 at 224 px, 3 for tiny crops).
    """
    kernel_size = 2 * math.ceil(2.0 * sigma_max) + 1
    largest_odd = crop_size if crop_size % 2 == 1 else crop_size - 1
    return max(1, min(kernel_size, largest_odd))


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def _check_scale(name: str, scale: Sequence[float]) -> tuple[float, float]:
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(
            f"{name} must be (min, max) area fractions with 0 < min <= max <= 1, got {scale}"
        )
    return float(scale[0]), float(scale[1])


class MultiCropAugmentation:
    """DINOv3 multi-crop views: 2 global crops (teacher and student) and L local crops (student).

    Each crop: bicubic random-resized crop, horizontal flip, colour jitter, grayscale, Gaussian
    blur (p=1 on global crop 1; p=0.1 and solarize p=0.2 on global crop 2; p=0.5 on local crops),
    conversion to float and ImageNet mean/std normalisation. The blur sigma range is given for
    the recipe's sizes (224 px global, 96 px local) and scaled linearly with the actual crop size;
    the kernel size follows the sigma, so tiny crops get tiny kernels.

    Parameters
    ----------
    global_size : int
        Side of the global crops in pixels (G).
    local_size : int
        Side of the local crops in pixels (g).
    n_local_crops : int
        Number of local crops L (0 allowed).
    global_scale, local_scale : tuple of float
        (min, max) fraction of the image area covered by a global / local crop.
    color_jitter : tuple of float
        Brightness, contrast, saturation, hue strengths.
    color_jitter_p : float
        Probability of applying colour jitter.
    grayscale_p : float
        Probability of converting to grayscale (kept 3 channels).
    flip_p : float
        Probability of a horizontal flip.
    blur_sigma : tuple of float
        (min, max) blur standard deviation at the reference sizes, in pixels.
    global1_blur_p, global2_blur_p, local_blur_p : float
        Blur probabilities of global crop 1, global crop 2 and the local crops.
    global2_solarize_p : float
        Solarisation probability of global crop 2.
    mean, std : tuple of float
        Per-channel normalisation.
    """

    def __init__(
        self,
        *,
        global_size: int = 224,
        local_size: int = 96,
        n_local_crops: int = 8,
        global_scale: tuple[float, float] = (0.32, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.32),
        color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        color_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        flip_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        global1_blur_p: float = 1.0,
        global2_blur_p: float = 0.1,
        global2_solarize_p: float = 0.2,
        local_blur_p: float = 0.5,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        for name, size in (("global_size", global_size), ("local_size", local_size)):
            if size < 1:
                raise ValueError(f"{name} must be a positive number of pixels, got {size}")
        if n_local_crops < 0:
            raise ValueError(f"n_local_crops must be >= 0, got {n_local_crops}")
        for name, p in (
            ("color_jitter_p", color_jitter_p),
            ("grayscale_p", grayscale_p),
            ("flip_p", flip_p),
            ("global1_blur_p", global1_blur_p),
            ("global2_blur_p", global2_blur_p),
            ("global2_solarize_p", global2_solarize_p),
            ("local_blur_p", local_blur_p),
        ):
            _check_probability(name, p)
        if len(blur_sigma) != 2 or not 0.0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"blur_sigma must be (min, max) with 0 < min <= max, got {blur_sigma}")
        self.global_size = global_size
        self.local_size = local_size
        self.n_local_crops = n_local_crops
        self.global_scale = _check_scale("global_scale", global_scale)
        self.local_scale = _check_scale("local_scale", local_scale)

        photometric = [
            v2.RandomApply([v2.ColorJitter(*color_jitter)], p=color_jitter_p),
            v2.RandomGrayscale(p=grayscale_p),
        ]
        normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=mean, std=std)]

        def crop(size: int, scale: tuple[float, float]) -> list[v2.Transform]:
            return [
                v2.RandomResizedCrop(
                    size,
                    scale=scale,
                    interpolation=v2.InterpolationMode.BICUBIC,
                    antialias=True,
                ),
                v2.RandomHorizontalFlip(p=flip_p),
            ]

        def blur(size: int, reference_size: int, p: float) -> list[v2.Transform]:
            factor = size / reference_size
            sigma = (blur_sigma[0] * factor, blur_sigma[1] * factor)
            kernel_size = blur_kernel_size(sigma[1], size)
            if p == 0.0 or kernel_size == 1:
                return []
            return [v2.RandomApply([v2.GaussianBlur(kernel_size, sigma=sigma)], p=p)]

        global_crop = crop(global_size, self.global_scale)
        self.global1_transform = v2.Compose(
            global_crop
            + photometric
            + blur(global_size, REFERENCE_GLOBAL_SIZE, global1_blur_p)
            + normalize
        )
        self.global2_transform = v2.Compose(
            global_crop
            + photometric
            + blur(global_size, REFERENCE_GLOBAL_SIZE, global2_blur_p)
            + [v2.RandomSolarize(threshold=128, p=global2_solarize_p)]
            + normalize
        )
        self.local_transform = v2.Compose(
            crop(local_size, self.local_scale)
            + photometric
            + blur(local_size, REFERENCE_LOCAL_SIZE, local_blur_p)
            + normalize
        )

    @staticmethod
    def _to_uint8_image(image: Image.Image | torch.Tensor) -> torch.Tensor:
        """Return the image as a uint8 tensor of shape (3, H, W)."""
        if isinstance(image, Image.Image):
            return v2.functional.pil_to_tensor(image.convert("RGB"))  # (3, H, W)
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"expected a PIL image or a uint8 tensor (C, H, W), got {type(image).__name__}"
            )
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(
                "expected a uint8 tensor of shape (3, H, W) or (1, H, W), got "
                f"{image.dtype} tensor of shape {tuple(image.shape)}"
            )
        image = image.as_subclass(torch.Tensor)
        return image.repeat(3, 1, 1) if image.shape[0] == 1 else image  # (3, H, W)

    def __call__(self, image: Image.Image | torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Make the crops of one image.

        Parameters
        ----------
        image : PIL.Image or Tensor of shape (3, H, W) or (1, H, W), uint8
            The source image (any PIL mode; converted to RGB).

        Returns
        -------
        views : dict
            ``global_crops``: list of 2 float tensors of shape (3, G, G);
            ``local_crops``: list of L float tensors of shape (3, g, g).
        """
        pixels = v2.functional.to_image(self._to_uint8_image(image))  # (3, H, W) uint8
        global_crops = [
            self.global1_transform(pixels).as_subclass(torch.Tensor),  # (3, G, G)
            self.global2_transform(pixels).as_subclass(torch.Tensor),
        ]
        local_crops = [
            self.local_transform(pixels).as_subclass(torch.Tensor)  # (3, g, g)
            for _ in range(self.n_local_crops)
        ]
        return {"global_crops": global_crops, "local_crops": local_crops}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(global_size={self.global_size}, local_size={self.local_size}, "
            f"n_local_crops={self.n_local_crops}, global_scale={self.global_scale}, "
            f"local_scale={self.local_scale})"
        )
