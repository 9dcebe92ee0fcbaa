"""Brain responses of one subject in one modality, aligned to stimulus ids.

fMRI: ``data`` of shape (n_stimuli, n_targets), one target per voxel or vertex, with a targets
table (roi, hemi, x, y, z). MEG: ``data`` of shape (n_stimuli, n_channels, n_times) with
``times`` in seconds and a targets table of channel names. For encoding, MEG targets are
(channel, time) pairs: :meth:`BrainData.targets_matrix` flattens them channel-major and
:meth:`BrainData.target_index` says which row is which.

Example::

    brain, stimuli = brain.align(stimuli)
    brain = brain.drop_bad_targets()
    Y = brain.targets_matrix()  # (n_stimuli, n_targets_flat)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from brainalign.probe.rois import COORDINATE_COLUMNS, roi_table
from brainalign.probe.stimuli import StimulusSet, check_unique_ids, format_id_list

__all__ = [
    "NOISE_CEILING_UNITS",
    "VOXEL_COLUMNS",
    "BrainData",
    "Modality",
    "NoiseCeilingUnit",
    "numeric_coordinates",
]

Modality = Literal["fmri", "meg"]
NoiseCeilingUnit = Literal["percent", "fraction"]
NOISE_CEILING_UNITS: tuple[str, ...] = ("percent", "fraction")
#: Targets-table columns of a voxel's (i, j, k) index in the grid of ``BrainData.affine``.
VOXEL_COLUMNS: tuple[str, str, str] = ("voxel_i", "voxel_j", "voxel_k")


@dataclass(kw_only=True)
class BrainData:
    """Responses of one subject in one modality.

    Parameters
    ----------
    modality : {"fmri", "meg"}
    subject : str
    data : ndarray of shape (n_stimuli, n_targets) for fMRI or (n_stimuli, n_channels, n_times)
        for MEG, converted to float32.
    stimulus_ids : list of str of length n_stimuli, unique
    targets : DataFrame
        fMRI: one row per target with a ``roi`` column (and ``hemi``, ``x``, ``y``, ``z`` in MNI
        mm when known). MEG: one row per channel with a ``channel`` column.
    times : ndarray of shape (n_times,), seconds; MEG only
    rois : DataFrame with columns roi, x, y, z (+ properties), optional
        fMRI default: centroids of the targets (NaN coordinates when targets have none).
        MEG default: an empty table.
    repeats : ndarray of shape (n_repeats, *data.shape), optional
        Single-repeat responses, for noise ceilings; converted to float32 unless float16
        (kept as float16: half the memory, for large surface data).
    noise_ceiling : ndarray of shape data.shape[1:], optional
        One value per target (per channel and time for MEG): the share of the variance of
        ``data`` that is explainable (the square of the largest R a model can reach).
    noise_ceiling_unit : {"percent", "fraction"}, optional
        The unit of ``noise_ceiling``, declared by whoever loads the data (NSD and THINGS-fMRI:
        percent; a generic folder: ``noise_ceiling_unit`` in its ``info.json``). A ceiling of
        unknown unit is kept but not used to normalise scores.
    affine : ndarray of shape (4, 4), optional
        fMRI volume data: voxel index to world (mm) transform of the grid the targets'
        ``voxel_i``, ``voxel_j``, ``voxel_k`` columns index (for volume maps).
    info : mne.Info, optional
        MEG measurement info (channel positions, for topomaps; kept as it is).
    """

    modality: Modality
    subject: str
    data: np.ndarray
    stimulus_ids: list[str]
    targets: pd.DataFrame
    times: np.ndarray | None = None
    rois: pd.DataFrame | None = None
    repeats: np.ndarray | None = None
    noise_ceiling: np.ndarray | None = None
    noise_ceiling_unit: NoiseCeilingUnit | None = None
    affine: np.ndarray | None = field(default=None, repr=False)
    info: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.modality not in ("fmri", "meg"):
            raise ValueError(f"modality must be 'fmri' or 'meg'; got {self.modality!r}")
        self.subject = str(self.subject)
        self.data = np.ascontiguousarray(self.data, dtype=np.float32)
        self.stimulus_ids = [str(stimulus_id) for stimulus_id in self.stimulus_ids]
        check_unique_ids(self.stimulus_ids)
        if self.modality == "fmri":
            self._check_fmri()
        else:
            self._check_meg()
        if len(self.stimulus_ids) != self.data.shape[0]:
            raise ValueError(
                f"{self._name}: data has {self.data.shape[0]} rows (stimuli) but "
                f"{len(self.stimulus_ids)} stimulus ids were given"
            )
        self.targets = self.targets.reset_index(drop=True)
        self._check_optional_arrays()

    # ------------------------------------------------------------------ validation
    @property
    def _name(self) -> str:
        return f"{self.modality} data of subject {self.subject!r}"

    def _check_fmri(self) -> None:
        if self.data.ndim != 2:
            raise ValueError(
                f"{self._name}: data must have shape (n_stimuli, n_targets); got {self.data.shape}"
            )
        if self.times is not None:
            raise ValueError(f"{self._name}: times are for MEG only")
        if "roi" not in self.targets.columns:
            raise ValueError(
                f"{self._name}: the targets table needs a 'roi' column; "
                f"it has {list(self.targets.columns)}"
            )
        if len(self.targets) != self.data.shape[1]:
            raise ValueError(
                f"{self._name}: data has {self.data.shape[1]} targets (columns) but the "
                f"targets table has {len(self.targets)} rows"
            )
        self.targets = numeric_coordinates(
            self.targets.assign(roi=self.targets["roi"].astype(str)),
            where=f"{self._name}: the targets table",
        )
        if self.rois is None:
            self.rois = _default_rois(self.targets)
        else:
            self.rois = roi_table(centroids=self.rois)
            unknown = sorted(set(self.targets["roi"]) - set(self.rois["roi"]))
            if unknown:
                raise ValueError(
                    f"{self._name}: targets name ROIs missing from the ROI table: {unknown}; "
                    f"the ROI table has {self.rois['roi'].tolist()}"
                )

    def _check_meg(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(
                f"{self._name}: data must have shape (n_stimuli, n_channels, n_times); "
                f"got {self.data.shape}"
            )
        if self.times is None:
            raise ValueError(f"{self._name}: MEG data needs times (n_times,) in seconds")
        self.times = np.asarray(self.times, dtype=np.float64)
        if self.times.shape != (self.data.shape[2],):
            raise ValueError(
                f"{self._name}: data has {self.data.shape[2]} time points but times has "
                f"shape {self.times.shape}"
            )
        if self.times.size > 1 and not np.all(np.diff(self.times) > 0):
            raise ValueError(f"{self._name}: times must increase strictly")
        if "channel" not in self.targets.columns:
            raise ValueError(
                f"{self._name}: the targets table needs a 'channel' column; "
                f"it has {list(self.targets.columns)}"
            )
        if len(self.targets) != self.data.shape[1]:
            raise ValueError(
                f"{self._name}: data has {self.data.shape[1]} channels but the targets table "
                f"has {len(self.targets)} rows"
            )
        if self.rois is None:
            self.rois = pd.DataFrame({"roi": pd.Series(dtype=str)}).assign(
                **{column: pd.Series(dtype=np.float64) for column in COORDINATE_COLUMNS}
            )

    def _check_optional_arrays(self) -> None:
        if self.repeats is not None:
            is_half = getattr(self.repeats, "dtype", None) == np.float16
            dtype = np.float16 if is_half else np.float32
            self.repeats = np.ascontiguousarray(self.repeats, dtype=dtype)
            if self.repeats.shape[1:] != self.data.shape:
                raise ValueError(
                    f"{self._name}: repeats must have shape (n_repeats, *{self.data.shape}); "
                    f"got {self.repeats.shape}"
                )
        if self.noise_ceiling is not None:
            self.noise_ceiling = np.asarray(self.noise_ceiling, dtype=np.float32)
            if self.noise_ceiling.shape != self.data.shape[1:]:
                raise ValueError(
                    f"{self._name}: noise_ceiling must have shape {self.data.shape[1:]} "
                    f"(one value per target); got {self.noise_ceiling.shape}"
                )
        if self.noise_ceiling_unit is not None and self.noise_ceiling_unit not in (
            NOISE_CEILING_UNITS
        ):
            raise ValueError(
                f"{self._name}: noise_ceiling_unit must be 'percent' or 'fraction'; got "
                f"{self.noise_ceiling_unit!r}"
            )
        if self.affine is not None:
            self._check_affine()

    def _check_affine(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if self.modality != "fmri" or affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise ValueError(
                f"{self._name}: affine is a finite (4, 4) voxel-to-mm matrix of fMRI volume "
                f"data; got shape {affine.shape}"
            )
        missing = [column for column in VOXEL_COLUMNS if column not in self.targets.columns]
        if missing:
            raise ValueError(
                f"{self._name}: an affine needs the voxel index columns {list(VOXEL_COLUMNS)} "
                f"in the targets table; missing {missing}"
            )
        indices = self.targets[list(VOXEL_COLUMNS)]
        if (
            not all(pd.api.types.is_integer_dtype(indices[c]) for c in VOXEL_COLUMNS)
            or (indices.to_numpy() < 0).any()
        ):
            raise ValueError(
                f"{self._name}: the targets' {list(VOXEL_COLUMNS)} must be non-negative integers"
            )
        self.affine = affine

    def noise_ceiling_fraction(self) -> np.ndarray | None:
        """The noise ceiling as a fraction of explainable variance, flattened like the targets.

        Returns
        -------
        ceiling : ndarray of shape (n_targets_flat,), float64, or None
            None without a noise ceiling or when its unit is not declared
            (``noise_ceiling_unit``): a unit is never guessed from the values.
        """
        if self.noise_ceiling is None or self.noise_ceiling_unit is None:
            return None
        ceiling = np.asarray(self.noise_ceiling, dtype=np.float64).reshape(-1)
        return ceiling / 100.0 if self.noise_ceiling_unit == "percent" else ceiling

    def voxel_indices(self) -> np.ndarray | None:
        """(i, j, k) of every target in the grid of :attr:`affine`: (n_targets, 3), or None."""
        if self.affine is None:
            return None
        return self.targets[list(VOXEL_COLUMNS)].to_numpy(dtype=np.int64)

    # ------------------------------------------------------------------ sizes
    @property
    def n_stimuli(self) -> int:
        return self.data.shape[0]

    @property
    def n_targets(self) -> int:
        """Number of flattened targets (MEG: n_channels * n_times)."""
        return int(np.prod(self.data.shape[1:]))

    # ------------------------------------------------------------------ selection
    def select_stimuli(self, ids: list[str]) -> BrainData:
        """A copy with the given stimuli, in the given order (all must be present)."""
        position = {stimulus_id: i for i, stimulus_id in enumerate(self.stimulus_ids)}
        missing = [stimulus_id for stimulus_id in ids if stimulus_id not in position]
        if missing:
            raise KeyError(
                f"{self._name}: stimulus ids not in the brain data: "
                f"{format_id_list(missing, len(ids))}"
            )
        rows = np.array([position[stimulus_id] for stimulus_id in ids], dtype=np.int64)
        return replace(
            self,
            data=self.data[rows],
            stimulus_ids=list(ids),
            repeats=None if self.repeats is None else self.repeats[:, rows],
        )

    def align(self, stimuli: StimulusSet) -> tuple[BrainData, StimulusSet]:
        """Pair brain rows with images by stimulus id.

        Every stimulus of the brain data must have an image; images without brain data are
        dropped. The brain data keeps its order and the stimuli follow it.

        Returns
        -------
        brain : BrainData
        stimuli : StimulusSet with ``stimuli.ids == brain.stimulus_ids``

        Raises
        ------
        ValueError
            ``stimulus ids missing from images: 'x12', 'x40' (2 of 300)``.
        """
        available = set(stimuli.ids)
        missing = [stimulus_id for stimulus_id in self.stimulus_ids if stimulus_id not in available]
        if missing:
            raise ValueError(
                f"stimulus ids missing from images: "
                f"{format_id_list(missing, len(self.stimulus_ids))} ({self._name}); "
                "check that the stimulus table and the brain data use the same ids"
            )
        if stimuli.ids == self.stimulus_ids:
            return self, stimuli
        return self, stimuli.subset(self.stimulus_ids)

    def drop_bad_targets(self) -> BrainData:
        """Drop targets with NaN or infinite responses, or the same response to every stimulus.

        fMRI drops targets; MEG drops channels (a channel with any NaN or inf, or constant
        across stimuli at every time point). Repeats count too. Warns with the counts.

        Raises
        ------
        ValueError
            When no target is left.
        """
        per_target = self.data.reshape(self.n_stimuli, self.data.shape[1], -1)  # (n, T, t)
        repeats = None
        if self.repeats is not None:
            repeats = self.repeats.reshape(-1, self.n_stimuli, *per_target.shape[1:])
        has_nan = _any_per_target(np.isnan, per_target, repeats)
        has_inf = _any_per_target(np.isinf, per_target, repeats) & ~has_nan
        not_finite = has_nan | has_inf
        with np.errstate(invalid="ignore"):  # inf - inf where a target holds inf
            spread = np.ptp(per_target, axis=0)  # (T, t), NaN where a response is NaN
        is_constant = ~not_finite & np.all(spread == 0, axis=1)
        bad = not_finite | is_constant
        if not bad.any():
            return self
        unit = "targets" if self.modality == "fmri" else "channels"
        if bad.all():
            raise ValueError(
                f"{self._name}: all {bad.size} {unit} are NaN or constant across stimuli, or "
                "hold infinite values; nothing is left to fit"
            )
        infinite = f", {int(has_inf.sum())} with inf" if has_inf.any() else ""
        warnings.warn(
            f"{self._name}: dropped {int(bad.sum())} of {bad.size} {unit} "
            f"({int(has_nan.sum())} with NaN, {int(is_constant.sum())} constant across stimuli"
            f"{infinite})",
            UserWarning,
            stacklevel=2,
        )
        keep = ~bad
        targets = self.targets[keep].reset_index(drop=True)
        rois = self.rois
        if self.modality == "fmri":
            rois = rois[rois["roi"].isin(set(targets["roi"]))].reset_index(drop=True)
            if "n_targets" in rois.columns:
                counts = targets["roi"].value_counts()
                rois = rois.assign(n_targets=rois["roi"].map(counts).astype(int))
        info = self.info
        if info is not None:
            import mne

            info = mne.pick_info(info, np.flatnonzero(keep))
        return replace(
            self,
            data=self.data[:, keep],
            targets=targets,
            rois=rois,
            repeats=None if self.repeats is None else self.repeats[:, :, keep],
            noise_ceiling=None if self.noise_ceiling is None else self.noise_ceiling[keep],
            info=info,
        )

    # ------------------------------------------------------------------ flat views
    def targets_matrix(self) -> np.ndarray:
        """Responses as one matrix; MEG (channel, time) pairs flattened channel-major.

        Returns
        -------
        Y : ndarray of shape (n_stimuli, n_targets_flat), float32
            Column ``c * n_times + t`` is channel ``c`` at time ``times[t]``.
        """
        return self.data.reshape(self.n_stimuli, -1)  # (n, C * T) for MEG

    def repeats_matrix(self) -> np.ndarray | None:
        """Repeats flattened like :meth:`targets_matrix`.

        Returns
        -------
        repeats : ndarray of shape (n_repeats, n_stimuli, n_targets_flat), or None
        """
        if self.repeats is None:
            return None
        return self.repeats.reshape(self.repeats.shape[0], self.n_stimuli, -1)

    def target_index(self) -> pd.DataFrame:
        """One row per column of :meth:`targets_matrix`.

        Returns
        -------
        index : DataFrame
            fMRI: the targets table. MEG: columns channel, time, channel_index, time_index.
        """
        if self.modality == "fmri":
            return self.targets.copy()
        n_channels, n_times = self.data.shape[1:]
        channel_index = np.repeat(np.arange(n_channels), n_times)
        time_index = np.tile(np.arange(n_times), n_channels)
        return pd.DataFrame(
            {
                "channel": self.targets["channel"].to_numpy()[channel_index],
                "time": self.times[time_index],
                "channel_index": channel_index,
                "time_index": time_index,
            }
        )

    def unflatten(self, values: np.ndarray) -> np.ndarray:
        """Undo the flattening of :meth:`targets_matrix` on the last axis.

        Parameters
        ----------
        values : ndarray of shape (..., n_targets_flat)

        Returns
        -------
        values : ndarray of shape (..., *data.shape[1:])
        """
        values = np.asarray(values)
        if values.shape[-1] != self.n_targets:
            raise ValueError(
                f"expected a last axis of {self.n_targets} targets; got shape {values.shape}"
            )
        return values.reshape(*values.shape[:-1], *self.data.shape[1:])


def _any_per_target(test: Any, per_target: np.ndarray, repeats: np.ndarray | None) -> np.ndarray:
    """Whether ``test`` holds anywhere in a target's responses (or repeats): (n_targets,) bool."""
    found = test(per_target).any(axis=(0, 2))
    if repeats is not None:
        found |= test(repeats).any(axis=(0, 1, 3))
    return found


def numeric_coordinates(targets: pd.DataFrame, *, where: str) -> pd.DataFrame:
    """The targets table with its x, y, z columns as float64; other cells are an error.

    Empty cells (NaN) mean an unknown coordinate and are kept.

    Parameters
    ----------
    targets : DataFrame, one row per target, with some of the columns x, y, z
    where : str
        The table's name for the error message (a file path, or the data's name).

    Returns
    -------
    targets : DataFrame, a copy

    Raises
    ------
    ValueError
        For a cell that is not a finite number (text, inf): names the column, the row and the
        value.
    """
    converted = {}
    for column in (c for c in COORDINATE_COLUMNS if c in targets.columns):
        original = targets[column]
        values = pd.to_numeric(original, errors="coerce").astype(np.float64)
        bad = (values.isna() & original.notna()) | np.isinf(values)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{where}: column {column!r}, row {row + 1} holds {original.iloc[row]!r}, not a "
                f"coordinate ({int(bad.sum())} such cell(s) in {column!r}); x, y and z must be "
                "numbers in mm, or empty when unknown"
            )
        converted[column] = values
    return targets.assign(**converted)


def _default_rois(targets: pd.DataFrame) -> pd.DataFrame:
    if all(column in targets.columns for column in COORDINATE_COLUMNS):
        return roi_table(targets)
    names = pd.unique(targets["roi"])
    counts = targets["roi"].value_counts()
    return pd.DataFrame(
        {
            "roi": names,
            **{column: np.full(len(names), np.nan) for column in COORDINATE_COLUMNS},
            "n_targets": [int(counts[name]) for name in names],
        }
    )
