"""Natural Scenes Dataset (NSD): single-trial betas, averaged per image, with noise ceilings.

Spec: ``nsd:<NSD root>?subject=1&sessions=1-3&rois=prf-visualrois`` (options: :class:`NSDOptions`).

Files read under the NSD root (the layout of the public S3 bucket)::

    nsddata/experiments/nsd/nsd_expdesign.mat        masterordering, subjectim (1-based)
    nsddata/experiments/nsd/nsd_stim_info_merged.csv nsdId (0-based), shared1000[, subjectN_repR]
    nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5     imgBrick (73000, 425, 425, 3), read lazily
    nsddata_betas/ppdata/subjNN/fsaverage/betas_<betas>/{lh,rh}.betas_sessionNN.mgh, .ncsnr.mgh
    nsddata_betas/ppdata/subjNN/func1pt8mm/betas_<betas>/betas_sessionNN.hdf5, ncsnr.nii.gz
    nsddata/freesurfer/fsaverage/label/{lh,rh}.<family>.mgz       surface ROI labels
    nsddata/ppdata/subjNN/func1pt8mm/roi/[lh.|rh.]<family>.nii.gz volume ROI labels
    nsddata/freesurfer/{subjNN,fsaverage}/label/<family>.mgz.ctab label names
    nsddata/freesurfer/fsaverage/surf/{lh,rh}.white               vertex coordinates (optional)

Choices made here (all options):

- Trial ``t`` (0-based over the subject's sessions, 750 per session) shows the 0-based nsdId
  ``subjectim[subject - 1, masterordering[t] - 1] - 1``; stimulus ids are ``nsd{nsdId:05d}``
  (the Algonauts 2023 loader uses the same ids). When the CSV has ``subjectN_repR`` columns
  (1-based trial numbers), they are checked against the design.
- Volume betas are int16 and divided by 300 (percent signal change); ``.mgh`` surface betas are
  float32 and used as they are. HDF5 volume betas are ``(trials, Z, Y, X)``: voxel ``(i, j, k)``
  of the NIfTI ROI files is ``betas[:, k, j, i]``.
- Trials of one image are averaged; the single trials are kept as ``repeats`` when every image
  has the same count (3 with all sessions; use ``min_repeats=3`` with fewer sessions).
- Noise ceiling (percent) from ``ncsnr``: ``100 * ncsnr**2 / (ncsnr**2 + mean_i(1 / k_i))``, k_i
  the repeats averaged for image i (NSD's ``1 / k`` when all images have k).
- ROI families are read in the order given; a target labelled in several families takes the
  first family's label. Targets in no selected label are left out.
- Coordinates: fsaverage vertices take the ``surf/{lh,rh}.white`` positions (fsaverage space,
  close to MNI305), NaN with a warning when the surfaces are absent. Volume voxels go through
  the NIfTI affine of the ROI file, which for NSD is the subject's native space (not MNI) unless
  ``roi_dir`` points at ROI files in another space on the same grid.
- ROI centroids of bilateral ROIs mirror x about the midline (``|x - midline|``; midline 0 on
  fsaverage, and halfway between the left and right targets' mean x in the volume), so a
  bilateral ROI's centroid is not pulled onto the midline. ``split_hemis=true`` names ROIs
  ``lh.V1``/``rh.V1`` and keeps x as it is.

Memory: the result holds ``n_images x n_targets`` float32 means, plus ``k x n_images x
n_targets`` repeats in float32 or (``repeats_dtype=float16``) float16. Both are preallocated and
filled as each session is read (running sums for the means), so the peak is the result plus one
session's ``(trials_per_session, n_targets)`` float32 block and one read of ``chunk_trials``
trials (seven session blocks with ``zscore_sessions``). :func:`estimate_nsd_peak` computes it
from the design before any beta is read, and the load is refused with the estimate and the
options that lower it when it exceeds the memory available (``memory_check=false`` skips that).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import BrainData
from brainalign.probe.datasets._common import (
    fsaverage_coordinates,
    read_ctab,
    require_dir,
    require_file,
    roi_centroids,
    zscore_columns,
)
from brainalign.probe.datasets._memory import (
    REPEATS_DTYPES,
    MemoryEstimate,
    TrialAccumulator,
    available_memory,
    check_memory,
    format_bytes,
)
from brainalign.probe.scores import noise_ceiling_from_ncsnr
from brainalign.probe.stimuli import StimulusSet

__all__ = [
    "NSD_SESSIONS",
    "NSD_TRIALS_PER_SESSION",
    "NSDOptions",
    "NSDPaths",
    "estimate_nsd_peak",
    "load_nsd",
    "nsd_stimulus_id",
    "nsd_trial_images",
]

NSD_SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
"""Sessions recorded per subject."""
NSD_TRIALS_PER_SESSION = 750
STIMULUS_KEY = "imgBrick"
VOLUME_SCALE = 300.0


def nsd_stimulus_id(nsd_id: int) -> str:
    """Stimulus id of a 0-based nsdId: ``nsd_stimulus_id(12) == "nsd00012"``."""
    return f"nsd{int(nsd_id):05d}"


@dataclass(frozen=True)
class NSDOptions:
    """Options of the NSD loader (spec query options of the same names).

    Parameters
    ----------
    subject : int
        1..8 (required).
    space : {"fsaverage", "func1pt8mm", "func1mm"}
        Surface betas (``.mgh``) or volume betas (``.hdf5``).
    betas : {"fithrf_GLMdenoise_RR", "fithrf", "assumehrf"}
        Which GLM's betas (folder ``betas_<betas>``).
    sessions : tuple of int, optional
        1-based sessions; default every session whose beta files exist.
    shared1000 : bool
        Keep only the 1000 images every subject saw (CSV ``shared1000``).
    rois : tuple of str
        ROI families (``nsdgeneral``, ``prf-visualrois``, ``streams``, ``HCP_MMP1``,
        ``floc-faces``...), in priority order.
    labels : tuple of str, optional
        Keep only these label names (``V1v,hV4`` or ``V1,V2,MT,FFC``); default all labels > 0.
    hemis : tuple of str
        ``lh``, ``rh`` or both.
    split_hemis : bool
        Name ROIs per hemisphere (``lh.V1``).
    min_repeats : int
        Drop images shown fewer times in the selected sessions.
    keep_repeats : bool
        Keep single trials (for split-half noise ceilings) when counts are equal.
    repeats_dtype : {"float32", "float16"}
        Storage of the kept single trials; float16 halves their memory (relative rounding
        2**-11; values beyond +-65504 are refused). The means are float32 either way.
    memory_check : bool
        Refuse, before reading any beta, a load whose estimated peak
        (:func:`estimate_nsd_peak`) exceeds the memory available; false loads anyway.
    zscore_sessions : bool
        Z-score each target across the trials of each session before averaging.
    trials_per_session : int
        750 in NSD (smaller only for test miniatures).
    roi_dir : Path, optional
        Folder with the ROI files instead of the default one (e.g. ROI files in MNI space on
        the same grid, for volume coordinates in MNI).
    fsaverage_dir : Path, optional
        fsaverage subject folder (with ``surf/`` and ``label/``); default
        ``nsddata/freesurfer/fsaverage``.
    stimuli : Path, optional
        ``nsd_stimuli.hdf5`` elsewhere than under the root.
    chunk_trials : int
        Trials read at once from a session file.
    """

    subject: int | None = None
    space: Literal["fsaverage", "func1pt8mm", "func1mm"] = "fsaverage"
    betas: Literal["fithrf_GLMdenoise_RR", "fithrf", "assumehrf"] = "fithrf_GLMdenoise_RR"
    sessions: tuple[int, ...] | None = None
    shared1000: bool = False
    rois: tuple[str, ...] = ("nsdgeneral",)
    labels: tuple[str, ...] | None = None
    hemis: tuple[str, ...] = ("lh", "rh")
    split_hemis: bool = False
    min_repeats: int = 1
    keep_repeats: bool = True
    repeats_dtype: Literal["float32", "float16"] = "float32"
    memory_check: bool = True
    zscore_sessions: bool = False
    trials_per_session: int = NSD_TRIALS_PER_SESSION
    roi_dir: Path | None = None
    fsaverage_dir: Path | None = None
    stimuli: Path | None = None
    chunk_trials: int = 50

    def __post_init__(self) -> None:
        if self.subject is not None and self.subject not in NSD_SESSIONS:
            raise ValueError(f"NSD subject must be 1..8; got {self.subject}")
        bad_hemis = [hemi for hemi in self.hemis if hemi not in ("lh", "rh")]
        if bad_hemis or not self.hemis:
            raise ValueError(f"hemis must be lh and/or rh; got {self.hemis}")
        if not self.rois:
            raise ValueError("rois needs at least one ROI family (e.g. nsdgeneral)")
        for name in ("min_repeats", "trials_per_session", "chunk_trials"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.sessions is not None and min(self.sessions) < 1:
            raise ValueError(f"sessions are 1-based; got {self.sessions}")
        if self.repeats_dtype not in REPEATS_DTYPES:
            raise ValueError(
                f"repeats_dtype must be one of {sorted(REPEATS_DTYPES)}; got {self.repeats_dtype!r}"
            )


@dataclass(frozen=True)
class NSDPaths:
    """Where the NSD loader looks for each file of one subject."""

    root: Path
    subject: int
    space: str
    betas: str
    roi_dir_override: Path | None = None
    fsaverage_override: Path | None = None
    stimuli_override: Path | None = None

    @property
    def subject_name(self) -> str:
        return f"subj{self.subject:02d}"

    @property
    def design(self) -> Path:
        return self.root / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat"

    @property
    def stim_info(self) -> Path:
        return self.root / "nsddata" / "experiments" / "nsd" / "nsd_stim_info_merged.csv"

    @property
    def stimuli(self) -> Path:
        if self.stimuli_override is not None:
            return self.stimuli_override
        return self.root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"

    @property
    def betas_dir(self) -> Path:
        return (
            self.root / "nsddata_betas" / "ppdata" / self.subject_name / self.space
            / f"betas_{self.betas}"
        )  # fmt: skip

    @property
    def fsaverage(self) -> Path:
        if self.fsaverage_override is not None:
            return self.fsaverage_override
        return self.root / "nsddata" / "freesurfer" / "fsaverage"

    @property
    def roi_dir(self) -> Path:
        if self.roi_dir_override is not None:
            return self.roi_dir_override
        if self.space == "fsaverage":
            return self.fsaverage / "label"
        return self.root / "nsddata" / "ppdata" / self.subject_name / self.space / "roi"

    def ctab_candidates(self, family: str) -> list[Path]:
        name = f"{family}.mgz.ctab"
        return [
            self.roi_dir / name,
            self.root / "nsddata" / "freesurfer" / self.subject_name / "label" / name,
            self.fsaverage / "label" / name,
        ]

    def session_files(self, session: int, hemis: tuple[str, ...]) -> list[Path]:
        if self.space == "fsaverage":
            return [self.betas_dir / f"{hemi}.betas_session{session:02d}.mgh" for hemi in hemis]
        return [self.betas_dir / f"betas_session{session:02d}.hdf5"]


# ---------------------------------------------------------------------- design
def _read_design(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    try:
        design = loadmat(str(path), variable_names=["masterordering", "subjectim"])
    except (ValueError, OSError, NotImplementedError) as error:
        raise ValueError(f"{path} is not a readable MATLAB file: {error}") from None
    missing = [name for name in ("masterordering", "subjectim") if name not in design]
    if missing:
        raise ValueError(f"{path} lacks the variable(s) {missing}; is it nsd_expdesign.mat?")
    master = np.asarray(design["masterordering"]).reshape(-1).astype(np.int64)  # (30000,)
    subject_images = np.atleast_2d(np.asarray(design["subjectim"])).astype(np.int64)  # (8, 1e4)
    return master, subject_images


def nsd_trial_images(
    design_path: str | Path,
    subject: int,
    sessions: tuple[int, ...],
    trials_per_session: int = NSD_TRIALS_PER_SESSION,
) -> np.ndarray:
    """0-based nsdId shown on each trial of the given sessions.

    Parameters
    ----------
    design_path : path to ``nsd_expdesign.mat``
    subject : int, 1-based
    sessions : tuple of int, 1-based, in the order the trials are wanted
    trials_per_session : int

    Returns
    -------
    nsd_ids : ndarray of shape (len(sessions) * trials_per_session,), int64, 0-based
    """
    design_path = Path(design_path)
    master, subject_images = _read_design(design_path)
    if subject > subject_images.shape[0]:
        raise ValueError(
            f"{design_path}: subjectim has {subject_images.shape[0]} subjects; "
            f"subject {subject} does not exist"
        )
    last_needed = max(sessions) * trials_per_session
    if len(master) < last_needed:
        raise ValueError(
            f"{design_path}: masterordering has {len(master)} trials but session "
            f"{max(sessions)} with {trials_per_session} trials per session needs {last_needed}; "
            "the design and the sessions (or trials_per_session) disagree"
        )
    trials = np.concatenate(
        [np.arange((s - 1) * trials_per_session, s * trials_per_session) for s in sessions]
    )
    order = master[trials]  # 1-based position in the subject's image list
    if order.min() < 1 or order.max() > subject_images.shape[1]:
        raise ValueError(
            f"{design_path}: masterordering values must lie in 1..{subject_images.shape[1]} "
            f"(1-based); found {order.min()}..{order.max()}"
        )
    nsd_ids = subject_images[subject - 1, order - 1] - 1  # 1-based nsdId -> 0-based
    if nsd_ids.min() < 0:
        raise ValueError(
            f"{design_path}: subjectim holds 1-based nsdIds; found a value below 1 for subject "
            f"{subject}"
        )
    return nsd_ids


def _read_stim_info(path: Path, subject: int) -> pd.DataFrame:
    repeat_columns = [f"subject{subject}_rep{r}" for r in range(3)]
    wanted = {"nsdId", "shared1000", *repeat_columns}
    table = pd.read_csv(path, usecols=lambda column: column in wanted)
    missing = [column for column in ("nsdId", "shared1000") if column not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; is it nsd_stim_info_merged.csv?")
    return table


def _check_against_csv(
    table: pd.DataFrame,
    nsd_ids: np.ndarray,
    trial_numbers: np.ndarray,
    subject: int,
    stim_info: Path,
    design: Path,
) -> None:
    known = set(table["nsdId"].astype(np.int64))
    unknown = sorted(set(nsd_ids.tolist()) - known)
    if unknown:
        raise ValueError(
            f"{design} names nsdIds (0-based) missing from {stim_info}: {unknown[:5]} "
            f"({len(unknown)} in all); check the 1-based/0-based conversion"
        )
    repeat_columns = [c for c in table.columns if c.startswith(f"subject{subject}_rep")]
    if not repeat_columns:
        return
    csv_trial = table[repeat_columns].to_numpy(dtype=np.int64)  # (73000, 3), 1-based, 0 = none
    csv_image = np.repeat(table["nsdId"].to_numpy(dtype=np.int64), len(repeat_columns))
    csv_trial = csv_trial.reshape(-1)
    image_of_trial = dict(zip(csv_trial[csv_trial > 0].tolist(), csv_image[csv_trial > 0]))
    for trial, nsd_id in zip(trial_numbers.tolist(), nsd_ids.tolist()):
        expected = image_of_trial.get(trial + 1)
        if expected is not None and expected != nsd_id:
            raise ValueError(
                f"{design} and {stim_info} disagree on trial {trial + 1} (1-based) of subject "
                f"{subject}: the design gives nsdId {nsd_id}, the CSV ({', '.join(repeat_columns)})"
                f" gives {expected} (both 0-based)"
            )


# ---------------------------------------------------------------------- ROI targets
@dataclass
class _Targets:
    table: pd.DataFrame  # roi, hemi, family, x, y, z, vertex | voxel_i/j/k
    hemi_indices: dict[str, np.ndarray]  # hemi -> vertex indices (surface) or flat voxels
    n_per_hemi: dict[str, int]  # surface: vertices in the hemisphere's files
    affine: np.ndarray | None = None  # volume: voxel (i, j, k) -> mm of the ROI files' grid


def _label_names(paths: NSDPaths, family: str, values: np.ndarray) -> dict[int, str]:
    for candidate in paths.ctab_candidates(family):
        if candidate.is_file():
            return read_ctab(candidate)
    present = sorted(int(v) for v in np.unique(values) if v > 0)
    return {value: family if present == [1] else f"{family}-{value}" for value in present}


def _assign_labels(
    label_maps: list[tuple[str, np.ndarray, dict[int, str]]], labels: tuple[str, ...] | None
) -> tuple[np.ndarray, np.ndarray]:
    """ROI name and family per element ("" where unlabelled), first family first."""
    size = label_maps[0][1].size
    names = np.full(size, "", dtype=object)
    families = np.full(size, "", dtype=object)
    for family, values, table in label_maps:
        values = values.reshape(-1)
        candidates = (values > 0) & (names == "")
        present, inverse = np.unique(values[candidates], return_inverse=True)
        named = np.array([table.get(int(v), f"{family}-{int(v)}") for v in present], dtype=object)[
            inverse
        ]
        if labels is not None:
            keep = np.isin(named, list(labels))
            positions = np.flatnonzero(candidates)[keep]
            named = named[keep]
        else:
            positions = np.flatnonzero(candidates)
        names[positions] = named
        families[positions] = family
    return names, families


def _read_label_array(path: Path) -> np.ndarray:
    import nibabel

    return np.rint(np.asarray(nibabel.load(str(path)).dataobj, dtype=np.float64)).astype(np.int64)


def _check_labels_exist(options: NSDOptions, available: set[str], where: Path) -> None:
    if options.labels is None:
        return
    unknown = [label for label in options.labels if label not in available]
    if unknown:
        raise ValueError(
            f"labels {unknown} are not in the ROI families {list(options.rois)} ({where}); "
            f"available labels: {sorted(available)}"
        )


def _surface_targets(paths: NSDPaths, options: NSDOptions) -> _Targets:
    rows = []
    hemi_indices: dict[str, np.ndarray] = {}
    n_per_hemi: dict[str, int] = {}
    available: set[str] = set()
    for hemi in options.hemis:
        label_maps = []
        for family in options.rois:
            path = require_file(
                paths.roi_dir / f"{hemi}.{family}.mgz",
                f"NSD surface ROI file ({family})",
                "give roi_dir=... or fsaverage_dir=... if the labels live elsewhere",
            )
            values = _read_label_array(path).reshape(-1)
            names = _label_names(paths, family, values)
            available |= {name for value, name in names.items() if value > 0}
            label_maps.append((family, values, names))
        sizes = {values.size for _, values, _ in label_maps}
        if len(sizes) > 1:
            raise ValueError(f"{hemi} ROI files in {paths.roi_dir} differ in length: {sizes}")
        names, families = _assign_labels(label_maps, options.labels)
        vertices = np.flatnonzero(names != "")
        hemi_indices[hemi] = vertices
        n_per_hemi[hemi] = sizes.pop()
        xyz = fsaverage_coordinates(
            paths.fsaverage / "surf", hemi, vertices, where=f"NSD {paths.subject_name}"
        )
        rows.append(
            pd.DataFrame(
                {
                    "roi": names[vertices],
                    "hemi": hemi,
                    "family": families[vertices],
                    "vertex": vertices,
                    "x": xyz[:, 0],
                    "y": xyz[:, 1],
                    "z": xyz[:, 2],
                }
            )
        )
    _check_labels_exist(options, available, paths.roi_dir)
    return _Targets(pd.concat(rows, ignore_index=True), hemi_indices, n_per_hemi)


def _volume_targets(paths: NSDPaths, options: NSDOptions, grid_shape: tuple[int, ...]) -> _Targets:
    import nibabel

    per_hemi = all(
        (paths.roi_dir / f"{hemi}.{family}.nii.gz").is_file()
        for hemi in options.hemis
        for family in options.rois
    )
    hemis = list(options.hemis) if per_hemi else ["both"]
    rows = []
    hemi_indices: dict[str, np.ndarray] = {}
    available: set[str] = set()
    for hemi in hemis:
        label_maps = []
        affine = None
        for family in options.rois:
            name = f"{hemi}.{family}.nii.gz" if per_hemi else f"{family}.nii.gz"
            path = require_file(
                paths.roi_dir / name,
                f"NSD volume ROI file ({family})",
                f"expected {options.hemis[0]}.{family}.nii.gz per hemisphere or {family}.nii.gz",
            )
            image = nibabel.load(str(path))
            values = np.rint(np.asarray(image.dataobj, dtype=np.float64)).astype(np.int64)
            if values.shape != grid_shape:
                raise ValueError(
                    f"{path} has shape {values.shape} but the betas' voxel grid is {grid_shape} "
                    "(the HDF5 betas (trials, Z, Y, X) transposed); use ROI files of the same "
                    f"space ({options.space})"
                )
            affine = image.affine if affine is None else affine
            names = _label_names(paths, family, values)
            available |= {label for value, label in names.items() if value > 0}
            label_maps.append((family, values, names))
        names, families = _assign_labels(label_maps, options.labels)
        flat = np.flatnonzero(names != "")  # C order over (X, Y, Z)
        hemi_indices[hemi] = flat
        i, j, k = np.unravel_index(flat, grid_shape)
        homogeneous = np.column_stack([i, j, k, np.ones_like(i)]).astype(np.float64)  # (n, 4)
        xyz = homogeneous @ np.asarray(affine, dtype=np.float64).T  # (n, 4)
        rows.append(
            pd.DataFrame(
                {
                    "roi": names[flat],
                    "hemi": hemi,
                    "family": families[flat],
                    "voxel_i": i,
                    "voxel_j": j,
                    "voxel_k": k,
                    "x": xyz[:, 0],
                    "y": xyz[:, 1],
                    "z": xyz[:, 2],
                }
            )
        )
    _check_labels_exist(options, available, paths.roi_dir)
    return _Targets(pd.concat(rows, ignore_index=True), hemi_indices, {}, affine=affine)


# ---------------------------------------------------------------------- betas
@dataclass(frozen=True)
class _BetaFileShape:
    """What a beta file's header says, read without the data."""

    n_trials: int
    grid: tuple[int, ...]  # (n_vertices,) or the NIfTI-order (X, Y, Z) voxel grid
    itemsize: int  # bytes per stored value


def _session_trial_count(path: Path, space: str) -> _BetaFileShape:
    """Trials, spatial shape and value size from a beta file's header."""
    if space == "fsaverage":
        import nibabel

        image = nibabel.load(str(path))
        shape = tuple(int(n) for n in image.shape)
        if len(shape) != 4 or shape[1:3] != (1, 1):
            raise ValueError(f"{path} has shape {shape}; expected (n_vertices, 1, 1, n_trials)")
        return _BetaFileShape(shape[3], (shape[0],), image.get_data_dtype().itemsize)
    import h5py

    with h5py.File(path, "r") as handle:
        if "betas" not in handle:
            raise ValueError(f"{path} has no dataset 'betas'; keys: {list(handle)}")
        shape = tuple(int(n) for n in handle["betas"].shape)
        itemsize = handle["betas"].dtype.itemsize
    if len(shape) != 4:
        raise ValueError(f"{path}['betas'] has shape {shape}; expected (trials, Z, Y, X)")
    return _BetaFileShape(shape[0], shape[1:][::-1], itemsize)  # NIfTI order (X, Y, Z)


def _read_session(
    paths: NSDPaths, session: int, options: NSDOptions, targets: _Targets
) -> np.ndarray:
    """Betas of one session for the selected targets, shape (trials_per_session, n_targets)."""
    files = paths.session_files(session, options.hemis)
    n_trials = options.trials_per_session
    chunks = range(0, n_trials, options.chunk_trials)
    if options.space == "fsaverage":
        import nibabel

        values = np.empty((n_trials, len(targets.table)), dtype=np.float32)
        offset = 0
        for hemi, path in zip(options.hemis, files):
            vertices = targets.hemi_indices[hemi]
            columns = slice(offset, offset + vertices.size)
            everything = vertices.size == targets.n_per_hemi[hemi]
            proxy = nibabel.load(str(path)).dataobj
            for start in chunks:
                stop = min(start + options.chunk_trials, n_trials)
                frames = np.asarray(proxy[:, 0, 0, start:stop]).T  # (chunk, n_vertices)
                values[start:stop, columns] = frames if everything else frames[:, vertices]
            offset += vertices.size
        return values  # (trials, n_targets)
    import h5py

    voxel_table = targets.table
    i = voxel_table["voxel_i"].to_numpy()
    j = voxel_table["voxel_j"].to_numpy()
    k = voxel_table["voxel_k"].to_numpy()
    values = np.empty((n_trials, len(voxel_table)), dtype=np.float32)
    with h5py.File(files[0], "r") as handle:
        dataset = handle["betas"]
        scale = VOLUME_SCALE if np.issubdtype(dataset.dtype, np.integer) else 1.0
        for start in chunks:
            stop = min(start + options.chunk_trials, n_trials)
            block = dataset[start:stop]  # (chunk, Z, Y, X)
            values[start:stop] = block[:, k, j, i]  # (chunk, n_targets), as float32
    if scale != 1.0:
        values /= np.float32(scale)  # exact operands: the same float32 as dividing in float64
    return values


def _read_ncsnr(paths: NSDPaths, options: NSDOptions, targets: _Targets) -> np.ndarray | None:
    import nibabel

    if options.space == "fsaverage":
        files = [paths.betas_dir / f"{hemi}.ncsnr.mgh" for hemi in options.hemis]
    else:
        files = [paths.betas_dir / "ncsnr.nii.gz"]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        warnings.warn(
            f"NSD {paths.subject_name}: no ncsnr file ({missing}); no noise ceiling",
            UserWarning,
            stacklevel=3,
        )
        return None
    if options.space == "fsaverage":
        parts = []
        for hemi, path in zip(options.hemis, files):
            values = np.asarray(nibabel.load(str(path)).dataobj, dtype=np.float64).reshape(-1)
            if values.size != targets.n_per_hemi[hemi]:
                raise ValueError(
                    f"{path} has {values.size} vertices; the ROI files have "
                    f"{targets.n_per_hemi[hemi]}"
                )
            parts.append(values[targets.hemi_indices[hemi]])
        return np.concatenate(parts)
    volume = np.asarray(nibabel.load(str(files[0])).dataobj, dtype=np.float64)
    table = targets.table
    expected = tuple(int(table[c].max()) for c in ("voxel_i", "voxel_j", "voxel_k"))
    if any(size <= index for size, index in zip(volume.shape, expected)):
        raise ValueError(f"{files[0]} has shape {volume.shape}, too small for the ROI voxels")
    return volume[table["voxel_i"], table["voxel_j"], table["voxel_k"]]


# ---------------------------------------------------------------------- memory
FLOAT32_BYTES = 4
ZSCORE_BYTES_PER_VALUE = 24  # zscore_columns: a float64 copy and two float64 temporaries


def estimate_nsd_peak(
    n_images: int,
    n_targets: int,
    options: NSDOptions,
    *,
    n_repeats: int | None,
    trial_bytes: int,
) -> MemoryEstimate:
    """Peak memory of :func:`load_nsd`, from the design, before any beta is read.

    At the peak these are alive together: the float32 means and the repeats (both the
    result), one session's float32 ``(trials_per_session, n_targets)`` block, and the larger
    of one read (``chunk_trials`` trials of the largest beta file, as stored, and the same
    trials as float32 when only some targets are selected) and, with ``zscore_sessions``, the
    z-scoring temporaries (``24 x trials_per_session x n_targets`` bytes). Tables, labels and
    the noise ceiling (tens of bytes per target) are left out.

    Parameters
    ----------
    n_images, n_targets : int
        Images kept and targets selected by the ROI options.
    options : NSDOptions
    n_repeats : int, optional
        Repeats kept per image (None: not kept).
    trial_bytes : int
        Bytes of one trial of the largest beta file (vertices of a hemisphere or voxels of the
        grid, times the stored value size).

    Returns
    -------
    MemoryEstimate
    """
    per_image = n_images * n_targets
    tps = options.trials_per_session
    repeats_size = np.dtype(REPEATS_DTYPES[options.repeats_dtype]).itemsize
    read = options.chunk_trials * (trial_bytes + n_targets * FLOAT32_BYTES)
    zscore = ZSCORE_BYTES_PER_VALUE * tps * n_targets if options.zscore_sessions else 0
    return MemoryEstimate(
        (
            (f"means {n_images} x {n_targets} float32", FLOAT32_BYTES * per_image),
            (
                f"repeats {n_repeats} x {n_images} x {n_targets} {options.repeats_dtype}",
                repeats_size * (n_repeats or 0) * per_image,
            ),
            (f"one session {tps} x {n_targets} float32", FLOAT32_BYTES * tps * n_targets),
            ("z-scoring" if zscore > read else "reading", max(read, zscore)),
        )
    )


def _check_nsd_memory(
    paths: NSDPaths,
    sessions: tuple[int, ...],
    n_images: int,
    n_targets: int,
    n_repeats: int | None,
    options: NSDOptions,
    trial_bytes: int,
) -> None:
    """Refuse (InsufficientMemoryError, one line) a load that would not fit in memory."""

    def total(**changes: object) -> str:
        changed = dataclasses.replace(options, **changes)
        repeats = None if not changed.keep_repeats else n_repeats
        estimate = estimate_nsd_peak(
            n_images, n_targets, changed, n_repeats=repeats, trial_bytes=trial_bytes
        )
        return format_bytes(estimate.total)

    hints = [f"an ROI selection (rois=nsdgeneral, labels=...; now {n_targets} targets)"]
    if n_repeats is not None:
        hints.append(f"keep_repeats=false ({total(keep_repeats=False)})")
        if options.repeats_dtype != "float16":
            hints.append(f"repeats_dtype=float16 ({total(repeats_dtype='float16')})")
    if len(sessions) > 1:
        hints.append(f"fewer sessions (now {len(sessions)})")
    check_memory(
        estimate_nsd_peak(
            n_images, n_targets, options, n_repeats=n_repeats, trial_bytes=trial_bytes
        ),
        where=f"NSD {paths.subject_name}",
        options="lower it with " + ", ".join(hints) + ", or pass memory_check=false to try anyway",
        available=available_memory(),
    )


def _read_sessions(
    paths: NSDPaths,
    sessions: tuple[int, ...],
    options: NSDOptions,
    targets: _Targets,
    trial_row: np.ndarray,
    trial_rank: np.ndarray,
    counts: np.ndarray,
    n_repeats: int | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the sessions one by one into the per-image means and repeats.

    Parameters
    ----------
    trial_row, trial_rank : ndarray of shape (len(sessions) * trials_per_session,), int
        Image row of each trial (-1: not kept) and how many earlier trials showed its image.
    counts : ndarray of shape (n_images,), int
        Trials per image in these sessions.
    n_repeats : int, optional
        Repeats to keep per image.

    Returns
    -------
    data : ndarray of shape (n_images, n_targets), float32
    repeats : ndarray of shape (n_repeats, n_images, n_targets), or None
    """
    accumulator = TrialAccumulator(
        counts, len(targets.table), n_repeats=n_repeats, repeats_dtype=options.repeats_dtype
    )
    tps = options.trials_per_session
    for position, session in enumerate(sessions):
        values = _read_session(paths, session, options, targets)  # (tps, n_targets)
        if options.zscore_sessions:
            values = zscore_columns(values)
        trials = slice(position * tps, (position + 1) * tps)
        accumulator.add(
            values, trial_row[trials], trial_rank[trials], f"NSD betas of session {session}"
        )
        del values  # before the next session's block is allocated
    return accumulator.finish()


# ---------------------------------------------------------------------- loader
def _available_sessions(paths: NSDPaths, options: NSDOptions) -> list[int]:
    limit = NSD_SESSIONS[paths.subject]
    return [
        session
        for session in range(1, limit + 1)
        if all(path.is_file() for path in paths.session_files(session, options.hemis))
    ]


def _choose_sessions(paths: NSDPaths, options: NSDOptions) -> tuple[int, ...]:
    limit = NSD_SESSIONS[paths.subject]
    if options.sessions is None:
        sessions = _available_sessions(paths, options)
        if not sessions:
            example = paths.session_files(1, options.hemis)[0]
            raise FileNotFoundError(
                f"no NSD beta files for {paths.subject_name}: looked for {example.name} "
                f"(sessions 1..{limit}) in {paths.betas_dir}"
            )
        return tuple(sessions)
    too_late = [session for session in options.sessions if session > limit]
    if too_late:
        raise ValueError(
            f"NSD {paths.subject_name} has sessions 1..{limit}; sessions {too_late} do not exist"
        )
    for session in options.sessions:
        for path in paths.session_files(session, options.hemis):
            require_file(path, f"NSD betas of session {session}")
    return tuple(options.sessions)


def load_nsd(root: str | Path, options: NSDOptions) -> tuple[BrainData, StimulusSet]:
    """Load one NSD subject: betas averaged per image, ROI targets, noise ceiling, stimuli.

    Parameters
    ----------
    root : path to the NSD root (with ``nsddata/``, ``nsddata_betas/``, ``nsddata_stimuli/``)
    options : NSDOptions
        ``subject`` is required.

    Returns
    -------
    brain : BrainData, modality "fmri"
        ``data`` (n_images, n_targets) float32, images sorted by nsdId, ids ``nsd{nsdId:05d}``;
        ``repeats`` (k, n_images, n_targets) when every image has k > 1 trials; noise ceiling in
        percent; targets with roi, hemi, family, x, y, z and vertex or voxel_i/j/k.
    stimuli : StimulusSet reading rows of ``nsd_stimuli.hdf5`` lazily (row = nsdId)

    Raises
    ------
    FileNotFoundError
        Naming the missing file and the folder searched, before any betas are read.
    ValueError
        Unknown subject or session, design and betas that disagree in trial count, ROI files
        on another grid, labels that no family has.
    """
    if options.subject is None:
        raise ValueError("NSD needs a subject: add ?subject=N (1..8) to the spec")
    root = require_dir(Path(root), "NSD root folder")
    paths = NSDPaths(
        root,
        options.subject,
        options.space,
        options.betas,
        options.roi_dir,
        options.fsaverage_dir,
        options.stimuli,
    )
    require_file(paths.design, "NSD design (nsd_expdesign.mat)")
    require_file(paths.stim_info, "NSD stimulus table (nsd_stim_info_merged.csv)")
    require_file(paths.stimuli, "NSD stimuli (nsd_stimuli.hdf5)", "or give stimuli=<path>")
    require_dir(paths.betas_dir, f"NSD betas folder of {paths.subject_name}")
    sessions = _choose_sessions(paths, options)

    header = _BetaFileShape(0, (), 4)
    trial_bytes = 0  # bytes of one trial in the largest beta file (hemisphere or volume)
    for session in sessions:
        for path in paths.session_files(session, options.hemis):
            header = _session_trial_count(path, options.space)
            trial_bytes = max(trial_bytes, int(np.prod(header.grid)) * header.itemsize)
            n_trials = header.n_trials
            if n_trials != options.trials_per_session:
                raise ValueError(
                    f"{path} has {n_trials} trials but the design expects "
                    f"{options.trials_per_session} per session (trials_per_session); the betas "
                    "and the design disagree"
                )
    targets = (
        _surface_targets(paths, options)
        if options.space == "fsaverage"
        else _volume_targets(paths, options, header.grid)
    )
    if options.space == "fsaverage":
        for session in sessions:
            for hemi, path in zip(options.hemis, paths.session_files(session, options.hemis)):
                n_vertices = _session_trial_count(path, "fsaverage").grid[0]
                if n_vertices != targets.n_per_hemi[hemi]:
                    raise ValueError(
                        f"{path} has {n_vertices} vertices but the {hemi} ROI files have "
                        f"{targets.n_per_hemi[hemi]}"
                    )
    if len(targets.table) == 0:
        raise ValueError(
            f"no target is labelled in the ROI families {list(options.rois)}"
            + (f" with labels {list(options.labels)}" if options.labels else "")
        )

    trial_images = nsd_trial_images(
        paths.design, options.subject, sessions, options.trials_per_session
    )
    trial_numbers = np.concatenate(
        [
            np.arange((s - 1) * options.trials_per_session, s * options.trials_per_session)
            for s in sessions
        ]
    )
    stim_info = _read_stim_info(paths.stim_info, options.subject)
    _check_against_csv(
        stim_info, trial_images, trial_numbers, options.subject, paths.stim_info, paths.design
    )

    images, counts = np.unique(trial_images, return_counts=True)  # sorted by nsdId
    keep = counts >= options.min_repeats
    if options.shared1000:
        shared = set(stim_info.loc[stim_info["shared1000"].astype(bool), "nsdId"].astype(int))
        keep &= np.isin(images, list(shared))
    images, counts = images[keep], counts[keep]
    if images.size == 0:
        raise ValueError(
            f"NSD {paths.subject_name}: no image left in sessions {list(sessions)} after "
            f"shared1000={options.shared1000} and min_repeats={options.min_repeats}"
        )
    row_of_image = {int(image): row for row, image in enumerate(images)}
    trial_row = np.array([row_of_image.get(int(i), -1) for i in trial_images], dtype=np.int64)
    trial_rank = np.zeros_like(trial_row)  # how many earlier trials showed the same image
    seen: dict[int, int] = {}
    for position, image in enumerate(trial_images.tolist()):
        trial_rank[position] = seen.get(image, 0)
        seen[image] = trial_rank[position] + 1

    n_targets = len(targets.table)
    uniform = int(counts[0]) if counts.min() == counts.max() else None
    keep_repeats = options.keep_repeats and uniform is not None and uniform > 1
    if options.keep_repeats and uniform is None:
        warnings.warn(
            f"NSD {paths.subject_name}: images have {counts.min()} to {counts.max()} trials in "
            f"sessions {list(sessions)}; repeats are averaged but not kept (min_repeats=3 keeps "
            "only images with every repeat)",
            UserWarning,
            stacklevel=2,
        )
    n_repeats = uniform if keep_repeats else None
    if options.memory_check:
        _check_nsd_memory(paths, sessions, images.size, n_targets, n_repeats, options, trial_bytes)
    data, repeats = _read_sessions(
        paths, sessions, options, targets, trial_row, trial_rank, counts, n_repeats
    )

    ncsnr = _read_ncsnr(paths, options, targets)
    noise_ceiling = None if ncsnr is None else noise_ceiling_from_ncsnr(ncsnr, counts)
    table = targets.table
    if options.split_hemis:
        table = table.assign(roi=table["hemi"] + "." + table["roi"])
        midline = None
    elif options.space == "fsaverage":
        midline = 0.0
    else:
        hemi_means = table.groupby("hemi")["x"].mean()
        midline = (
            float((hemi_means["lh"] + hemi_means["rh"]) / 2)
            if {"lh", "rh"} <= set(hemi_means.index)
            else None
        )
    stimulus_ids = [nsd_stimulus_id(image) for image in images]
    brain = BrainData(
        modality="fmri",
        subject=paths.subject_name,
        data=data,
        stimulus_ids=stimulus_ids,
        targets=table,
        rois=roi_centroids(table, midline_x=midline),
        repeats=repeats,
        noise_ceiling=noise_ceiling,
        noise_ceiling_unit="percent",
        affine=targets.affine,
    )
    stimuli = StimulusSet.from_hdf5(stimulus_ids, paths.stimuli, STIMULUS_KEY, rows=images)
    return brain, stimuli
