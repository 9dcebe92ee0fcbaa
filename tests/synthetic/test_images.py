"""Procedural images: determinism, mixtures, latents, and categories that are learnable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainalign.synthetic import (
    CATEGORY_NAMES,
    IMAGE_TYPES,
    LATENT_NAMES,
    N_CATEGORIES,
    generate_images,
    iter_images,
    low_level_statistics,
    normalize_image_type_weights,
    render_image,
)
from brainalign.synthetic.low_level import DEFAULT_ORIENTATIONS, DEFAULT_SPATIAL_FREQUENCIES


@pytest.mark.parametrize("image_type", IMAGE_TYPES)
def test_render_image_is_deterministic_and_well_formed(image_type):
    image, latents = render_image(7, image_type=image_type, size=20, seed=3)
    again, latents_again = render_image(7, image_type=image_type, size=20, seed=3)
    assert image.shape == (20, 20, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, again)
    assert latents == latents_again
    assert latents["image_type"] == image_type
    assert 0 <= latents["category"] < N_CATEGORIES
    assert latents["category_name"] == CATEGORY_NAMES[image_type][latents["category"]]
    assert set(LATENT_NAMES) <= set(latents)
    assert image.std() > 1.0, "the image should not be blank"


def test_render_image_depends_on_seed_index_and_type():
    base, _ = render_image(5, image_type="objects", size=16, seed=0)
    for other in (
        render_image(6, image_type="objects", size=16, seed=0)[0],
        render_image(5, image_type="objects", size=16, seed=1)[0],
        render_image(5, image_type="blobs", size=16, seed=0)[0],
    ):
        assert not np.array_equal(base, other)


def test_generation_does_not_depend_on_order_or_count():
    images, table = generate_images(12, size=16, seed=4)
    fewer, fewer_table = generate_images(5, size=16, seed=4)
    np.testing.assert_array_equal(images[:5], fewer)
    pd.testing.assert_frame_equal(table.iloc[:5], fewer_table)
    # Rendering the same (type, index) pairs in reverse order gives the same pixels.
    for index in reversed(range(12)):
        image, latents = render_image(index, image_type=table.image_type[index], size=16, seed=4)
        np.testing.assert_array_equal(image, images[index])
        assert latents["category"] == table.category[index]
    assert not np.array_equal(images, generate_images(12, size=16, seed=5)[0])


def test_table_columns_and_ranges():
    images, table = generate_images(60, size=16, seed=0)
    assert images.shape == (60, 16, 16, 3)
    assert list(table.columns[:4]) == ["stimulus_id", "image_type", "category", "category_name"]
    assert set(LATENT_NAMES) <= set(table.columns)
    assert table.stimulus_id[42] == "img00042"
    assert table.stimulus_id.is_unique
    assert table.category.dtype == np.int64
    assert table.category.between(0, N_CATEGORIES - 1).all()
    assert table.hue.between(0, 1).all() and table.saturation.between(0.2, 1).all()
    assert table.spatial_frequency.between(2, 8).all()
    assert table.position_x.abs().max() <= 0.25 and table.position_y.abs().max() <= 0.25
    assert table.orientation.between(0, np.pi).all()
    assert [*iter_images(3, size=16, seed=0)][2][0] == "img00002"


def test_mixture_proportions_follow_weights():
    weights = {"objects": 0.6, "textures": 0.3, "blobs": 0.1}
    _, table = generate_images(2000, image_types=weights, size=16, seed=0)
    proportions = table.image_type.value_counts(normalize=True)
    for image_type, weight in weights.items():
        assert proportions[image_type] == pytest.approx(weight, abs=0.035)
    # Categories are close to uniform within a type.
    category_share = table.category.value_counts(normalize=True)
    assert category_share.min() > 0.08 and category_share.max() < 0.17


def test_zero_weight_and_single_type():
    _, table = generate_images(40, image_types={"objects": 1.0, "blobs": 0.0}, size=8, seed=0)
    assert set(table.image_type) == {"objects"}
    _, table = generate_images(10, image_types=["textures"], size=8, seed=0)
    assert set(table.image_type) == {"textures"}
    _, table = generate_images(10, image_types="blobs", size=8, seed=0)
    assert set(table.image_type) == {"blobs"}


def test_weights_do_not_depend_on_the_order_given():
    forward = normalize_image_type_weights({"objects": 1, "textures": 3})
    backward = normalize_image_type_weights({"textures": 3, "objects": 1})
    assert list(forward) == list(backward) == ["objects", "textures"]
    assert forward == {"objects": 0.25, "textures": 0.75}
    a, _ = generate_images(6, image_types={"objects": 1, "textures": 3}, size=8, seed=2)
    b, _ = generate_images(6, image_types={"textures": 3, "objects": 1}, size=8, seed=2)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_types": ["objects", "faces"]}, "unknown image type.*known image types"),
        ({"image_types": {"objects": -1.0, "blobs": 1.0}}, "must be finite and >= 0"),
        ({"image_types": {"objects": 0.0}}, "positive weight"),
        ({"image_types": ["blobs", "blobs"]}, "more than once"),
        ({"image_types": {"objects": "a lot"}}, "not a number"),
        ({"n": 0}, "positive integer"),
        ({"n": -3}, "positive integer"),
        ({"size": 2}, "size must be"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    arguments = {"n": 4, "size": 8, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_images(**arguments)


def test_render_image_rejects_unknown_type():
    with pytest.raises(ValueError, match=r"'scenery'.*objects"):
        render_image(0, image_type="scenery")


def _orientation_invariant_summary(statistics: np.ndarray) -> np.ndarray:
    """Per spatial frequency: oriented energies sorted (anisotropy profile) and total energy,
    plus cell energies sorted, luminance and contrast. Invariant to the latent orientation and
    position, so that a linear probe can read the category rather than these nuisances.
    """
    n_orientations, n_frequencies = len(DEFAULT_ORIENTATIONS), len(DEFAULT_SPATIAL_FREQUENCIES)
    energy = statistics[:, 5:].reshape(len(statistics), n_orientations, n_frequencies, 4)
    per_band = energy.sum(axis=-1)  # (n, orientations, frequencies)
    total = per_band.sum(axis=1) + 1e-9  # (n, frequencies)
    profile = np.sort(per_band, axis=1)[:, ::-1] / total[:, None]
    cells = energy.sum(axis=(1, 2))
    cells = np.sort(cells / (cells.sum(axis=1, keepdims=True) + 1e-9), axis=1)
    return np.hstack(
        [profile.reshape(len(statistics), -1), np.log(total), cells, statistics[:, :2]]
    )


@pytest.mark.slow
@pytest.mark.parametrize("image_type", IMAGE_TYPES)
def test_categories_are_decodable_but_not_from_mean_luminance(image_type):
    n_images = 320
    images, table = generate_images(n_images, image_types=[image_type], size=24, seed=11)
    categories = table.category.to_numpy()
    statistics = low_level_statistics(images)
    chance = 1 / N_CATEGORIES

    def accuracy(features: np.ndarray) -> float:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        return float(cross_val_score(probe, features, categories, cv=4).mean())

    assert accuracy(_orientation_invariant_summary(statistics)) > chance + 0.15
    # Mean luminance alone is near chance: areas are equalised and luminance varies at random.
    assert accuracy(statistics[:, :1]) < chance + 0.07


def test_low_level_statistics_vary_within_each_category():
    images, table = generate_images(160, image_types=["objects"], size=16, seed=1)
    statistics = pd.DataFrame(low_level_statistics(images)[:, :5])
    statistics["category"] = table.category
    spread = statistics.groupby("category").std()
    # Luminance, contrast and colour vary within every category (not fixed by the shape).
    assert (spread.to_numpy() > 0.02).all()
