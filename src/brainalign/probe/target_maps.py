"""What a probe keeps to draw its scores on the brain: per-target R and the targets' places.

Built by :func:`brainalign.probe.pipeline.summarise_fits` when the targets can be placed
(fsaverage vertices, voxels with an affine, MEG sensors with positions) and drawn by
:func:`brainalign.probe.report.map_figures` (the figures are in :mod:`brainalign.probe.maps`).
No plotting library is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from brainalign.probe.brain_data import BrainData

__all__ = ["TargetMaps"]


@dataclass(frozen=True)
class TargetMaps:
    """Per-target R of every layer of one probe, with what drawing the targets needs.

    Attributes
    ----------
    kind : {"surface", "volume", "sensors"}
        fsaverage vertices (targets with ``hemi`` and ``vertex``), voxels (an affine and
        ``voxel_i/j/k``), or MEG sensors with positions (the epochs' info).
    r_by_layer : ndarray of shape (n_layers, n_targets), float32
        MEG: (n_layers, n_channels * n_times), channel-major.
    depths : ndarray of shape (n_layers,)
    hemis, vertices : ndarrays of shape (n_targets,), surface only
    voxel_indices : ndarray of shape (n_targets, 3), volume only
    affine : ndarray of shape (4, 4), volume only
    info : mne.Info, sensors only
    times : ndarray of shape (n_times,), sensors only
    latencies : tuple of float, sensors only
        Seconds at which topomaps are drawn.
    """

    kind: str
    r_by_layer: np.ndarray
    depths: np.ndarray
    hemis: np.ndarray | None = None
    vertices: np.ndarray | None = None
    voxel_indices: np.ndarray | None = None
    affine: np.ndarray | None = None
    info: Any = None
    times: np.ndarray | None = None
    latencies: tuple[float, ...] = ()

    @classmethod
    def of(
        cls,
        brain: BrainData,
        r_by_layer: np.ndarray,
        depths: np.ndarray,
        meg_windows: Sequence[tuple[float, float]] = (),
    ) -> TargetMaps | None:
        """The maps ``brain``'s targets allow (None when they cannot be placed).

        Parameters
        ----------
        brain : BrainData
        r_by_layer : ndarray of shape (n_layers, n_targets_flat)
        depths : ndarray of shape (n_layers,)
        meg_windows : sequence of (start, end) in seconds
            Topomaps are drawn at the centres of those inside the epoch (else at four evenly
            spaced times).
        """
        r_by_layer = np.asarray(r_by_layer, dtype=np.float32)
        depths = np.asarray(depths, dtype=np.float64)
        targets = brain.targets
        if brain.modality == "meg":
            if brain.info is None or not _has_positions(brain.info):
                return None
            times = np.asarray(brain.times, dtype=np.float64)
            centres = [(start + end) / 2 for start, end in meg_windows]
            latencies = [t for t in centres if times[0] <= t <= times[-1]]
            if not latencies:
                latencies = list(np.linspace(times[0], times[-1], 6)[1:-1])
            return cls(
                "sensors", r_by_layer, depths, info=brain.info, times=times,
                latencies=tuple(float(t) for t in latencies),
            )  # fmt: skip
        if brain.affine is not None:
            return cls(
                "volume",
                r_by_layer,
                depths,
                voxel_indices=brain.voxel_indices(),
                affine=np.asarray(brain.affine),
            )
        if {"hemi", "vertex"} <= set(targets.columns):
            vertices = pd.to_numeric(targets["vertex"], errors="coerce").to_numpy()
            placed = np.isfinite(vertices) & (vertices >= 0)
            if placed.any():
                return cls(
                    "surface",
                    r_by_layer[:, placed],
                    depths,
                    hemis=targets["hemi"].astype(str).to_numpy()[placed],
                    vertices=vertices[placed].astype(np.int64),
                )
        return None

    def score_maps(self) -> list[Any]:
        """Best R and best-layer depth per target, as two ``ScoreMap`` (MEG: of shape
        (n_channels, n_times))."""
        from brainalign.probe.maps import best_layer_maps

        maps = best_layer_maps(self.r_by_layer, self.depths)
        if self.kind != "sensors":
            return maps
        shape = (len(self.info["ch_names"]), len(self.times))
        return [replace(item, values=np.asarray(item.values).reshape(shape)) for item in maps]


def _has_positions(info: Any) -> bool:
    """Whether every data channel of ``info`` has a sensor position."""
    import mne

    picks = mne.pick_types(info, meg=True, eeg=True, exclude=[])
    if len(picks) != len(info["ch_names"]):
        return False
    locations = np.array([info["chs"][index]["loc"][:3] for index in picks])
    return bool(np.isfinite(locations).all() and (np.abs(locations).sum(axis=1) > 0).all())
