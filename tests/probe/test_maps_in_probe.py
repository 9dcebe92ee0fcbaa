"""Brain maps from the probe core: which data get which map, the values drawn, the panels.

Surface maps for fsaverage targets (``hemi``, ``vertex``), volume maps for voxels with an affine,
sensor topomaps for MEG with positions (the simulated subject's sensors sit on a BioSemi cap).
"""

from __future__ import annotations

import dataclasses
import json

import mne
import numpy as np
import pandas as pd
import pytest

from brainalign.callbacks.brain_logging import _log_figures
from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import EncodingConfig
from brainalign.probe.fitting import fit_layer
from brainalign.probe.formats import load_brain, load_fmri_folder, write_fmri_folder
from brainalign.probe.pipeline import summarise_fits
from brainalign.probe.report import probe_figures
from brainalign.probe.simulate import simulate_subject
from brainalign.probe.target_maps import TargetMaps

CONFIG = EncodingConfig(backend="numpy", n_folds=3)
N_STIMULI = 60


def fmri(targets: pd.DataFrame, *, affine=None, seed=0) -> tuple[BrainData, list[np.ndarray]]:
    """Responses driven by two random layers (layer 1 stronger), and those layers."""
    rng = np.random.default_rng(seed)
    layers = [rng.normal(size=(N_STIMULI, 5)) for _ in range(2)]
    signal = layers[1] @ rng.normal(size=(5, len(targets))) + 0.3 * (
        layers[0] @ rng.normal(size=(5, len(targets)))
    )
    brain = BrainData(
        modality="fmri",
        subject="s",
        data=signal + rng.normal(size=signal.shape),
        stimulus_ids=[f"i{index}" for index in range(N_STIMULI)],
        targets=targets,
        affine=affine,
    )
    return brain, layers


def scores_of(brain, layers):
    fits = [fit_layer(index, layer, brain, CONFIG) for index, layer in enumerate(layers)]
    return summarise_fits(fits, {0: 0.0, 1: 1.0}, brain, config=CONFIG), fits


def surface_targets(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "roi": np.repeat(["V1", "V2"], n // 2),
            "hemi": np.tile(["lh", "rh"], n // 2),
            "vertex": np.concatenate([np.arange(n - 1) * 37, [-1]]),  # the last: not on a mesh
        }
    )


def volume_targets(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    indices = rng.choice(6 * 7 * 8, n, replace=False)
    i, j, k = np.unravel_index(indices, (6, 7, 8))
    return pd.DataFrame(
        {
            "roi": np.repeat(["V1", "V2"], n // 2),
            **{"voxel_i": i, "voxel_j": j, "voxel_k": k},
            **{"x": 2.0 * i - 10, "y": 2.0 * j - 20, "z": 2.0 * k - 30},  # the affine below
        }
    )


def test_surface_targets_give_surface_maps_of_each_targets_r():
    brain, layers = fmri(surface_targets())
    scores, fits = scores_of(brain, layers)
    maps = scores.maps
    assert maps.kind == "surface"
    np.testing.assert_array_equal(maps.vertices, np.arange(39) * 37)  # vertex -1 left out
    expected = np.stack([fit.target_r for fit in fits])[:, :39]
    np.testing.assert_allclose(maps.r_by_layer, expected, rtol=1e-6)
    best_r, depth = maps.score_maps()
    np.testing.assert_allclose(best_r.values, expected.max(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(depth.values, np.where(expected[1] >= expected[0], 1.0, 0.0))


def test_volume_targets_keep_their_affine_through_a_folder_and_give_volume_maps(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -20, -30]
    brain, layers = fmri(volume_targets(), affine=affine)
    ids = pd.DataFrame({"stimulus_id": brain.stimulus_ids})
    folder = write_fmri_folder(tmp_path / "vol", brain, ids)
    assert json.loads((folder / "info.json").read_text())["affine"] == affine.tolist()
    (folder / "images").mkdir()
    from PIL import Image

    for stimulus_id in brain.stimulus_ids:
        Image.new("RGB", (4, 4)).save(folder / "images" / f"{stimulus_id}.png")
    loaded, _ = load_fmri_folder(folder)
    np.testing.assert_array_equal(loaded.affine, affine)
    np.testing.assert_array_equal(loaded.voxel_indices(), brain.voxel_indices())
    scores, _ = scores_of(loaded, layers)
    assert scores.maps.kind == "volume"
    np.testing.assert_array_equal(scores.maps.affine, affine)


def test_targets_without_places_have_no_maps_and_bad_affines_are_refused():
    brain, layers = fmri(pd.DataFrame({"roi": ["V1"] * 10 + ["V2"] * 10}))
    assert scores_of(brain, layers)[0].maps is None
    with pytest.raises(ValueError, match="needs the voxel index columns"):
        fmri(pd.DataFrame({"roi": ["V1"] * 4}), affine=np.eye(4))
    with pytest.raises(ValueError, match=r"finite \(4, 4\)"):
        fmri(volume_targets(), affine=np.eye(3))


@pytest.fixture(scope="module")
def simulated_meg(tmp_path_factory):
    subject = simulate_subject(
        tmp_path_factory.mktemp("sim") / "sim", n_stimuli=N_STIMULI, image_size=16
    )
    brain, _ = load_brain(str(subject.meg_path))
    return brain


def test_simulated_sensors_sit_on_a_biosemi_cap(simulated_meg):
    positions = np.array([channel["loc"][:3] for channel in simulated_meg.info["chs"]])
    cap = mne.channels.make_standard_montage("biosemi32").get_positions()["ch_pos"]
    np.testing.assert_allclose(positions, np.array(list(cap.values())), atol=1e-6)
    assert len(np.unique(positions.round(6), axis=0)) == 32


def test_meg_with_positions_gives_topomaps_at_the_window_centres(simulated_meg):
    brain = simulated_meg
    rng = np.random.default_rng(0)
    r_by_layer = rng.uniform(size=(3, brain.n_targets))
    maps = TargetMaps.of(brain, r_by_layer, np.array([0.0, 0.5, 1.0]), [(0.1, 0.2), (0.7, 0.8)])
    assert maps.kind == "sensors" and maps.latencies == pytest.approx((0.15,))  # 0.75 is outside
    best_r, depth = maps.score_maps()
    assert best_r.values.shape == depth.values.shape == brain.data.shape[1:]
    np.testing.assert_allclose(best_r.values, brain.unflatten(r_by_layer.max(axis=0)), rtol=1e-6)
    info = mne.create_info(brain.info["ch_names"], brain.info["sfreq"], "mag")
    unplaced = dataclasses.replace(brain, info=info)
    assert TargetMaps.of(unplaced, r_by_layer, np.zeros(3)) is None  # no positions: no topomap


@pytest.mark.slow
def test_probe_figures_draw_topomaps_and_metric_panels_and_go_to_tensorboard(simulated_meg):
    brain = simulated_meg
    rng = np.random.default_rng(1)
    layers = [rng.normal(size=(N_STIMULI, 4)) for _ in range(3)]
    fits = [fit_layer(index, layer, brain, CONFIG) for index, layer in enumerate(layers)]
    scores = summarise_fits(fits, {0: 0.0, 1: 0.5, 2: 1.0}, brain, config=CONFIG)
    figures = dict(probe_figures(scores.table, None, maps=scores.maps))
    assert set(figures) == {"meg_time_courses", "topomap"}
    n_latencies = len(scores.maps.latencies)
    assert len(figures["topomap"].axes) == 2 * (n_latencies + 1)  # 2 maps x (latencies + bar)

    class Writer:
        def __init__(self) -> None:
            self.tags: list[str] = []

        def add_figure(self, tag, figure, step):
            self.tags.append(tag)

    writer = Writer()
    _log_figures(writer, "brain", scores, 5, {})
    assert writer.tags == [
        f"brain_figures/{brain.subject}/meg/time_courses",
        f"brain_figures/{brain.subject}/meg/topomap",
    ]


@pytest.mark.slow
def test_surface_figure_from_the_core_has_every_hemisphere_view_and_map(tmp_path):
    brain, layers = fmri(surface_targets(200), seed=2)
    scores, _ = scores_of(brain, layers)
    figures = dict(probe_figures(scores.table, brain.rois, maps=scores.maps))
    surface = figures["surface_map"]
    assert sum(axis.name == "3d" for axis in surface.axes) == 2 * 2 * 2  # maps x hemis x views
    surface.savefig(tmp_path / "surface.png", dpi=40)
    assert (tmp_path / "surface.png").stat().st_size > 10_000


@pytest.mark.slow
def test_volume_figure_from_the_core_has_three_cuts_per_map():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    brain, layers = fmri(volume_targets(), affine=affine, seed=3)
    scores, _ = scores_of(brain, layers)
    figures = dict(probe_figures(scores.table, brain.rois, maps=scores.maps))
    assert len(figures["volume_map"].axes) == 2 * (1 + 3 + 1)  # per map: frame, 3 cuts, bar
