"""Brain maps of scores: fsaverage surfaces, volume slices and MEG sensor topomaps.

Every function returns a matplotlib Figure (for the probe's ``figures/`` folder and for
TensorBoard's ``add_figure``). A map is a :class:`ScoreMap`: one value per target (vertex,
voxel) or, for MEG, per channel and time sample, with its colour scale.

- Surface (:func:`surface_map_figure`): nilearn's ``plot_surf_stat_map`` on an fsaverage mesh,
  one row per map, one column per hemisphere and view. nilearn ships fsaverage5 (10,242
  vertices per hemisphere) and fetches the other densities from the internet. Targets given on
  a denser fsaverage (NSD's fsaverage: 163,842) are shown at the vertices they share with the
  mesh drawn: FreeSurfer's icosahedral meshes number the vertices of each coarser level first,
  so fsaverage5's vertex k is fsaverage's vertex k for k < 10,242 (a subsample, not an average).
- Volume (:func:`volume_map_figure`): a NIfTI image built from the values, their voxel indices
  and the affine (:func:`volume_image`), through nilearn's ``plot_stat_map``.
- MEG (:func:`meg_topomap_figure`): an ``mne.EvokedArray`` of scores with the epochs' info,
  ``plot_topomap`` at chosen latencies, one row per map.

:class:`brainalign.probe.target_maps.TargetMaps` is what a probe keeps for these maps
(per-target R of every layer and where the targets are);
:func:`brainalign.probe.report.map_figures` draws the ones that apply.

Example::

    maps = best_layer_maps(r_by_layer, depths)  # best R and best-layer depth per target
    figure = surface_map_figure(maps, hemis=targets["hemi"], vertices=targets["vertex"])
    figure.savefig("figures/surface.png")
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from brainalign.probe.scores import best_layer_depths

__all__ = [
    "BUNDLED_MESHES",
    "ScoreMap",
    "best_layer_maps",
    "meg_topomap_figure",
    "surface_map_figure",
    "surface_values",
    "volume_image",
    "volume_map_figure",
]

BUNDLED_MESHES: tuple[str, ...] = ("fsaverage5",)
"""fsaverage densities that nilearn ships (no download needed)."""
_MESH_VERTICES = {
    "fsaverage3": 642,
    "fsaverage4": 2562,
    "fsaverage5": 10242,
    "fsaverage6": 40962,
    "fsaverage7": 163842,
    "fsaverage": 163842,
}
_HEMISPHERES = {
    "lh": "left",
    "left": "left",
    "l": "left",
    "rh": "right",
    "right": "right",
    "r": "right",
}
_SURFACE_VIEWS = ("lateral", "medial", "dorsal", "ventral", "anterior", "posterior")
# Volume maps: outside voxels are 0 and hidden by a threshold below every shown value; a value
# of exactly 0 (e.g. the shallowest depth) is nudged to this so that it stays visible.
_SHOWN_ZERO, _HIDDEN_BELOW = 1e-30, 1e-35


@dataclass(frozen=True)
class ScoreMap:
    """One map to draw.

    Parameters
    ----------
    label : str
        Row title and colour-bar label ("best R", "best-layer depth").
    values : ndarray of shape (n_targets,), or (n_channels, n_times) for MEG
        NaN where there is no value.
    cmap : str, default="viridis"
    vmin, vmax : float, optional
        Colour limits; default the finite values' minimum and maximum.
    """

    label: str
    values: np.ndarray
    cmap: str = "viridis"
    vmin: float | None = None
    vmax: float | None = None

    def limits(self) -> tuple[float, float]:
        finite = np.asarray(self.values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        low = self.vmin if self.vmin is not None else (finite.min() if finite.size else 0.0)
        high = self.vmax if self.vmax is not None else (finite.max() if finite.size else 1.0)
        return float(low), float(high if high > low else low + 1e-12)


def best_layer_maps(r_by_layer: np.ndarray, depths: np.ndarray) -> list[ScoreMap]:
    """The two maps of Study A per target: best R over layers, and that layer's depth.

    Parameters
    ----------
    r_by_layer : ndarray of shape (n_layers, n_targets)
    depths : ndarray of shape (n_layers,), relative depths in [0, 1]

    Returns
    -------
    maps : list of 2 ScoreMap
        "best R" (inferno, from 0) and "best-layer depth" (viridis, 0 to 1; ties go to the
        shallower layer, :func:`brainalign.probe.scores.best_layer_depths`).
    """
    r_by_layer = np.asarray(r_by_layer, dtype=np.float64)
    depth = best_layer_depths(r_by_layer, depths)  # checks the shapes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN targets
        best = np.nanmax(r_by_layer, axis=0)
    return [
        ScoreMap("best R", best, cmap="inferno", vmin=0.0),
        ScoreMap("best-layer depth", depth, cmap="viridis", vmin=0.0, vmax=1.0),
    ]


def _colour_bar(figure: Figure, axis: Any, score_map: ScoreMap) -> None:
    low, high = score_map.limits()
    mappable = ScalarMappable(norm=Normalize(low, high), cmap=score_map.cmap)
    figure.colorbar(mappable, cax=axis, label=score_map.label)


def _check_maps(maps: Sequence[ScoreMap], n_values: int | None, what: str) -> list[ScoreMap]:
    maps = list(maps)
    if not maps or not all(isinstance(item, ScoreMap) for item in maps):
        raise ValueError(f"{what} needs a non-empty list of ScoreMap")
    if n_values is not None:
        for item in maps:
            if np.shape(item.values) != (n_values,):
                raise ValueError(
                    f"map {item.label!r} has values of shape {np.shape(item.values)}; expected "
                    f"one value per target ({n_values},)"
                )
    return maps


# ---------------------------------------------------------------------------- surface
def surface_values(
    values: np.ndarray, hemis: Sequence[str], vertices: Sequence[int], n_vertices: int
) -> dict[str, np.ndarray]:
    """Scatter per-target values onto the vertices of one mesh, per hemisphere.

    Parameters
    ----------
    values : ndarray of shape (n_targets,)
    hemis : sequence of shape (n_targets,)
        "lh"/"rh" (or "left"/"right") of each target.
    vertices : sequence of int of shape (n_targets,)
        Vertex index of each target on its hemisphere's fsaverage mesh (any density).
    n_vertices : int
        Vertices per hemisphere of the mesh drawn; targets with a larger index are not shown
        (see the module docstring on icosahedral numbering).

    Returns
    -------
    by_hemisphere : dict with keys "left" and "right", ndarrays of shape (n_vertices,)
        NaN at vertices without a target.
    """
    values = np.asarray(values, dtype=np.float64)
    hemis = np.asarray([str(hemi).lower() for hemi in hemis])
    vertices = np.asarray(vertices)
    if hemis.shape != values.shape or vertices.shape != values.shape:
        raise ValueError(
            f"values, hemis and vertices need one entry per target: shapes {values.shape}, "
            f"{hemis.shape}, {vertices.shape}"
        )
    unknown = sorted(set(hemis) - set(_HEMISPHERES))
    if unknown:
        raise ValueError(f"unknown hemisphere label(s) {unknown}; use 'lh'/'rh' or 'left'/'right'")
    if not np.issubdtype(vertices.dtype, np.integer) or (vertices < 0).any():
        raise ValueError("vertices must be non-negative integer vertex indices")
    by_hemisphere = {}
    for hemisphere in ("left", "right"):
        shown = np.array([_HEMISPHERES[h] == hemisphere for h in hemis]) & (vertices < n_vertices)
        array = np.full(n_vertices, np.nan)
        array[vertices[shown]] = values[shown]
        by_hemisphere[hemisphere] = array
    return by_hemisphere


def _load_mesh(mesh: str, surface: str) -> tuple[Any, Any]:
    from nilearn import datasets

    if mesh not in _MESH_VERTICES:
        raise ValueError(f"mesh must be one of {sorted(_MESH_VERTICES)}; got {mesh!r}")
    try:
        meshes = datasets.load_fsaverage(mesh)
        sulcal = datasets.load_fsaverage_data(mesh, mesh_type=surface, data_type="sulcal")
    except Exception as error:  # nilearn fetches all but fsaverage5 from the internet
        raise ValueError(
            f"fsaverage mesh {mesh!r} could not be loaded ({error}); nilearn ships only "
            f"{', '.join(BUNDLED_MESHES)}, the others need a download"
        ) from error
    return meshes[surface], sulcal.data


def surface_map_figure(
    maps: Sequence[ScoreMap],
    *,
    hemis: Sequence[str],
    vertices: Sequence[int],
    mesh: str = "fsaverage5",
    surface: str = "inflated",
    views: Sequence[str] = ("lateral", "medial"),
    title: str = "",
) -> Figure:
    """Per-vertex maps on the fsaverage surface: one row per map, one column per hemisphere/view.

    Parameters
    ----------
    maps : sequence of ScoreMap, values of shape (n_targets,)
    hemis, vertices : sequences of shape (n_targets,)
        Each target's hemisphere and fsaverage vertex index (``BrainData.targets["hemi"]`` and
        ``["vertex"]`` of the NSD surface loader).
    mesh : str, default="fsaverage5"
        nilearn fsaverage density drawn (fsaverage5 is shipped, others are downloaded).
    surface : {"inflated", "pial", "white_matter", "sphere", "flat"}, default="inflated"
    views : sequence of str, default=("lateral", "medial")
    title : str

    Returns
    -------
    figure : Figure
        ``len(maps) * 2 * len(views)`` 3-D axes and one colour bar per map.
    """
    from nilearn import plotting

    maps = _check_maps(maps, len(vertices), "surface_map_figure")
    for view in views:
        if view not in _SURFACE_VIEWS:
            raise ValueError(f"unknown view {view!r}; choose among {', '.join(_SURFACE_VIEWS)}")
    meshes, sulcal = _load_mesh(mesh, surface)
    n_columns = 2 * len(views)
    figure = plt.figure(figsize=(2.4 * n_columns + 0.8, 2.4 * len(maps) + 0.4))
    grid = figure.add_gridspec(len(maps), n_columns + 1, width_ratios=[1] * n_columns + [0.06])
    for row, score_map in enumerate(maps):
        on_mesh = surface_values(score_map.values, hemis, vertices, _MESH_VERTICES[mesh])
        low, high = score_map.limits()
        for column, (view, hemisphere) in enumerate(
            (view, hemisphere) for view in views for hemisphere in ("left", "right")
        ):
            axis = figure.add_subplot(grid[row, column], projection="3d")
            plotting.plot_surf_stat_map(
                meshes.parts[hemisphere],
                on_mesh[hemisphere],
                bg_map=sulcal.parts[hemisphere],
                hemi=hemisphere,
                view=view,
                axes=axis,
                figure=figure,
                colorbar=False,
                cmap=score_map.cmap,
                vmin=low,
                vmax=high,
                symmetric_cbar=False,
            )
            axis.set_title(f"{hemisphere} {view}", fontsize=8)
        _colour_bar(figure, figure.add_subplot(grid[row, -1]), score_map)
    if title:
        figure.suptitle(title)
    return figure


# ---------------------------------------------------------------------------- volume
def volume_image(
    values: np.ndarray,
    voxel_indices: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int] | None = None,
) -> Any:
    """A NIfTI image holding one value per target voxel (0 elsewhere).

    Parameters
    ----------
    values : ndarray of shape (n_voxels,)
    voxel_indices : int ndarray of shape (n_voxels, 3)
        (i, j, k) of each target in the grid of ``affine`` (THINGS-fMRI ``voxel_x/y/z``, NSD
        ``voxel_i/j/k``).
    affine : ndarray of shape (4, 4)
        Voxel to world (mm) transform of that grid.
    shape : sequence of 3 int, optional
        Grid shape; default just large enough for the indices.

    Returns
    -------
    image : nibabel.Nifti1Image, float32
        Non-finite values are left out (0). To tell an exact 0 from "no voxel", maps drawn by
        :func:`volume_map_figure` nudge zeros to 1e-30.
    """
    import nibabel

    values = np.asarray(values, dtype=np.float64)
    voxel_indices = np.asarray(voxel_indices)
    affine = np.asarray(affine, dtype=np.float64)
    if voxel_indices.shape != (values.shape[0], 3) or values.ndim != 1:
        raise ValueError(
            f"voxel_indices must have shape (n_voxels, 3) matching values {values.shape}; got "
            f"{voxel_indices.shape}"
        )
    if not np.issubdtype(voxel_indices.dtype, np.integer) or (voxel_indices < 0).any():
        raise ValueError("voxel_indices must be non-negative integers (i, j, k)")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must have shape (4, 4); got {affine.shape}")
    grid = tuple(voxel_indices.max(axis=0) + 1) if shape is None else tuple(shape)
    if len(grid) != 3 or (voxel_indices >= np.asarray(grid)).any():
        raise ValueError(f"voxel indices reach past the grid shape {grid}")
    volume = np.zeros(grid, dtype=np.float32)
    finite = np.isfinite(values)
    volume[tuple(voxel_indices[finite].T)] = values[finite]
    return nibabel.Nifti1Image(volume, affine)


def volume_map_figure(
    maps: Sequence[ScoreMap],
    *,
    voxel_indices: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int] | None = None,
    bg_img: Any = None,
    display_mode: str = "ortho",
    cut_coords: Any = None,
    title: str = "",
) -> Figure:
    """Per-voxel maps as slices (nilearn ``plot_stat_map``), one row per map.

    Parameters
    ----------
    maps : sequence of ScoreMap, values of shape (n_voxels,)
    voxel_indices, affine, shape
        As in :func:`volume_image`.
    bg_img : image, "mni" or None, default=None
        Background: None draws none (right for a subject's native space); "mni" is nilearn's
        shipped MNI152 template (only for data in MNI space).
    display_mode : str, default="ortho"
        nilearn display mode ("ortho": three cuts; "z", "x", "y" with ``cut_coords``...).
    cut_coords : optional
        Passed to nilearn.
    title : str

    Returns
    -------
    figure : Figure
        One row of nilearn cut axes (three for "ortho") and a colour bar per map.
    """
    from nilearn import datasets, plotting

    maps = _check_maps(maps, len(voxel_indices), "volume_map_figure")
    background = (
        datasets.load_mni152_template() if isinstance(bg_img, str) and bg_img == "mni" else bg_img
    )
    figure = plt.figure(figsize=(8.0, 2.8 * len(maps) + 0.3))
    height = 1.0 / len(maps)
    for row, score_map in enumerate(maps):
        values = np.asarray(score_map.values, dtype=np.float64)
        values = np.where(values == 0.0, _SHOWN_ZERO, values)
        image = volume_image(values, voxel_indices, affine, shape)
        low, high = score_map.limits()
        axis = figure.add_axes((0.0, 1.0 - (row + 1) * height, 1.0, height * 0.92))
        plotting.plot_stat_map(
            image,
            bg_img=background,
            axes=axis,
            figure=figure,
            display_mode=display_mode,
            cut_coords=cut_coords,
            cmap=score_map.cmap,
            vmin=low,
            vmax=high,
            symmetric_cbar=False,
            threshold=_HIDDEN_BELOW,
            draw_cross=False,
            black_bg=False,
            title=score_map.label if not title or row else f"{title}: {score_map.label}",
        )
    return figure


# ---------------------------------------------------------------------------- MEG
def _check_positions(info: Any, picks: np.ndarray) -> None:
    locations = np.array([info["chs"][index]["loc"][:3] for index in picks])
    missing = ~(np.isfinite(locations).all(axis=1) & (np.abs(locations).sum(axis=1) > 0))
    if missing.any():
        names = [info["ch_names"][index] for index in picks[missing]]
        raise ValueError(
            f"the MEG info has no sensor positions for {len(names)} channel(s) (first: "
            f"{names[:3]}); use the info of the recorded epochs, or set a montage for EEG"
        )


def meg_topomap_figure(
    maps: Sequence[ScoreMap],
    *,
    info: Any,
    times: np.ndarray,
    latencies: Sequence[float],
    ch_type: str | None = None,
    title: str = "",
) -> Figure:
    """Sensor topomaps of scores at chosen latencies, one row per map (e.g. per layer).

    Parameters
    ----------
    maps : sequence of ScoreMap, values of shape (n_channels, n_times)
        Scores per channel and time sample (e.g. R of one layer), channels in ``info``'s order.
    info : mne.Info
        The epochs' measurement info (channel positions), ``BrainData.info``.
    times : ndarray of shape (n_times,)
        Seconds, evenly spaced (the epochs' times after resampling and cropping).
    latencies : sequence of float
        Seconds at which to draw a topomap, within ``times``.
    ch_type : str, optional
        Channel type to draw when ``info`` holds several ("mag", "grad", "eeg").
    title : str

    Returns
    -------
    figure : Figure
        ``len(maps) * len(latencies)`` topomap axes and one colour bar per map.
    """
    import mne

    times = np.asarray(times, dtype=np.float64)
    latencies = [float(latency) for latency in latencies]
    maps = _check_maps(maps, None, "meg_topomap_figure")
    n_channels = len(info["ch_names"])
    for item in maps:
        if np.shape(item.values) != (n_channels, times.size):
            raise ValueError(
                f"map {item.label!r} has values of shape {np.shape(item.values)}; expected "
                f"(n_channels, n_times) = ({n_channels}, {times.size}) for this info and times"
            )
    if times.size > 1 and not np.allclose(np.diff(times), np.diff(times)[0], rtol=1e-6):
        raise ValueError("times must be evenly spaced (the epochs' sample times)")
    outside = [latency for latency in latencies if not times[0] <= latency <= times[-1]]
    if not latencies or outside:
        raise ValueError(
            f"latencies must be a non-empty list within {times[0]:.3f}..{times[-1]:.3f} s; "
            f"outside: {outside}"
        )
    if times.size > 1 and not np.isclose(1.0 / np.diff(times)[0], info["sfreq"], rtol=1e-4):
        raise ValueError(
            f"times are spaced by {np.diff(times)[0]:.6g} s but info['sfreq'] is "
            f"{info['sfreq']} Hz; pass the info of the prepared epochs (BrainData.info)"
        )
    types = sorted(set(info.get_channel_types()))
    chosen = ch_type or next((kind for kind in ("mag", "grad", "eeg") if kind in types), None)
    if chosen is None or chosen not in types:
        raise ValueError(f"no {ch_type or 'mag/grad/eeg'} channels to draw; info has {types}")
    _check_positions(
        info, mne.pick_types(info, meg=chosen if chosen != "eeg" else False, eeg=chosen == "eeg")
    )
    figure = plt.figure(figsize=(1.9 * len(latencies) + 0.8, 2.0 * len(maps) + 0.3))
    grid = figure.add_gridspec(
        len(maps), len(latencies) + 1, width_ratios=[1] * len(latencies) + [0.08]
    )
    for row, score_map in enumerate(maps):
        evoked = mne.EvokedArray(
            np.asarray(score_map.values, dtype=np.float64), info, tmin=times[0], verbose="error"
        )
        axes = [figure.add_subplot(grid[row, column]) for column in range(len(latencies) + 1)]
        evoked.plot_topomap(
            times=latencies,
            ch_type=chosen,
            axes=axes,
            colorbar=True,
            scalings=1.0,
            units=score_map.label,
            cmap=score_map.cmap,
            vlim=score_map.limits(),
            time_unit="ms",
            show=False,
        )
        axes[0].set_ylabel(score_map.label)
    if title:
        figure.suptitle(title)
    return figure
