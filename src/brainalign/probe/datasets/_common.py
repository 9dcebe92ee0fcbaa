"""Helpers shared by the named data set loaders: file checks, trial grouping, ROI tables.

Private: the public API is in the loader modules and :mod:`brainalign.probe.datasets`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.probe.rois import COORDINATE_COLUMNS
from brainalign.probe.stimuli import StimulusSet, format_id_list, resolve_image_path
from brainalign.utils.images import IMAGE_SUFFIXES

__all__ = [
    "TrialGroups",
    "average_trials",
    "find_images",
    "fsaverage_coordinates",
    "group_trials",
    "read_ctab",
    "require_dir",
    "require_file",
    "roi_centroids",
    "zscore_columns",
]


# ---------------------------------------------------------------------- files
def require_file(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` or raise FileNotFoundError naming the file and the folder searched."""
    if not path.is_file():
        where = path.parent if path.parent.is_dir() else f"{path.parent} (folder missing too)"
        extra = f"; {hint}" if hint else ""
        raise FileNotFoundError(f"{what} not found: looked for {path.name} in {where}{extra}")
    return path


def require_dir(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` or raise FileNotFoundError naming the missing folder."""
    if not path.is_dir():
        extra = f"; {hint}" if hint else ""
        raise FileNotFoundError(f"{what} not found: no folder {path}{extra}")
    return path


# ---------------------------------------------------------------------- trials
@dataclass(frozen=True)
class TrialGroups:
    """Trials grouped by stimulus.

    Parameters
    ----------
    stimulus_ids : list of str, length n_stimuli
    trial_rows : list of ndarray of int
        For each stimulus, the positions of its trials (in trial order).
    """

    stimulus_ids: list[str]
    trial_rows: list[np.ndarray]

    @property
    def counts(self) -> np.ndarray:
        """Trials per stimulus, shape (n_stimuli,)."""
        return np.array([len(rows) for rows in self.trial_rows], dtype=np.int64)

    @property
    def uniform_count(self) -> int | None:
        """The common number of trials per stimulus, or None when counts differ."""
        counts = self.counts
        if counts.size and counts.min() == counts.max():
            return int(counts[0])
        return None


def group_trials(trial_ids: Sequence[str], *, sort: bool = False) -> TrialGroups:
    """Group trial positions by stimulus id.

    Parameters
    ----------
    trial_ids : sequence of str, length n_trials
    sort : bool
        Order stimuli by id (else by first appearance).
    """
    ids = np.asarray([str(stimulus_id) for stimulus_id in trial_ids], dtype=object)
    order = sorted(set(ids)) if sort else list(dict.fromkeys(ids))
    position = {stimulus_id: i for i, stimulus_id in enumerate(order)}
    owner = np.array([position[stimulus_id] for stimulus_id in ids], dtype=np.int64)
    sort_index = np.argsort(owner, kind="stable")
    boundaries = np.searchsorted(owner[sort_index], np.arange(len(order) + 1))
    rows = [sort_index[boundaries[i] : boundaries[i + 1]] for i in range(len(order))]
    return TrialGroups(list(order), rows)


def average_trials(
    trials: np.ndarray, groups: TrialGroups, *, keep_repeats: bool = True, where: str = ""
) -> tuple[np.ndarray, np.ndarray | None]:
    """Average the trials of each stimulus.

    Parameters
    ----------
    trials : ndarray of shape (n_trials, ...)
    groups : TrialGroups over the same trials
    keep_repeats : bool
        Return the single trials too, when every stimulus has the same number (> 1).

    Returns
    -------
    data : ndarray of shape (n_stimuli, ...), float32
    repeats : ndarray of shape (n_repeats, n_stimuli, ...), or None
    """
    data = np.stack([trials[rows].mean(axis=0) for rows in groups.trial_rows])
    count = groups.uniform_count
    repeats = None
    if keep_repeats and count is not None and count > 1:
        repeats = np.stack([trials[rows] for rows in groups.trial_rows], axis=1)  # (R, n, ...)
    elif keep_repeats and count is None and groups.counts.max() > 1:
        warnings.warn(
            f"{where}stimuli have between {groups.counts.min()} and {groups.counts.max()} trials; "
            "repeats are averaged but not kept (noise ceilings from repeats need the same count "
            "for every stimulus: select a split or a minimum number of repeats)",
            UserWarning,
            stacklevel=3,
        )
    return data.astype(np.float32, copy=False), repeats


def zscore_columns(values: np.ndarray) -> np.ndarray:
    """Z-score each column across rows (ddof=0); constant columns become 0, NaN stays NaN.

    Parameters
    ----------
    values : ndarray of shape (n_rows, n_columns)

    Returns
    -------
    zscored : ndarray of shape (n_rows, n_columns), float32
    """
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(axis=0, keepdims=True)
    std = values.std(axis=0, keepdims=True)
    return ((values - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


# ---------------------------------------------------------------------- ROI tables
def read_ctab(path: Path) -> dict[int, str]:
    """Read a FreeSurfer colour table (``<index> <name> [r g b a]`` per line).

    Returns
    -------
    names : dict of int to str
        Label value -> name (label 0, "Unknown", included when listed).
    """
    names: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            value = int(parts[0])
        except ValueError:
            raise ValueError(
                f"{path}, line {number}: a colour table line starts with an integer label; "
                f"got {line!r}"
            ) from None
        if len(parts) < 2:
            raise ValueError(f"{path}, line {number}: label {value} has no name")
        names[value] = parts[1]
    return names


def roi_centroids(targets: pd.DataFrame, *, midline_x: float | None) -> pd.DataFrame:
    """ROI table (roi, x, y, z, n_targets) from the targets' coordinates.

    Parameters
    ----------
    targets : DataFrame with columns roi, x, y, z
    midline_x : float, optional
        When given, x is mirrored to ``|x - midline_x|`` before averaging, so a bilateral ROI's
        centroid lies in one hemisphere instead of on the midline (distances between ROIs then
        keep their lateral part). None averages x as it is.

    Returns
    -------
    rois : DataFrame, one row per ROI in order of first appearance
    """
    coordinates = targets[list(COORDINATE_COLUMNS)].to_numpy(dtype=np.float64)  # (n, 3)
    if midline_x is not None:
        coordinates = coordinates.copy()
        coordinates[:, 0] = np.abs(coordinates[:, 0] - midline_x)
    frame = pd.DataFrame(coordinates, columns=list(COORDINATE_COLUMNS))
    frame.insert(0, "roi", targets["roi"].astype(str).to_numpy())
    grouped = frame.groupby("roi", sort=False)
    rois = grouped[list(COORDINATE_COLUMNS)].mean()
    rois["n_targets"] = grouped.size()
    return rois.reset_index()


def fsaverage_coordinates(
    surface_dir: Path | None, hemi: str, vertices: np.ndarray, *, where: str
) -> np.ndarray:
    """Coordinates (mm) of fsaverage vertices from ``<surface_dir>/<hemi>.white``.

    Falls back to ``<hemi>.sphere`` (with a warning: sphere coordinates are not brain
    positions), and to NaN with a warning when neither file is present.

    Parameters
    ----------
    surface_dir : Path or None
        The fsaverage ``surf`` folder.
    hemi : {"lh", "rh"}
    vertices : ndarray of shape (n,), int
        0-based fsaverage vertex indices.

    Returns
    -------
    xyz : ndarray of shape (n, 3), float64
    """
    vertices = np.asarray(vertices, dtype=np.int64)
    nan = np.full((vertices.size, 3), np.nan)
    if surface_dir is None:
        return nan
    for name in ("white", "sphere"):
        path = surface_dir / f"{hemi}.{name}"
        if path.is_file():
            import nibabel.freesurfer

            coordinates, _ = nibabel.freesurfer.read_geometry(str(path))
            if vertices.size and vertices.max() >= len(coordinates):
                raise ValueError(
                    f"{path} has {len(coordinates)} vertices but vertex {vertices.max()} is "
                    f"needed ({where}); use the fsaverage (not fsaverage5/6) surfaces"
                )
            if name == "sphere":
                warnings.warn(
                    f"{where}: using {path} for vertex coordinates: sphere positions are not "
                    f"brain positions, so ROI distances are only ordinal; add {hemi}.white",
                    UserWarning,
                    stacklevel=3,
                )
            return coordinates[vertices].astype(np.float64)
    warnings.warn(
        f"{where}: no {hemi}.white (or {hemi}.sphere) in {surface_dir}; vertex coordinates "
        "and ROI centroids are NaN (spatial scores need them: give fsaverage_dir=<folder "
        "with surf/>)",
        UserWarning,
        stacklevel=3,
    )
    return nan


# ---------------------------------------------------------------------- images
def _image_index(folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            index.setdefault(path.stem, path)
    return index


def find_images(
    ids: Sequence[str], folder: Path, relative_paths: Sequence[str] | None = None
) -> StimulusSet:
    """Stimuli for ``ids`` from an image folder.

    Each image is looked up at ``folder / relative_path`` when given, else anywhere under
    ``folder`` by file name stem (``dog_12s`` -> ``folder/dog/dog_12s.jpg``).

    Raises
    ------
    FileNotFoundError
        Naming the missing ids and the folder.
    ValueError
        For a relative path that is absolute or leaves ``folder`` (see
        :func:`brainalign.probe.stimuli.resolve_image_path`).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder} (images=...)")
    paths: list[Path | None] = [None] * len(ids)
    if relative_paths is not None:
        for i, relative in enumerate(relative_paths):
            candidate = resolve_image_path(
                folder, relative, where=f"image_path of stimulus {str(ids[i])!r}"
            )
            if candidate.is_file():
                paths[i] = candidate
    if any(path is None for path in paths):
        index = _image_index(folder)
        for i, stimulus_id in enumerate(ids):
            if paths[i] is None:
                paths[i] = index.get(str(stimulus_id))
    missing = [str(stimulus_id) for stimulus_id, path in zip(ids, paths) if path is None]
    if missing:
        raise FileNotFoundError(
            f"no image file under {folder} for stimulus ids {format_id_list(missing, len(ids))}; "
            "each id is an image file name without its suffix"
        )
    return StimulusSet.from_paths(list(ids), [path for path in paths if path is not None])
