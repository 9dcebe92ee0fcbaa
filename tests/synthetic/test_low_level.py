"""Low-level statistics: known answers on uniform images and gratings."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.synthetic import low_level_statistic_names, low_level_statistics


def _grating(
    height: int, width: int, *, stripe_orientation: float, frequency: float, amplitude: float
) -> np.ndarray:
    """Grey grating (H, W, 3) uint8 around 128 whose stripes have the given orientation (degrees
    counter-clockwise from horizontal, y up) and frequency (cycles per pixel)."""
    rows, cols = np.mgrid[0:height, 0:width]
    x, y_up = cols.astype(float), -rows.astype(float)
    across = np.deg2rad(stripe_orientation + 90)  # luminance varies across the stripes
    phase = 2 * np.pi * frequency * (x * np.cos(across) + y_up * np.sin(across))
    grey = 128 + 127 * amplitude * np.cos(phase)
    return np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=-1)


def _column(name: str, **bank) -> int:
    return low_level_statistic_names(**bank).index(name)


def _band_energy(statistics: np.ndarray, orientation: int, frequency: float) -> np.ndarray:
    """Energy of one filter summed over the grid cells -> (n,)."""
    names = low_level_statistic_names()
    prefix = f"energy_ori{orientation}_sf{frequency:g}_"
    columns = [i for i, name in enumerate(names) if name.startswith(prefix)]
    assert len(columns) == 4
    return statistics[:, columns].sum(axis=1)


def test_names_match_columns():
    images = np.zeros((3, 16, 20, 3), dtype=np.uint8)
    statistics = low_level_statistics(images)
    names = low_level_statistic_names()
    assert statistics.shape == (3, len(names)) == (3, 5 + 4 * 3 * 4)
    assert names[:5] == ["luminance_mean", "contrast_rms", "red_mean", "green_mean", "blue_mean"]
    assert "energy_ori90_sf0.125_r1c0" in names
    assert len(set(names)) == len(names)
    bank = {"orientations": (0, 90), "spatial_frequencies": (0.1,), "grid": 3}
    assert low_level_statistics(images, **bank).shape == (3, len(low_level_statistic_names(**bank)))
    assert len(low_level_statistic_names(**bank)) == 5 + 2 * 1 * 9


def test_uniform_grey_has_zero_contrast_and_energy():
    images = np.full((2, 16, 24, 3), 77, dtype=np.uint8)
    images[1] = 200
    statistics = low_level_statistics(images)
    np.testing.assert_allclose(statistics[:, 0], [77 / 255, 200 / 255], rtol=1e-6)
    np.testing.assert_allclose(statistics[:, 1], 0.0, atol=1e-7)
    np.testing.assert_allclose(statistics[:, 2:5], [[77 / 255] * 3, [200 / 255] * 3], rtol=1e-6)
    np.testing.assert_allclose(statistics[:, 5:], 0.0, atol=1e-10)


def test_global_statistics_match_a_plain_loop():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 8, 9, 3), dtype=np.uint8)
    statistics = low_level_statistics(images, grid=1)
    for image, row in zip(images, statistics):
        pixels = image.astype(float) / 255
        luminance = 0.299 * pixels[..., 0] + 0.587 * pixels[..., 1] + 0.114 * pixels[..., 2]
        assert row[0] == pytest.approx(luminance.mean(), rel=1e-5)
        assert row[1] == pytest.approx(np.sqrt(((luminance - luminance.mean()) ** 2).mean()), 1e-4)
        np.testing.assert_allclose(row[2:5], pixels.reshape(-1, 3).mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize(("preferred", "orthogonal"), [(90, 0), (0, 90), (45, 135), (135, 45)])
def test_grating_drives_the_filter_of_its_orientation(preferred, orthogonal):
    image = _grating(32, 32, stripe_orientation=preferred, frequency=0.125, amplitude=0.8)
    statistics = low_level_statistics(image[None])
    assert (
        _band_energy(statistics, preferred, 0.125)[0]
        > 20 * _band_energy(statistics, orthogonal, 0.125)[0]
    )


def test_vertical_stripes_prefer_the_vertical_filter_on_a_non_square_image():
    image = _grating(24, 40, stripe_orientation=90, frequency=0.125, amplitude=0.8)
    statistics = low_level_statistics(image[None])
    assert _band_energy(statistics, 90, 0.125)[0] > 10 * _band_energy(statistics, 0, 0.125)[0]


def test_grating_energy_known_answer_and_frequency_tuning():
    # 8 whole cycles across 64 pixels: the grating is exactly periodic, so the matched filter
    # (gain 1, one-sided) passes half of the spectrum: energy = amplitude**2 / 4 in every cell.
    amplitude = 0.8 * 127 / 255  # luminance amplitude in [0, 1] units
    image = _grating(64, 64, stripe_orientation=90, frequency=0.125, amplitude=0.8)
    statistics = low_level_statistics(image[None])[0]
    for cell in ("r0c0", "r0c1", "r1c0", "r1c1"):
        energy = statistics[_column(f"energy_ori90_sf0.125_{cell}")]
        assert energy == pytest.approx(amplitude**2 / 4, rel=0.03)
    bands = [_band_energy(statistics[None], 90, f)[0] for f in (0.0625, 0.125, 0.25)]
    assert np.argmax(bands) == 1
    assert bands[1] > 10 * max(bands[0], bands[2])


def test_energy_is_localised_in_the_grid():
    image = _grating(32, 32, stripe_orientation=90, frequency=0.25, amplitude=0.9)
    image[:, 16:] = 128  # grating on the left half only
    statistics = low_level_statistics(image[None])[0]
    left = statistics[_column("energy_ori90_sf0.25_r0c0")]
    right = statistics[_column("energy_ori90_sf0.25_r0c1")]
    assert left > 10 * right


def test_batching_does_not_change_the_result():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 12, 12, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        low_level_statistics(images, batch_size=2), low_level_statistics(images), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((4, 8, 8), dtype=np.uint8), "shape"),
        (np.zeros((4, 8, 8, 4), dtype=np.uint8), "shape"),
        (np.zeros((2, 8, 8, 3), dtype=np.float32), "uint8"),
        (np.zeros((2, 1, 8, 3), dtype=np.uint8), "smaller than"),
    ],
)
def test_bad_images_are_clear_errors(images, message):
    with pytest.raises(ValueError, match=message):
        low_level_statistics(images)


def test_bad_bank_is_a_clear_error():
    images = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="Nyquist"):
        low_level_statistics(images, spatial_frequencies=(0.7,))
    with pytest.raises(ValueError, match="grid"):
        low_level_statistic_names(grid=0)
