"""Low-level image statistics: the features that drive the simulated subject's early visual areas.

Columns, in order (see ``low_level_statistic_names``):

- ``luminance_mean``: mean luminance, Y = 0.299 R + 0.587 G + 0.114 B, in [0, 1].
- ``contrast_rms``: RMS contrast, the standard deviation of luminance over pixels.
- ``red_mean``, ``green_mean``, ``blue_mean``: mean of each channel, in [0, 1].
- ``energy_ori{deg}_sf{f}_r{row}c{col}``: oriented energy, for each stripe orientation, spatial
  frequency and cell of a coarse grid (row 0 is the top). The luminance image is filtered in the
  Fourier domain by a quadrature (one-sided) log-Gabor filter with peak gain 1, and the squared
  magnitude of the complex response is averaged over the cell. A grating of luminance amplitude
  A that matches a filter gives energy A**2 / 4 in it. Orientation is the orientation of the
  stripes a filter prefers, in degrees counter-clockwise from horizontal with y pointing up
  (0 = horizontal stripes, 90 = vertical stripes); spatial frequency is in cycles per pixel.

Usage::

    features = low_level_statistics(images)  # images: (n, H, W, 3) uint8 -> (n, 53)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import scipy.fft

__all__ = [
    "DEFAULT_GRID",
    "DEFAULT_ORIENTATIONS",
    "DEFAULT_SPATIAL_FREQUENCIES",
    "low_level_statistic_names",
    "low_level_statistics",
]

DEFAULT_ORIENTATIONS: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)  # degrees, stripe orientation
DEFAULT_SPATIAL_FREQUENCIES: tuple[float, ...] = (0.0625, 0.125, 0.25)  # cycles per pixel
DEFAULT_GRID = 2  # cells per side

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_GLOBAL_NAMES = ("luminance_mean", "contrast_rms", "red_mean", "green_mean", "blue_mean")
_ANGULAR_SIGMA = np.pi / 8  # radians; orientations 45 degrees apart overlap little
_LOG_RADIAL_SIGMA = np.log(2.0) / (2 * np.sqrt(2 * np.log(2.0)))  # one octave at half height


def _check_bank(
    orientations: Sequence[float], spatial_frequencies: Sequence[float], grid: int
) -> None:
    if len(orientations) == 0 or len(spatial_frequencies) == 0:
        raise ValueError("orientations and spatial_frequencies must each list at least one value")
    for frequency in spatial_frequencies:
        if not 0 < frequency <= 0.5:
            raise ValueError(
                f"spatial frequencies are in cycles per pixel and must lie in (0, 0.5] "
                f"(0.5 is the Nyquist frequency), got {frequency!r}"
            )
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise ValueError(f"grid must be a positive integer (cells per side), got {grid!r}")


def low_level_statistic_names(
    *,
    orientations: Sequence[float] = DEFAULT_ORIENTATIONS,
    spatial_frequencies: Sequence[float] = DEFAULT_SPATIAL_FREQUENCIES,
    grid: int = DEFAULT_GRID,
) -> list[str]:
    """Names of the columns returned by ``low_level_statistics`` with the same arguments.

    Returns
    -------
    names : list of str of length 5 + len(orientations) * len(spatial_frequencies) * grid**2
    """
    _check_bank(orientations, spatial_frequencies, grid)
    names = list(_GLOBAL_NAMES)
    for orientation in orientations:
        for frequency in spatial_frequencies:
            for row in range(grid):
                for col in range(grid):
                    names.append(f"energy_ori{orientation:g}_sf{frequency:g}_r{row}c{col}")
    return names


@lru_cache(maxsize=16)
def _filter_bank(
    height: int, width: int, orientations: tuple[float, ...], frequencies: tuple[float, ...]
) -> np.ndarray:
    """Quadrature log-Gabor filters in the Fourier domain.

    Returns
    -------
    filters : ndarray of shape (n_orientations * n_frequencies, height, width), float32
    """
    frequency_x = np.fft.fftfreq(width)[None, :]  # (1, W) cycles per pixel
    frequency_y = -np.fft.fftfreq(height)[:, None]  # (H, 1), y pointing up
    radius = np.hypot(frequency_x, frequency_y)  # (H, W)
    angle = np.arctan2(frequency_y, frequency_x)  # (H, W)
    with np.errstate(divide="ignore"):
        log_radius = np.log(radius)
    filters = []
    for orientation in orientations:
        # Luminance varies across the stripes: the preferred frequency vector is perpendicular.
        preferred_angle = np.deg2rad(orientation) + np.pi / 2
        angular_distance = np.angle(np.exp(1j * (angle - preferred_angle)))  # wrapped to (-pi, pi]
        angular = np.exp(-(angular_distance**2) / (2 * _ANGULAR_SIGMA**2))
        for frequency in frequencies:
            radial = np.exp(-((log_radius - np.log(frequency)) ** 2) / (2 * _LOG_RADIAL_SIGMA**2))
            radial[radius == 0] = 0.0
            filters.append(radial * angular)
    return np.stack(filters).astype(np.float32)


def _cell_means(maps: np.ndarray, grid: int) -> np.ndarray:
    """Average maps (..., H, W) over a grid x grid partition -> (..., grid, grid)."""
    height, width = maps.shape[-2:]
    row_starts = np.linspace(0, height, grid + 1).astype(int)
    col_starts = np.linspace(0, width, grid + 1).astype(int)
    sums = np.add.reduceat(maps, row_starts[:-1], axis=-2)  # (..., grid, W)
    sums = np.add.reduceat(sums, col_starts[:-1], axis=-1)  # (..., grid, grid)
    counts = np.diff(row_starts)[:, None] * np.diff(col_starts)[None, :]  # (grid, grid)
    return sums / counts


def low_level_statistics(
    images: np.ndarray,
    *,
    orientations: Sequence[float] = DEFAULT_ORIENTATIONS,
    spatial_frequencies: Sequence[float] = DEFAULT_SPATIAL_FREQUENCIES,
    grid: int = DEFAULT_GRID,
    batch_size: int = 64,
) -> np.ndarray:
    """Compute the low-level statistics of a batch of RGB images.

    Parameters
    ----------
    images : ndarray of shape (n_images, height, width, 3), uint8
    orientations : sequence of float
        Preferred stripe orientations in degrees (0 horizontal, 90 vertical).
    spatial_frequencies : sequence of float
        Preferred spatial frequencies in cycles per pixel, in (0, 0.5].
    grid : int
        The energy maps are averaged over a grid x grid partition of the image.
    batch_size : int
        Images filtered at once (bounds memory).

    Returns
    -------
    statistics : ndarray of shape (n_images, n_statistics), float64
        Columns named by ``low_level_statistic_names`` (see the module docstring).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must have shape (n_images, height, width, 3), got shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    _check_bank(orientations, spatial_frequencies, grid)
    n_images, height, width, _ = images.shape
    if height < grid or width < grid:
        raise ValueError(
            f"images of {height}x{width} pixels are smaller than the {grid}x{grid} grid"
        )
    filters = _filter_bank(
        height, width, tuple(map(float, orientations)), tuple(map(float, spatial_frequencies))
    )  # (K, H, W)

    statistics = np.empty((n_images, len(_GLOBAL_NAMES) + len(filters) * grid * grid))
    for start in range(0, n_images, batch_size):
        batch = images[start : start + batch_size] / 255.0  # (B, H, W, 3) float64
        luminance = batch @ _LUMA.astype(np.float64)  # (B, H, W)
        global_statistics = np.column_stack(
            [
                luminance.mean(axis=(1, 2)),
                luminance.std(axis=(1, 2)),
                batch.mean(axis=(1, 2)),  # (B, 3)
            ]
        )
        centred = (luminance - luminance.mean(axis=(1, 2), keepdims=True)).astype(np.float32)
        spectrum = scipy.fft.fft2(centred)  # (B, H, W) complex64
        responses = scipy.fft.ifft2(spectrum[:, None] * filters[None])  # (B, K, H, W)
        energy = responses.real**2 + responses.imag**2  # (B, K, H, W)
        pooled = _cell_means(energy.astype(np.float64), grid)  # (B, K, grid, grid)
        statistics[start : start + len(batch)] = np.column_stack(
            [global_statistics, pooled.reshape(len(batch), -1)]
        )
    return statistics
