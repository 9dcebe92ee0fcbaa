"""Brain maps render to PNG with the right panels; values land where they belong; bad input."""

from __future__ import annotations

import matplotlib.pyplot as plt
import mne
import numpy as np
import pytest

from brainalign.probe.maps import (
    ScoreMap,
    best_layer_maps,
    meg_topomap_figure,
    surface_map_figure,
    surface_values,
    volume_image,
    volume_map_figure,
)

FSAVERAGE5 = 10242


def saved(figure, path) -> int:
    figure.savefig(path, dpi=40)
    plt.close(figure)
    return path.stat().st_size


def test_best_layer_maps_take_the_best_r_and_its_depth():
    r_by_layer = np.array([[0.1, 0.5, np.nan], [0.3, 0.2, np.nan], [0.2, 0.5, np.nan]])
    best_r, depth = best_layer_maps(r_by_layer, np.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(best_r.values, [0.3, 0.5, np.nan])
    np.testing.assert_array_equal(depth.values, [0.5, 0.0, np.nan])  # a tie goes to the shallower
    assert (depth.vmin, depth.vmax) == (0.0, 1.0)


def test_surface_values_put_each_target_on_its_vertex_and_hemisphere():
    on_mesh = surface_values(
        np.array([1.0, 2.0, 3.0, 4.0]),
        ["lh", "rh", "left", "rh"],
        np.array([5, 5, 9, FSAVERAGE5 + 7]),  # the last is a vertex of a denser mesh only
        FSAVERAGE5,
    )
    assert on_mesh["left"].shape == on_mesh["right"].shape == (FSAVERAGE5,)
    assert on_mesh["left"][5] == 1.0 and on_mesh["left"][9] == 3.0 and on_mesh["right"][5] == 2.0
    assert np.isfinite(on_mesh["left"]).sum() == 2 and np.isfinite(on_mesh["right"]).sum() == 1


@pytest.mark.slow
def test_surface_figure_renders_every_map_hemisphere_and_view(tmp_path):
    rng = np.random.default_rng(0)
    vertices = np.tile(np.arange(0, FSAVERAGE5, 3), 2)
    hemis = np.repeat(["lh", "rh"], len(vertices) // 2)
    r_by_layer = rng.uniform(0, 0.6, (4, len(vertices)))
    figure = surface_map_figure(
        best_layer_maps(r_by_layer, np.linspace(0, 1, 4)),
        hemis=hemis,
        vertices=vertices,
        views=("lateral", "ventral"),
        title="simulated",
    )
    three_d = [axis for axis in figure.axes if axis.name == "3d"]
    assert len(three_d) == 2 * 2 * 2  # maps x hemispheres x views
    assert len(figure.axes) == len(three_d) + 2  # one colour bar per map
    assert saved(figure, tmp_path / "surface.png") > 10_000


def test_volume_image_puts_values_at_their_voxels():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    indices = np.array([[0, 1, 2], [3, 4, 5], [6, 0, 1]])
    image = volume_image(np.array([0.5, -1.0, np.nan]), indices, affine, shape=(7, 8, 9))
    data = np.asarray(image.dataobj)
    assert data.shape == (7, 8, 9)
    assert data[0, 1, 2] == 0.5 and data[3, 4, 5] == -1.0 and data[6, 0, 1] == 0.0
    np.testing.assert_array_equal(image.affine, affine)


def test_volume_figure_renders_three_cuts_and_a_colour_bar_per_map(tmp_path):
    rng = np.random.default_rng(1)
    indices = np.argwhere(np.ones((7, 8, 9), dtype=bool))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-10.0, -12.0, -14.0]
    maps = best_layer_maps(rng.uniform(0, 0.5, (3, len(indices))), np.array([0.0, 0.5, 1.0]))
    figure = volume_map_figure(maps, voxel_indices=indices, affine=affine, title="volume")
    assert len(figure.axes) == 2 * (1 + 3 + 1)  # per map: frame, three cuts, colour bar
    assert saved(figure, tmp_path / "volume.png") > 5_000


def eeg_info(sfreq: float) -> mne.Info:
    names = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Fz", "Cz", "Pz"]
    info = mne.create_info(names, sfreq, "eeg")
    info.set_montage("standard_1020", verbose="error")
    return info


def magnetometer_info(n_channels: int, sfreq: float, positions: bool = True) -> mne.Info:
    info = mne.create_info([f"MEG{index:03d}" for index in range(n_channels)], sfreq, "mag")
    if positions:
        rng = np.random.default_rng(2)
        polar, azimuth = rng.uniform(0, 1.3, n_channels), rng.uniform(0, 2 * np.pi, n_channels)
        for channel, theta, phi in zip(info["chs"], polar, azimuth):
            direction = np.array(
                [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)]
            )
            channel["loc"][:3] = 0.1 * direction
            channel["loc"][9:12] = direction
    return info


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["eeg", "mag"])
def test_topomap_figure_renders_a_row_per_map_and_a_topomap_per_latency(tmp_path, kind):
    sfreq = 50.0
    times = -0.1 + np.arange(31) / sfreq
    info = eeg_info(sfreq) if kind == "eeg" else magnetometer_info(20, sfreq)
    rng = np.random.default_rng(3)
    n_channels = len(info["ch_names"])
    maps = [
        ScoreMap(f"layer {layer} R", rng.uniform(0, 0.4, (n_channels, len(times))), cmap="inferno")
        for layer in range(3)
    ]
    figure = meg_topomap_figure(maps, info=info, times=times, latencies=[0.0, 0.1, 0.2, 0.3])
    assert len(figure.axes) == 3 * (4 + 1)  # per map: four latencies and a colour bar
    titles = [axis.get_title() for axis in figure.axes[:4]]
    assert titles == ["0 ms", "100 ms", "200 ms", "300 ms"]
    assert saved(figure, tmp_path / f"topomap_{kind}.png") > 5_000


def test_bad_input_is_one_clear_value_error():
    sfreq = 50.0
    times = np.arange(10) / sfreq
    score = [ScoreMap("R", np.zeros((8, 10)))]
    with pytest.raises(ValueError, match="no sensor positions for 8 channel"):
        meg_topomap_figure(
            score, info=magnetometer_info(8, sfreq, False), times=times, latencies=[0.1]
        )
    with pytest.raises(ValueError, match="outside"):
        meg_topomap_figure(score, info=magnetometer_info(8, sfreq), times=times, latencies=[0.5])
    with pytest.raises(ValueError, match=r"info\['sfreq'\] is 100.0 Hz"):
        meg_topomap_figure(score, info=magnetometer_info(8, 100.0), times=times, latencies=[0.1])
    with pytest.raises(ValueError, match=r"expected \(n_channels, n_times\) = \(9, 10\)"):
        meg_topomap_figure(score, info=magnetometer_info(9, sfreq), times=times, latencies=[0.1])
    with pytest.raises(ValueError, match="one value per target"):
        volume_map_figure(
            [ScoreMap("R", np.zeros(3))], voxel_indices=np.zeros((4, 3), int), affine=np.eye(4)
        )
    with pytest.raises(ValueError, match="past the grid shape"):
        volume_image(np.zeros(1), np.array([[5, 0, 0]]), np.eye(4), shape=(3, 3, 3))
    with pytest.raises(ValueError, match="unknown hemisphere"):
        surface_values(np.zeros(1), ["middle"], np.array([0]), FSAVERAGE5)
    with pytest.raises(ValueError, match="mesh must be one of"):
        surface_map_figure(
            [ScoreMap("R", np.zeros(1))], hemis=["lh"], vertices=[0], mesh="fsaverage9"
        )
