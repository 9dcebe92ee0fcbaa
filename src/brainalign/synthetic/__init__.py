"""Generators for the embedded default: procedural images and their low-level statistics."""

from brainalign.synthetic.images import (
    CATEGORY_NAMES,
    GENERATOR_VERSION,
    IMAGE_TYPES,
    LATENT_NAMES,
    N_CATEGORIES,
    generate_images,
    iter_images,
    normalize_image_type_weights,
    render_image,
    stimulus_id_for,
)
from brainalign.synthetic.low_level import low_level_statistic_names, low_level_statistics

__all__ = [
    "CATEGORY_NAMES",
    "GENERATOR_VERSION",
    "IMAGE_TYPES",
    "LATENT_NAMES",
    "N_CATEGORIES",
    "generate_images",
    "iter_images",
    "low_level_statistic_names",
    "low_level_statistics",
    "normalize_image_type_weights",
    "render_image",
    "stimulus_id_for",
]
