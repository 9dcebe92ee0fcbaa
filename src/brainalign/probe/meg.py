"""MEG epoch preparation: channel picks, baseline, resampling, cropping, z-scoring.

The steps use MNE's own methods on a copy of the epochs, in this order: pick channels (bad
channels excluded), baseline, resample, crop; then z-score each (channel, time) across trials in
numpy. Study A (THINGS-MEG) resamples to 30 Hz and z-scores across trials per channel and time.

Example::

    prep = MEGPreparation(resample_hz=30.0, tmin=-0.1, tmax=0.8)
    data, times = prepare_epochs(mne.read_epochs("sub-01-epo.fif"), prep)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import mne

__all__ = [
    "DEFAULT_MEG_PREPARATION",
    "MEGPreparation",
    "prepare_epochs",
    "transform_epochs",
    "zscore_trials",
]


@dataclass(frozen=True)
class MEGPreparation:
    """How MEG epochs become brain data.

    Parameters
    ----------
    resample_hz : float, optional
        New sampling rate (MNE's ``Epochs.resample``); None keeps the recorded rate.
    tmin, tmax : float, optional
        Crop window in seconds (inclusive); None keeps that end. A window reaching past the
        epochs is clipped to them; one outside them is an error.
    baseline : tuple of (float or None, float or None), optional
        Baseline window for ``Epochs.apply_baseline``; None applies none.
    zscore : bool
        Z-score each (channel, time) across trials, before repeats are averaged.
    picks : "meg", list of str, or None
        Channels to keep: a channel type ("meg", "mag", "grad", "eeg"...), a list of channel
        names, or None for all data channels. Channels marked bad are left out.
    average_repeats : bool
        Average the trials of each stimulus (repeats are kept for noise ceilings). False is only
        allowed when no stimulus repeats (one row per stimulus id).
    """

    resample_hz: float | None = None
    tmin: float | None = None
    tmax: float | None = None
    baseline: tuple[float | None, float | None] | None = None
    zscore: bool = True
    picks: str | Sequence[str] | None = "meg"
    average_repeats: bool = True

    def __post_init__(self) -> None:
        if self.resample_hz is not None and not self.resample_hz > 0:
            raise ValueError(f"resample_hz must be positive; got {self.resample_hz}")
        if self.tmin is not None and self.tmax is not None and self.tmin > self.tmax:
            raise ValueError(f"tmin ({self.tmin}) must not exceed tmax ({self.tmax})")
        if self.baseline is not None and len(self.baseline) != 2:
            raise ValueError(f"baseline must be a (start, stop) pair; got {self.baseline}")
        if isinstance(self.picks, list):
            object.__setattr__(self, "picks", tuple(self.picks))


DEFAULT_MEG_PREPARATION = MEGPreparation()


def transform_epochs(epochs: mne.BaseEpochs, prep: MEGPreparation) -> mne.BaseEpochs:
    """Apply picks, baseline, resampling and cropping to a copy of ``epochs``.

    Parameters
    ----------
    epochs : mne.Epochs
    prep : MEGPreparation

    Returns
    -------
    epochs : mne.Epochs
        A prepared copy (data loaded); the input is left unchanged.
    """
    prepared = epochs.copy()
    if not prepared.preload:
        prepared.load_data()
    picks = list(prep.picks) if isinstance(prep.picks, tuple) else prep.picks
    if picks is None:
        picks = "data"
    try:
        prepared.pick(picks, exclude="bads")
    except ValueError as error:
        raise ValueError(
            f"MEG picks {prep.picks!r} select no usable channel: {error}; channel types present: "
            f"{sorted(set(prepared.get_channel_types()))}"
        ) from error
    if prep.baseline is not None:
        prepared.apply_baseline(prep.baseline, verbose="error")
    if prep.resample_hz is not None and prep.resample_hz != prepared.info["sfreq"]:
        prepared.resample(prep.resample_hz, verbose="error")
    if prep.tmin is not None or prep.tmax is not None:
        start, stop = prepared.times[0], prepared.times[-1]
        tmin = start if prep.tmin is None else prep.tmin
        tmax = stop if prep.tmax is None else prep.tmax
        if tmin > stop or tmax < start:
            raise ValueError(
                f"crop window {tmin}..{tmax} s lies outside the epochs ({start:.3f}..{stop:.3f} s)"
            )
        prepared.crop(max(tmin, start), min(tmax, stop), verbose="error")
    return prepared


def zscore_trials(data: np.ndarray) -> np.ndarray:
    """Z-score each (channel, time) across trials.

    Parameters
    ----------
    data : ndarray of shape (n_trials, n_channels, n_times)

    Returns
    -------
    zscored : ndarray of shape (n_trials, n_channels, n_times), float32
        Mean 0 and standard deviation 1 (ddof=0) across trials; a (channel, time) that is
        constant across trials becomes 0; NaN stays NaN.
    """
    data = np.asarray(data, dtype=np.float64)
    mean = data.mean(axis=0, keepdims=True)  # (1, C, T)
    std = data.std(axis=0, keepdims=True)  # (1, C, T)
    std = np.where(std > 0, std, 1.0)
    return ((data - mean) / std).astype(np.float32)


def prepare_epochs(
    epochs: mne.BaseEpochs, prep: MEGPreparation = DEFAULT_MEG_PREPARATION
) -> tuple[np.ndarray, np.ndarray]:
    """Prepared single-trial data.

    Parameters
    ----------
    epochs : mne.Epochs
    prep : MEGPreparation

    Returns
    -------
    data : ndarray of shape (n_trials, n_channels, n_times), float32
    times : ndarray of shape (n_times,), seconds
    """
    prepared = transform_epochs(epochs, prep)
    data = prepared.get_data(copy=False)  # (n_trials, C, T)
    data = zscore_trials(data) if prep.zscore else data.astype(np.float32)
    return data, prepared.times.copy()
