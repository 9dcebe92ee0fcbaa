"""Procedural images with known latent factors (the embedded default's stimuli and demo data).

Each image has an *image type* (``objects``, ``textures``, ``blobs``), a latent *category* with
``N_CATEGORIES`` values whose meaning depends on the type (a shape, a texture family or a blob
arrangement), and continuous latents drawn independently of the category (hue, saturation,
texture spatial frequency, position, scale, background luminance, contrast, orientation).
Low-level statistics therefore vary across images independently of the category, and shapes are
equalised in area so that mean luminance does not give the category away.

Every image is a pure function of ``(seed, image_type, index)``, so any subset can be rendered in
any order. Images are drawn at twice the requested size and box-downsampled (anti-aliasing).

Usage::

    images, latents = generate_images(512, image_types={"objects": 0.7, "blobs": 0.3}, size=32)
"""

from __future__ import annotations

import colorsys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

__all__ = [
    "CATEGORY_NAMES",
    "GENERATOR_VERSION",
    "IMAGE_TYPES",
    "LATENT_NAMES",
    "N_CATEGORIES",
    "generate_images",
    "iter_images",
    "normalize_image_type_weights",
    "render_image",
    "stimulus_id_for",
]

IMAGE_TYPES: tuple[str, ...] = ("objects", "textures", "blobs")
N_CATEGORIES = 8
# Bump whenever the pixels produced for a given (seed, image_type, index) change: cached shards
# record it in their manifest and are regenerated when it differs.
GENERATOR_VERSION = 1

CATEGORY_NAMES: dict[str, tuple[str, ...]] = {
    "objects": ("disc", "square", "triangle", "star", "cross", "ring", "ellipse", "hexagon"),
    "textures": ("stripes", "checks", "dots", "waves", "noise", "rings", "spokes", "zigzag"),
    "blobs": ("one", "pair", "line", "triangle", "square", "quincunx", "hexagon", "hexagon_centre"),
}

# Continuous latents, in the column order of the latents table.
LATENT_NAMES: tuple[str, ...] = (
    "hue",  # [0, 1): hue of the foreground colour
    "saturation",  # [0.2, 1]: chroma of the foreground colour
    "spatial_frequency",  # [2, 8] cycles per image width (log-uniform): texture frequency
    "position_x",  # [-0.25, 0.25] of the image width, positive to the right
    "position_y",  # [-0.25, 0.25] of the image height, positive upwards
    "scale",  # [0.5, 1]: size of the object, aperture or arrangement
    "background_luminance",  # [0.15, 0.85]
    "contrast",  # [0.25, 1]: foreground minus background luminance, as a fraction of 0.5
    "orientation",  # [0, pi) radians counter-clockwise: shape, grating and arrangement angle
)

_SUPERSAMPLING = 2
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _type_code(image_type: str) -> int:
    """Stable integer for an image type (independent of the order of ``IMAGE_TYPES``)."""
    return zlib.crc32(image_type.encode("utf-8"))


def _check_image_type(image_type: str) -> None:
    if image_type not in IMAGE_TYPES:
        raise ValueError(f"unknown image type {image_type!r}; known image types: {IMAGE_TYPES}")


def _check_non_negative_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 4:
        raise ValueError(f"size must be an integer >= 4 pixels, got {size!r}")


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of the supersampled canvas, x to the right and y upwards.

    Returns
    -------
    x, y : ndarray of shape (1, S) and (S, 1), float32, in [-1, 1], S = 2 * size
    """
    canvas = size * _SUPERSAMPLING
    centres = (2.0 * (np.arange(canvas, dtype=np.float32) + 0.5) / canvas - 1.0).astype(np.float32)
    return centres[None, :], -centres[:, None]


def _draw_latents(rng: np.random.Generator) -> dict[str, float]:
    return {
        "hue": float(rng.uniform(0.0, 1.0)),
        "saturation": float(rng.uniform(0.2, 1.0)),
        "spatial_frequency": float(np.exp(rng.uniform(np.log(2.0), np.log(8.0)))),
        "position_x": float(rng.uniform(-0.25, 0.25)),
        "position_y": float(rng.uniform(-0.25, 0.25)),
        "scale": float(rng.uniform(0.5, 1.0)),
        "background_luminance": float(rng.uniform(0.15, 0.85)),
        "contrast": float(rng.uniform(0.25, 1.0)),
        "orientation": float(rng.uniform(0.0, np.pi)),
    }


def _foreground_colour(latents: Mapping[str, float]) -> np.ndarray:
    """RGB of the foreground: a luminance set by background and contrast, plus a chroma offset.

    The chroma offset has zero luminance, so hue and saturation do not change luminance (up to
    clipping to [0, 1] at the end).
    """
    background = latents["background_luminance"]
    polarity = 1.0 if background < 0.5 else -1.0  # towards the side with more room
    foreground_luminance = background + polarity * 0.5 * latents["contrast"]
    pure = np.array(colorsys.hsv_to_rgb(latents["hue"], 1.0, 1.0), dtype=np.float32)
    chroma = pure - float(pure @ _LUMA)
    return (foreground_luminance + 0.5 * latents["saturation"] * chroma).astype(np.float32)


def _rotated(
    x: np.ndarray, y: np.ndarray, latents: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to the latent position, rotated by minus the latent orientation."""
    dx = x - np.float32(latents["position_x"] * 2.0)
    dy = y - np.float32(latents["position_y"] * 2.0)
    cos, sin = (
        np.float32(np.cos(latents["orientation"])),
        np.float32(np.sin(latents["orientation"])),
    )
    return dx * cos + dy * sin, dy * cos - dx * sin  # (S, S) each


def _grating(u: np.ndarray, frequency: float, phase: float) -> np.ndarray:
    """Sinusoid along u in [-1, 1] with ``frequency`` cycles per image width (2 units)."""
    return np.cos(np.float32(np.pi * frequency) * u + np.float32(phase))


def _regular_polygon(u: np.ndarray, v: np.ndarray, n_sides: int, circumradius: float) -> np.ndarray:
    apothem = circumradius * np.cos(np.pi / n_sides)
    support = np.full(u.shape, -np.inf, dtype=np.float32)
    for side in range(n_sides):
        angle = np.pi / 2 + np.pi / n_sides + 2 * np.pi * side / n_sides
        support = np.maximum(support, u * np.float32(np.cos(angle)) + v * np.float32(np.sin(angle)))
    return support < apothem


# Radii that give every shape the area of a disc of radius 1 (so area does not reveal the shape).
_STAR_DEPTH = 0.4  # r < R (1 - depth + depth cos(5 phi))
_EQUAL_AREA_RADIUS = {
    "disc": 1.0,
    "square": float(np.sqrt(np.pi) / 2),  # half side
    "triangle": float(np.sqrt(np.pi / (3 * np.sqrt(3) / 4))),  # circumradius
    "star": float(1 / np.sqrt((1 - _STAR_DEPTH) ** 2 + _STAR_DEPTH**2 / 2)),
    "cross": float(np.sqrt(np.pi / (8 * 0.3 - 4 * 0.09))),  # arm half length, half width 0.3x
    "ring": float(1 / np.sqrt(1 - 0.6**2)),  # outer radius, inner radius 0.6x
    "ellipse": float(np.sqrt(2.0)),  # major semi-axis, minor = half of it
    "hexagon": float(np.sqrt(np.pi / (3 * np.sqrt(3) / 2))),  # circumradius
}


def _object_mask(u: np.ndarray, v: np.ndarray, shape: str, radius: float) -> np.ndarray:
    size = radius * _EQUAL_AREA_RADIUS[shape]
    if shape == "disc":
        return u * u + v * v < size * size
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) < size
    if shape == "triangle":
        return _regular_polygon(u, v, 3, size)
    if shape == "hexagon":
        return _regular_polygon(u, v, 6, size)
    if shape == "star":
        angle = np.arctan2(v, u)
        outline = size * (1 - _STAR_DEPTH + _STAR_DEPTH * np.cos(5 * (angle - np.pi / 2)))
        return np.sqrt(u * u + v * v) < outline
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        half_width = 0.3 * size
        return ((au < size) & (av < half_width)) | ((av < size) & (au < half_width))
    if shape == "ring":
        squared = u * u + v * v
        return (squared < size * size) & (squared > (0.6 * size) ** 2)
    if shape == "ellipse":
        return (u / size) ** 2 + (v / (0.5 * size)) ** 2 < 1.0
    raise AssertionError(shape)


def _texture_pattern(
    u: np.ndarray, v: np.ndarray, family: str, frequency: float, rng: np.random.Generator
) -> np.ndarray:
    """Texture 'ink' in [0, 1] with mean about 0.5, in pattern coordinates (u, v)."""
    phase = rng.uniform(0.0, 2 * np.pi)
    if family == "stripes":
        return 0.5 + 0.5 * _grating(u, frequency, phase)
    if family == "checks":
        return (_grating(u, frequency, phase) * _grating(v, frequency, 0.0) > 0).astype(np.float32)
    if family == "dots":
        period = np.float32(2.0 / frequency)
        cell_u = np.mod(u / period + np.float32(phase / (2 * np.pi)), 1) - 0.5
        cell_v = np.mod(v / period, 1) - 0.5
        return (cell_u * cell_u + cell_v * cell_v < 0.4**2).astype(np.float32)  # area ~ 0.5
    if family == "waves":
        bend = np.float32(1.5) * np.sin(np.float32(np.pi * frequency / 2) * v)
        return 0.5 + 0.5 * np.cos(np.float32(np.pi * frequency) * u + bend + np.float32(phase))
    if family == "noise":
        n_components = 6
        angles = rng.uniform(0.0, np.pi, n_components)
        frequencies = frequency * rng.uniform(0.7, 1.3, n_components)
        phases = rng.uniform(0.0, 2 * np.pi, n_components)
        total = np.zeros(u.shape, dtype=np.float32)
        for angle, component_frequency, component_phase in zip(angles, frequencies, phases):
            along = u * np.float32(np.cos(angle)) + v * np.float32(np.sin(angle))
            total += _grating(along, component_frequency, component_phase)
        return np.clip(0.5 + 0.5 * total / np.float32(np.sqrt(n_components / 2)), 0.0, 1.0)
    if family == "rings":
        return 0.5 + 0.5 * _grating(np.sqrt(u * u + v * v), frequency, phase)
    if family == "spokes":
        n_spokes = max(3, round(1.5 * frequency))
        return 0.5 + 0.5 * np.cos(n_spokes * np.arctan2(v, u) + np.float32(phase))
    if family == "zigzag":
        zig_period = np.float32(3.0 / frequency)
        triangle_wave = 2 * np.abs(np.mod(v / zig_period, 1) - 0.5)  # in [0, 1]
        return 0.5 + 0.5 * _grating(u + triangle_wave * np.float32(2.0 / frequency), frequency, 0)
    raise AssertionError(family)


def _blob_centres(arrangement: str) -> np.ndarray:
    """Blob centres of an arrangement, of shape (n_blobs, 2), in units of the arrangement radius."""

    def ring(count: int, start: float) -> list[tuple[float, float]]:
        angles = start + 2 * np.pi * np.arange(count) / count
        return [(float(np.cos(a)), float(np.sin(a))) for a in angles]

    centres = {
        "one": [(0.0, 0.0)],
        "pair": [(-0.7, 0.0), (0.7, 0.0)],
        "line": [(-1.0, 0.0), (0.0, 0.0), (1.0, 0.0)],
        "triangle": ring(3, np.pi / 2),
        "square": ring(4, np.pi / 4),
        "quincunx": [*ring(4, np.pi / 4), (0.0, 0.0)],
        "hexagon": ring(6, 0.0),
        "hexagon_centre": [*ring(6, 0.0), (0.0, 0.0)],
    }[arrangement]
    return np.asarray(centres, dtype=np.float32)


def _blob_alpha(u: np.ndarray, v: np.ndarray, arrangement: str, scale: float) -> np.ndarray:
    centres = _blob_centres(arrangement) * np.float32(0.5 * scale)  # (n_blobs, 2)
    # Equal total blob area whatever the count: sigma shrinks as 1 / sqrt(count).
    sigma = 0.2 * scale / np.sqrt(len(centres))
    inverse_variance = np.float32(-0.5 / sigma**2)
    alpha = np.zeros(u.shape, dtype=np.float32)
    for centre_u, centre_v in centres:
        du, dv = u - centre_u, v - centre_v
        alpha += np.exp((du * du + dv * dv) * inverse_variance)
    return np.minimum(1.5 * alpha, 1.0)  # flatter tops than a plain gaussian


def _compose(alpha: np.ndarray, foreground: np.ndarray, background_luminance: float) -> np.ndarray:
    """Blend a foreground (S, S, 3) or (3,) over a grey background with opacity alpha (S, S)."""
    background = np.float32(background_luminance)
    return background + alpha[..., None] * (foreground - background)  # (S, S, 3)


def _to_uint8(canvas: np.ndarray, size: int) -> np.ndarray:
    """Box-downsample the supersampled canvas (S, S, 3) to (size, size, 3) uint8."""
    factor = _SUPERSAMPLING
    small = canvas.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))  # (size, size, 3)
    return np.clip(small * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _render_canvas(
    image_type: str,
    category: int,
    latents: Mapping[str, float],
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw one image on the supersampled canvas -> (S, S, 3) float32, not yet clipped."""
    x, y = _grid(size)
    u, v = _rotated(x, y, latents)  # (S, S) each
    colour = _foreground_colour(latents)  # (3,)
    category_name = CATEGORY_NAMES[image_type][category]
    frequency = latents["spatial_frequency"]
    if image_type == "textures":
        radius = 0.8 * latents["scale"]
        aperture = (u * u + v * v < radius * radius).astype(np.float32)
        ink = _texture_pattern(u, v, category_name, frequency, rng)
        return _compose(aperture * ink, colour, latents["background_luminance"])
    # Objects and blobs carry a shading grating at the latent spatial frequency.
    shading = 1.0 + 0.3 * _grating(u, frequency, rng.uniform(0.0, 2 * np.pi))  # (S, S)
    foreground = shading[..., None] * colour  # (S, S, 3)
    if image_type == "objects":
        alpha = _object_mask(u, v, category_name, 0.38 * latents["scale"]).astype(np.float32)
    else:
        alpha = _blob_alpha(u, v, category_name, latents["scale"])
    return _compose(alpha, foreground, latents["background_luminance"])


def render_image(
    index: int, *, image_type: str, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """Render one procedural image, a pure function of ``(seed, image_type, index)``.

    Parameters
    ----------
    index : int
        Non-negative index of the image within its stream.
    image_type : str
        One of ``IMAGE_TYPES``.
    size : int
        Side of the square image in pixels (at least 4).
    seed : int
        Non-negative seed of the stream.

    Returns
    -------
    image : ndarray of shape (size, size, 3), uint8
    latents : dict
        ``image_type``, ``category`` (int in [0, N_CATEGORIES)), ``category_name`` and the
        continuous latents named in ``LATENT_NAMES``.
    """
    _check_image_type(image_type)
    _check_non_negative_int(index, "index")
    _check_non_negative_int(seed, "seed")
    _check_size(size)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _type_code(image_type), index]))
    category = int(rng.integers(N_CATEGORIES))
    latents = _draw_latents(rng)
    canvas = _render_canvas(image_type, category, latents, int(size), rng)
    image = _to_uint8(canvas, int(size))
    description = {
        "image_type": image_type,
        "category": category,
        "category_name": CATEGORY_NAMES[image_type][category],
        **latents,
    }
    return image, description


def normalize_image_type_weights(
    image_types: Sequence[str] | Mapping[str, float] | str,
) -> dict[str, float]:
    """Mixture weights over image types, summing to 1, in the order of ``IMAGE_TYPES``.

    A mapping gives weights (the data factor), a sequence (or one name) equal weights. Types with
    weight 0 are dropped.

    Raises
    ------
    ValueError
        On an unknown type, a duplicate, a negative or non-finite weight, or no positive weight.
    """
    if isinstance(image_types, str):
        image_types = (image_types,)
    if isinstance(image_types, Mapping):
        weights = {str(name): weight for name, weight in image_types.items()}
    else:
        names = list(image_types)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"image types listed more than once: {duplicates}")
        weights = dict.fromkeys(names, 1.0)
    unknown = [name for name in weights if name not in IMAGE_TYPES]
    if unknown:
        raise ValueError(f"unknown image type(s) {unknown}; known image types: {IMAGE_TYPES}")
    for name, weight in weights.items():
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"weight of image type {name!r} is not a number: {weight!r}") from None
        if not np.isfinite(value) or value < 0:
            raise ValueError(
                f"weight of image type {name!r} must be finite and >= 0, got {weight!r}"
            )
        weights[name] = value
    total = sum(weights[name] for name in IMAGE_TYPES if name in weights)  # order-independent
    if total <= 0:
        raise ValueError(f"image type weights must include a positive weight, got {weights}")
    # Canonical order, so that the mixture (and every image) does not depend on the order given.
    return {name: weights[name] / total for name in IMAGE_TYPES if weights.get(name, 0) > 0}


def _assign_image_types(n: int, weights: Mapping[str, float], seed: int) -> list[str]:
    """Image type of each index; the first k assignments do not depend on n."""
    names = list(weights)
    cumulative = np.cumsum([weights[name] for name in names])
    cumulative[-1] = 1.0
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _type_code("__mixture__")]))
    draws = rng.random(n)
    return [names[i] for i in np.searchsorted(cumulative, draws, side="right")]


def iter_images(
    n: int,
    *,
    image_types: Sequence[str] | Mapping[str, float] = IMAGE_TYPES,
    size: int = 64,
    seed: int = 0,
) -> Iterator[tuple[str, np.ndarray, dict]]:
    """Iterate ``(stimulus_id, image, latents)`` over images 0..n-1 of a mixture, one at a time.

    Same arguments and images as ``generate_images``, without holding all images in memory.
    Arguments are checked when this is called, not at the first iteration.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of images, got {n!r}")
    _check_non_negative_int(seed, "seed")
    _check_size(size)
    weights = normalize_image_type_weights(image_types)
    assigned_types = _assign_image_types(int(n), weights, seed)
    return _render_stream(assigned_types, size=int(size), seed=int(seed))


def _render_stream(
    assigned_types: Sequence[str], *, size: int, seed: int
) -> Iterator[tuple[str, np.ndarray, dict]]:
    for index, image_type in enumerate(assigned_types):
        image, latents = render_image(index, image_type=image_type, size=size, seed=seed)
        yield stimulus_id_for(index), image, latents


def stimulus_id_for(index: int) -> str:
    """Stimulus id of the image at ``index`` ("img00042")."""
    return f"img{index:05d}"


def generate_images(
    n: int,
    *,
    image_types: Sequence[str] | Mapping[str, float] = IMAGE_TYPES,
    size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Generate a mixture of procedural images and the table of their latents.

    Parameters
    ----------
    n : int
        Number of images (>= 1).
    image_types : sequence of str or mapping of str to float
        Image types to mix: a mapping gives mixture weights (the data factor), a sequence equal
        weights. Each image's type is drawn from the mixture; image ``i`` is the same whatever
        ``n`` (for the same types and seed).
    size : int
        Side of the square images in pixels.
    seed : int
        Non-negative seed; the output is a pure function of the arguments.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    images : ndarray of shape (n, size, size, 3), uint8
    latents : pandas.DataFrame with n rows
        Columns ``stimulus_id`` ("img00042"), ``image_type``, ``category`` (int in [0, 8)),
        ``category_name`` and the continuous latents in ``LATENT_NAMES``.
    """
    stream = iter_images(n, image_types=image_types, size=size, seed=seed)
    if progress:
        from tqdm.auto import tqdm

        stream = tqdm(stream, total=n, desc="procedural images", unit="img")
    images = np.empty((n, size, size, 3), dtype=np.uint8)  # (n, H, W, 3)
    rows = []
    for position, (stimulus_id, image, latents) in enumerate(stream):
        images[position] = image
        rows.append({"stimulus_id": stimulus_id, **latents})
    columns = ["stimulus_id", "image_type", "category", "category_name", *LATENT_NAMES]
    table = pd.DataFrame(rows, columns=columns)
    table["category"] = table["category"].astype(np.int64)
    return images, table
