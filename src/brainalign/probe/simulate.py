"""The simulated subject: brain data with a planted hierarchy, the project's ground truth.

Four *levels* of image description, from low to high (:func:`planted_levels`):

0. ``low_level``: pixel statistics (mean luminance, RMS contrast, colour means, oriented
   energy per quadrant; energies log-transformed), from
   :func:`brainalign.synthetic.low_level.low_level_statistics`.
1. ``coarse_layout``: the image averaged over a 4 x 4 grid, per colour channel, minus the
   image's mean colour (spatial layout of colour and luminance).
2. ``mid_level``: texture frequency, orientation, scale and position latents mixed
   non-linearly (tanh of fixed random projections).
3. ``category``: one-hot of the latent ``category`` (8 values; its meaning depends on the
   image type).

Each level is standardised (z-scored per column) across the stimulus set.

fMRI: ROIs with MNI centroids (left hemisphere) whose distance from V1 rises with their level;
each voxel is a random linear read-out of its ROI's level (plus a ``cross_level_weight``
share of variance from the neighbouring levels), scaled to unit variance, plus Gaussian noise
of standard deviation ``noise`` per repeat (per-repeat SNR = 1 / noise**2).
``responses.npy`` is the mean over repeats; ``repeats.npy`` keeps them.

MEG: each sensor mixes all levels; level k enters through a Gaussian temporal kernel peaking at
``meg_latencies[k]`` (70, 120, 180, 300 ms by default). Times run from -0.1 to 0.6 s. Every
stimulus is shown ``n_repeats`` times (separate epochs with one ``stimulus_id``), with white
Gaussian noise of standard deviation ``meg_noise`` (default ``noise``) and a
stimulus-independent evoked response; data are in tesla (unit signal = 100 fT).

Run::

    from brainalign.probe.simulate import simulate_subject
    subject = simulate_subject("sim", n_stimuli=300)
    brain, stimuli = load_brain(subject.fmri_dir)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from brainalign.probe.brain_data import BrainData
from brainalign.probe.formats import write_fmri_folder, write_meg_epochs
from brainalign.probe.rois import distance_from_v1
from brainalign.synthetic.images import IMAGE_TYPES, generate_images, normalize_image_type_weights
from brainalign.synthetic.low_level import low_level_statistics

__all__ = [
    "LEVEL_NAMES",
    "SIMULATED_ROIS",
    "SimulatedSubject",
    "oracle_features",
    "planted_levels",
    "simulate_subject",
]

LEVEL_NAMES: tuple[str, ...] = ("low_level", "coarse_layout", "mid_level", "category")
N_CATEGORIES = 8
DEFAULT_MEG_LATENCIES: tuple[float, ...] = (0.07, 0.12, 0.18, 0.30)  # s, peak per level
DEFAULT_MEG_WIDTHS: tuple[float, ...] = (0.02, 0.025, 0.035, 0.06)  # s, kernel sd per level
MEG_UNIT_TESLA = 1e-13  # a unit-variance simulated signal is 100 fT

# name, planted level, MNI centroid (mm, left hemisphere; Glasser-like labels).
SIMULATED_ROIS: tuple[tuple[str, int, tuple[float, float, float]], ...] = (
    ("V1", 0, (-8.0, -90.0, 2.0)),
    ("V2", 0, (-12.0, -88.0, 8.0)),
    ("V3", 1, (-22.0, -90.0, 6.0)),
    ("hV4", 1, (-30.0, -78.0, -12.0)),
    ("VMV2", 2, (-26.0, -66.0, -10.0)),
    ("LO2", 2, (-42.0, -80.0, 0.0)),
    ("MT", 2, (-46.0, -70.0, 4.0)),
    ("PHA1", 3, (-28.0, -42.0, -10.0)),
    ("FFC", 3, (-40.0, -52.0, -18.0)),
    ("IFSp", 3, (-44.0, 18.0, 24.0)),
)

# Sensor positions of the simulated MEG (for topomaps only: the signal ignores them): the
# smallest BioSemi cap with enough positions.
_MONTAGE_SIZES = (16, 32, 64, 128, 256)
_LAYOUT_GRID = 4
_MID_LEVEL_UNITS = 24
_MID_LEVEL_SEED = 20240611  # fixed: the mid-level features are a fixed function of the latents
_ENERGY_FLOOR = 1e-5
_N_GLOBAL_STATISTICS = 5  # leading columns of low_level_statistics that are not energies


# ---------------------------------------------------------------------- planted levels
def _standardise(features: np.ndarray) -> np.ndarray:
    """Z-score columns across rows; constant columns become 0. Returns float32."""
    features = np.asarray(features, dtype=np.float64)
    centred = features - features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True)
    return (centred / np.where(std > 0, std, 1.0)).astype(np.float32)


def _low_level(images: np.ndarray) -> np.ndarray:
    statistics = low_level_statistics(images)  # (n, 5 + n_energies)
    energies = np.log(statistics[:, _N_GLOBAL_STATISTICS:] + _ENERGY_FLOOR)
    return np.column_stack([statistics[:, :_N_GLOBAL_STATISTICS], energies])


def _coarse_layout(images: np.ndarray, grid: int = _LAYOUT_GRID) -> np.ndarray:
    pixels = images.astype(np.float64) / 255.0  # (n, H, W, 3)
    height, width = pixels.shape[1:3]
    row_edges = np.linspace(0, height, grid + 1).astype(int)
    col_edges = np.linspace(0, width, grid + 1).astype(int)
    sums = np.add.reduceat(pixels, row_edges[:-1], axis=1)  # (n, grid, W, 3)
    sums = np.add.reduceat(sums, col_edges[:-1], axis=2)  # (n, grid, grid, 3)
    counts = (np.diff(row_edges)[:, None] * np.diff(col_edges)[None, :])[None, :, :, None]
    cells = (sums / counts).reshape(len(images), grid * grid, 3)  # (n, cells, 3)
    # relative to the image's mean colour, which level 0 already holds
    layout = cells - cells.mean(axis=1, keepdims=True)
    return layout.reshape(len(images), -1)  # (n, grid * grid * 3)


def _latent_column(latents: pd.DataFrame, name: str) -> np.ndarray:
    if name not in latents.columns:
        raise ValueError(
            f"the latents table lacks the column {name!r}; it has {list(latents.columns)}"
        )
    return latents[name].to_numpy(dtype=np.float64)


def _mid_level(latents: pd.DataFrame) -> np.ndarray:
    log_frequency = np.log(_latent_column(latents, "spatial_frequency"))
    orientation = _latent_column(latents, "orientation")
    inputs = np.column_stack(
        [
            (log_frequency - np.log(4.0)) / np.log(2.0),  # about [-1, 1] for 2..8 cycles
            np.cos(2 * orientation),  # orientation is periodic in pi
            np.sin(2 * orientation),
            (_latent_column(latents, "scale") - 0.75) / 0.25,
            _latent_column(latents, "position_x") / 0.25,
            _latent_column(latents, "position_y") / 0.25,
        ]
    )  # (n, 6)
    rng = np.random.default_rng(_MID_LEVEL_SEED)
    projection = rng.normal(0.0, 1.0, (inputs.shape[1], _MID_LEVEL_UNITS))
    offset = rng.normal(0.0, 0.5, _MID_LEVEL_UNITS)
    mixed = np.tanh(inputs @ projection + offset)  # (n, units)
    # products of unit pairs add an interaction the linear read-out of the latents lacks
    return np.column_stack([mixed, mixed[:, ::2] * mixed[:, 1::2]])


def _category(latents: pd.DataFrame) -> np.ndarray:
    category = _latent_column(latents, "category").astype(np.int64)
    if category.size and (category.min() < 0 or category.max() >= N_CATEGORIES):
        raise ValueError(f"categories must lie in [0, {N_CATEGORIES}); got {sorted(set(category))}")
    return np.eye(N_CATEGORIES)[category]  # (n, 8)


def planted_levels(images: np.ndarray, latents: pd.DataFrame) -> list[np.ndarray]:
    """The four planted levels, low to high, standardised across the given stimuli.

    Parameters
    ----------
    images : ndarray of shape (n_stimuli, height, width, 3), uint8
    latents : DataFrame with n_stimuli rows
        As returned by :func:`brainalign.synthetic.images.generate_images` (``category``,
        ``spatial_frequency``, ``orientation``, ``scale``, ``position_x``, ``position_y``).

    Returns
    -------
    levels : list of 4 ndarrays of shape (n_stimuli, n_features_k), float32
        In the order of :data:`LEVEL_NAMES`.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 of shape (n, height, width, 3); got {images.dtype} "
            f"{images.shape}"
        )
    if len(latents) != len(images):
        raise ValueError(f"got {len(images)} images but {len(latents)} rows of latents")
    raw = [_low_level(images), _coarse_layout(images), _mid_level(latents), _category(latents)]
    return [_standardise(level) for level in raw]


def oracle_features(images: np.ndarray, latents: pd.DataFrame) -> list[np.ndarray]:
    """The planted levels used as a model: layer k = level k (for known-answer tests).

    Returns
    -------
    layers : list of 4 ndarrays of shape (n_stimuli, n_features_k), float32
    """
    return planted_levels(images, latents)


# ---------------------------------------------------------------------- responses
def _unit_variance(signal: np.ndarray) -> np.ndarray:
    """Centre and scale each column of (n, m) to unit variance."""
    centred = signal - signal.mean(axis=0, keepdims=True)
    std = centred.std(axis=0, keepdims=True)
    return centred / np.where(std > 0, std, 1.0)


def _level_readouts(level: np.ndarray, n_outputs: int, rng: np.random.Generator) -> np.ndarray:
    """Random linear read-outs of one level, each of unit variance: (n, n_outputs)."""
    weights = rng.normal(0.0, 1.0, (level.shape[1], n_outputs))
    return _unit_variance(level @ weights)


def _fmri_signal(
    levels: list[np.ndarray],
    roi_levels: Sequence[int],
    voxels_per_roi: int,
    cross_level_weight: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise-free voxel responses of unit variance: (n_stimuli, n_rois * voxels_per_roi)."""
    columns = []
    for level_index in roi_levels:
        own = _level_readouts(levels[level_index], voxels_per_roi, rng)
        neighbours = [k for k in (level_index - 1, level_index + 1) if 0 <= k < len(levels)]
        mixed = np.sqrt(1.0 - cross_level_weight) * own
        for neighbour in neighbours:
            share = cross_level_weight / len(neighbours)
            mixed += np.sqrt(share) * _level_readouts(levels[neighbour], voxels_per_roi, rng)
        columns.append(_unit_variance(mixed))
    return np.concatenate(columns, axis=1)


def _meg_signal(
    levels: list[np.ndarray],
    n_sensors: int,
    times: np.ndarray,
    latencies: Sequence[float],
    widths: Sequence[float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise-free sensor responses: (n_stimuli, n_sensors, n_times)."""
    n_stimuli = levels[0].shape[0]
    signal = np.zeros((n_stimuli, n_sensors, len(times)))
    for level, latency, width in zip(levels, latencies, widths):
        readouts = _level_readouts(level, n_sensors, rng)  # (n, S)
        gains = rng.uniform(0.5, 1.5, n_sensors) * rng.choice([-1.0, 1.0], n_sensors)  # (S,)
        kernel = np.exp(-0.5 * ((times - latency) / width) ** 2)  # (T,)
        signal += (readouts * gains)[:, :, None] * kernel[None, None, :]  # (n, S, T)
    return signal


def _evoked_response(n_sensors: int, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stimulus-independent response, (n_sensors, n_times): what z-scoring removes."""
    gains = rng.normal(0.0, 2.0, n_sensors)[:, None]
    waveform = np.exp(-0.5 * ((times - 0.1) / 0.03) ** 2) - 0.6 * np.exp(
        -0.5 * ((times - 0.2) / 0.05) ** 2
    )
    return gains * waveform[None, :]


# ---------------------------------------------------------------------- writing
@dataclass(frozen=True)
class SimulatedSubject:
    """Where :func:`simulate_subject` wrote a subject."""

    root: Path
    images_dir: Path
    stimuli_csv: Path
    fmri_dir: Path
    meg_path: Path
    truth_path: Path

    def truth(self) -> dict[str, Any]:
        """The planted truth (``truth.json``)."""
        return json.loads(self.truth_path.read_text())


def _prepare_root(root: Path, overwrite: bool) -> None:
    outputs = ["images", "stimuli.csv", "fmri", "meg", "truth.json"]
    present = [name for name in outputs if (root / name).exists()]
    if present and not overwrite:
        raise FileExistsError(
            f"{root} already holds a simulated subject ({present}); pass overwrite=True"
        )
    for name in present:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _roi_property_table(distances: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-ROI properties planted as noisy linear functions of the distance from V1 (mm)."""
    return {
        "expansion": 1.0 + distances / 40.0 + rng.normal(0.0, 0.1, len(distances)),
        "myelin": 1.6 - distances / 100.0 + rng.normal(0.0, 0.05, len(distances)),
    }


def simulate_subject(
    out_dir: str | Path,
    *,
    n_stimuli: int = 300,
    image_size: int = 32,
    image_types: Sequence[str] | Mapping[str, float] = IMAGE_TYPES,
    seed: int = 0,
    noise: float = 1.0,
    meg_noise: float | None = None,
    n_repeats: int = 2,
    voxels_per_roi: int = 12,
    cross_level_weight: float = 0.2,
    n_meg_sensors: int = 32,
    meg_sfreq: float = 100.0,
    meg_tmin: float = -0.1,
    meg_tmax: float = 0.6,
    meg_latencies: Sequence[float] = DEFAULT_MEG_LATENCIES,
    meg_widths: Sequence[float] = DEFAULT_MEG_WIDTHS,
    subject: str = "sim01",
    overwrite: bool = False,
) -> SimulatedSubject:
    """Write a simulated subject (images, fMRI folder, MEG epochs, truth) in the real formats.

    Layout::

        out_dir/images/<stimulus_id>.png
        out_dir/stimuli.csv          stimulus_id, image_path, latents
        out_dir/fmri/                generic fMRI folder (responses, repeats, targets, rois,
                                     images/: hard links to out_dir/images)
        out_dir/meg/<subject>-epo.fif   one epoch per trial, metadata stimulus_id, image_path
        out_dir/meg/images/          hard links to out_dir/images
        out_dir/truth.json           roi -> level, MEG latencies, seed, noise

    Parameters
    ----------
    out_dir : path
    n_stimuli, image_size, image_types, seed
        Passed to :func:`brainalign.synthetic.images.generate_images`; ``seed`` also drives
        the weights and the noise.
    noise : float
        fMRI noise standard deviation per repeat, relative to a unit-variance voxel signal.
    meg_noise : float, optional
        MEG noise standard deviation per trial relative to a unit read-out; default ``noise``.
    n_repeats : int
        Repeats per stimulus (fMRI repeats, MEG epochs).
    voxels_per_roi : int
    cross_level_weight : float in [0, 1)
        Share of a voxel's signal variance coming from the neighbouring levels.
    n_meg_sensors, meg_sfreq, meg_tmin, meg_tmax
        Sensor count ("mag" channels, placed at the positions of the smallest BioSemi montage
        of MNE with enough of them, ``biosemi32`` for 32, so topomaps can be drawn; the signal
        does not depend on position), sampling rate (Hz) and epoch window (s).
    meg_latencies, meg_widths : sequence of 4 floats, seconds
        Peak and standard deviation of each level's temporal kernel.
    subject : str
    overwrite : bool
        Replace a simulated subject already in ``out_dir`` (only its own files).

    Returns
    -------
    subject : SimulatedSubject
    """
    if not 0.0 <= cross_level_weight < 1.0:
        raise ValueError(f"cross_level_weight must lie in [0, 1); got {cross_level_weight}")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be at least 1; got {n_repeats}")
    if noise < 0 or (meg_noise is not None and meg_noise < 0):
        raise ValueError("noise levels must be >= 0")
    if len(meg_latencies) != len(LEVEL_NAMES) or len(meg_widths) != len(LEVEL_NAMES):
        raise ValueError(f"meg_latencies and meg_widths need {len(LEVEL_NAMES)} values each")
    meg_noise = noise if meg_noise is None else meg_noise
    image_type_weights = normalize_image_type_weights(image_types)
    root = Path(out_dir)
    _prepare_root(root, overwrite)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))

    images, latents = generate_images(
        n_stimuli, image_types=image_type_weights, size=image_size, seed=seed
    )
    ids = _write_stimuli(root, images, latents)
    levels = planted_levels(images, latents)

    fmri = _simulate_fmri(
        levels, ids, subject, noise, n_repeats, voxels_per_roi, cross_level_weight, rng
    )
    fmri_dir = write_fmri_folder(
        root / "fmri",
        fmri,
        pd.DataFrame({"stimulus_id": ids, "image_path": [f"images/{i}.png" for i in ids]}),
    )
    _link_images(root / "images", fmri_dir / "images", ids)

    n_times = round((meg_tmax - meg_tmin) * meg_sfreq) + 1
    times = meg_tmin + np.arange(n_times) / meg_sfreq  # (T,)
    meg_signal = _meg_signal(levels, n_meg_sensors, times, meg_latencies, meg_widths, rng)
    evoked = _evoked_response(n_meg_sensors, times, rng)
    presentation = np.concatenate([rng.permutation(n_stimuli) for _ in range(n_repeats)])
    trials = meg_signal[presentation] + evoked[None]  # (n_trials, S, T)
    trials = trials + meg_noise * rng.normal(0.0, 1.0, trials.shape)
    trial_ids = [ids[i] for i in presentation]
    meg_path = write_meg_epochs(
        root / "meg" / f"{subject}-epo.fif",
        trials * MEG_UNIT_TESLA,
        times,
        [f"MEG{channel:03d}" for channel in range(n_meg_sensors)],
        meg_sfreq,
        trial_ids,
        metadata=pd.DataFrame(
            {
                "repeat": np.repeat(np.arange(n_repeats), n_stimuli),
                "image_path": [f"images/{i}.png" for i in trial_ids],
                "category": latents["category"].to_numpy()[presentation],
                "image_type": latents["image_type"].to_numpy()[presentation],
            }
        ),
        montage=_sensor_montage(n_meg_sensors),
    )

    _link_images(root / "images", meg_path.parent / "images", ids)

    truth = {
        "subject": subject,
        "seed": seed,
        "n_stimuli": n_stimuli,
        "image_size": image_size,
        "image_types": image_type_weights,
        "n_repeats": n_repeats,
        "levels": [
            {
                "index": k,
                "name": name,
                "n_features": int(levels[k].shape[1]),
                "meg_peak_latency_s": float(meg_latencies[k]),
                "meg_kernel_sd_s": float(meg_widths[k]),
            }
            for k, name in enumerate(LEVEL_NAMES)
        ],
        **_roi_truth(fmri.rois),
        "noise": {
            "fmri_sd_per_repeat": float(noise),
            "meg_sd_per_trial": float(meg_noise),
            "fmri_snr_per_repeat": None if noise == 0 else float(1.0 / noise**2),
            "definition": "signal variance / noise variance for one repeat; voxel signals "
            "have unit variance",
        },
        "cross_level_weight": float(cross_level_weight),
        "voxels_per_roi": voxels_per_roi,
        "meg": {
            "n_sensors": n_meg_sensors,
            "sfreq_hz": float(meg_sfreq),
            "tmin_s": float(times[0]),
            "tmax_s": float(times[-1]),
            "unit_tesla": MEG_UNIT_TESLA,
        },
    }
    truth_path = root / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2))
    return SimulatedSubject(
        root=root,
        images_dir=root / "images",
        stimuli_csv=root / "stimuli.csv",
        fmri_dir=fmri_dir,
        meg_path=meg_path,
        truth_path=truth_path,
    )


def _sensor_montage(n_sensors: int) -> str | None:
    """``biosemiN`` with the fewest positions >= ``n_sensors`` (None beyond 256)."""
    return next((f"biosemi{size}" for size in _MONTAGE_SIZES if size >= n_sensors), None)


def _link_images(source: Path, destination: Path, ids: Sequence[str]) -> None:
    """Give a data folder its own ``images/`` (hard links to ``source``, copies if impossible).

    Tables may only name images inside their own folder, so the fMRI folder and the MEG file's
    folder each get the images; hard links keep one copy of the bytes on disk.
    """
    destination.mkdir(exist_ok=True)
    for stimulus_id in ids:
        name = f"{stimulus_id}.png"
        try:
            os.link(source / name, destination / name)
        except OSError:  # another file system, or links not supported
            shutil.copy2(source / name, destination / name)


def _write_stimuli(root: Path, images: np.ndarray, latents: pd.DataFrame) -> list[str]:
    """PNG per stimulus in root/images and root/stimuli.csv (ids, paths, latents)."""
    ids = latents["stimulus_id"].astype(str).tolist()
    images_dir = root / "images"
    images_dir.mkdir()
    for stimulus_id, image in zip(ids, images):
        Image.fromarray(image).save(images_dir / f"{stimulus_id}.png")
    latent_columns = [column for column in latents.columns if column != "stimulus_id"]
    table = latents.assign(image_path=[f"images/{i}.png" for i in ids])
    table[["stimulus_id", "image_path", *latent_columns]].to_csv(root / "stimuli.csv", index=False)
    return ids


def _simulate_fmri(
    levels: list[np.ndarray],
    ids: list[str],
    subject: str,
    noise: float,
    n_repeats: int,
    voxels_per_roi: int,
    cross_level_weight: float,
    rng: np.random.Generator,
) -> BrainData:
    roi_names = [name for name, _, _ in SIMULATED_ROIS]
    roi_levels = [level for _, level, _ in SIMULATED_ROIS]
    centroids = np.array([centroid for _, _, centroid in SIMULATED_ROIS])  # (n_rois, 3)
    signal = _fmri_signal(levels, roi_levels, voxels_per_roi, cross_level_weight, rng)
    repeats = signal[None] + noise * rng.normal(0.0, 1.0, (n_repeats, *signal.shape))
    coordinates = np.repeat(centroids, voxels_per_roi, axis=0)  # (n_voxels, 3)
    coordinates = coordinates + rng.normal(0.0, 3.0, coordinates.shape)
    targets = pd.DataFrame(
        {
            "roi": np.repeat(roi_names, voxels_per_roi),
            "hemi": "lh",
            "x": coordinates[:, 0].round(1),
            "y": coordinates[:, 1].round(1),
            "z": coordinates[:, 2].round(1),
        }
    )
    rois = pd.DataFrame(
        {"roi": roi_names, "x": centroids[:, 0], "y": centroids[:, 1], "z": centroids[:, 2]}
    )
    rois = rois.assign(**_roi_property_table(distance_from_v1(rois).to_numpy(), rng))
    return BrainData(
        modality="fmri",
        subject=subject,
        data=repeats.mean(axis=0),  # (n_stimuli, n_voxels)
        stimulus_ids=ids,
        targets=targets,
        rois=rois,
        repeats=repeats,
    )


def _roi_truth(rois: pd.DataFrame) -> dict[str, Any]:
    distances = distance_from_v1(rois)
    level_of = {name: level for name, level, _ in SIMULATED_ROIS}
    table = rois.set_index("roi")
    return {
        "rois": {
            name: {
                "level": level_of[name],
                "centroid_mni_mm": [float(table.loc[name, axis]) for axis in ("x", "y", "z")],
                "distance_from_v1_mm": float(distances[name]),
            }
            for name in table.index
        },
        "roi_properties": {
            column: {name: float(table.loc[name, column]) for name in table.index}
            for column in ("expansion", "myelin")
        },
    }
