"""Step 2 of a probe: one cross-validated ridge mapping per layer, kept as a :class:`LayerFit`.

A fit holds what the scores need and nothing larger: R per brain target (encoding) and R per
*group*, where the groups are the fMRI ROIs or the MEG time samples. Layers are independent, so
a caller may fit them anywhere (the training callback fits a share of the layers on each DDP
rank) and summarise them together (:func:`brainalign.probe.pipeline.summarise_fits`).

- ``encoding`` (model -> brain, Study A): one ridge from the layer to every target at once
  (MEG targets are (channel, time) pairs); a group's R is the mean R of its targets.
- ``decoding`` (brain -> model, Study C): one decoder per group, from that ROI's voxels or from
  all MEG channels at that time sample, to the layer's features; a group's R is the held-out R
  averaged over feature dimensions. The layer's overall R is that of one decoder from every
  target.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import EncodingConfig
from brainalign.probe.ridge import fit_mapping
from brainalign.probe.scores import encoding_score, roi_scores

__all__ = ["LayerFit", "fit_layer", "group_names"]


@dataclass(frozen=True)
class LayerFit:
    """The held-out performance of one layer's mapping.

    Attributes
    ----------
    layer : int
    target_r : ndarray of shape (n_targets,) or None
        R per brain target (encoding direction; None for decoding).
    overall_r : float
        Mean R over every target (encoding), or of the all-target decoder (decoding).
    group_r : ndarray of shape (n_groups,)
        R per ROI (fMRI, in :func:`group_names` order) or per time sample (MEG).
    """

    layer: int
    target_r: np.ndarray | None
    overall_r: float
    group_r: np.ndarray


def group_names(brain: BrainData) -> list[str]:
    """The groups of a data set: ROI names in order of first appearance, or MEG time labels."""
    if brain.modality == "fmri":
        return list(dict.fromkeys(brain.targets["roi"].astype(str)))
    return [f"t={time:.4f}" for time in np.asarray(brain.times, dtype=np.float64)]


def fit_layer(
    layer: int, features: np.ndarray, brain: BrainData, config: EncodingConfig
) -> LayerFit:
    """Fit one layer's mapping to ``brain`` and keep its per-target and per-group R.

    Parameters
    ----------
    layer : int
    features : ndarray of shape (n_stimuli, n_features)
        Rows in ``brain.stimulus_ids`` order.
    brain : BrainData
    config : EncodingConfig

    Returns
    -------
    LayerFit
    """
    if features.shape[0] != brain.n_stimuli:
        raise ValueError(
            f"layer {layer} has features for {features.shape[0]} stimuli but "
            f"{brain.subject}/{brain.modality} has {brain.n_stimuli}; "
            "align brain data and stimuli first"
        )
    targets = brain.targets_matrix()  # (n_stimuli, n_targets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant targets or dimensions: NaN
        overall = fit_mapping(features, targets, config).r  # (n_targets,) or (n_features,)
        if config.direction == "encoding":
            target_r = np.asarray(overall, dtype=np.float64)
            groups = _group_means(target_r, brain)
            return LayerFit(layer, target_r, encoding_score(target_r), groups)
        decoded = [
            float(np.nanmean(fit_mapping(features, predictors, config).r))
            for predictors in _group_predictors(brain)
        ]
        return LayerFit(layer, None, float(np.nanmean(overall)), np.asarray(decoded))


def _group_means(target_r: np.ndarray, brain: BrainData) -> np.ndarray:
    """Mean R of each group's targets: (n_rois,) or (n_times,) (mean over channels)."""
    if brain.modality == "fmri":
        by_roi = roi_scores(target_r, brain.targets["roi"].astype(str).to_numpy())
        return by_roi.reindex(group_names(brain)).to_numpy(dtype=np.float64)
    return np.nanmean(brain.unflatten(target_r), axis=0)  # (n_channels, n_times) -> (n_times,)


def _group_predictors(brain: BrainData) -> Sequence[np.ndarray]:
    """The predictors of each decoder: one ROI's voxels, or all MEG channels at one time."""
    if brain.modality == "fmri":
        targets = brain.targets_matrix()
        roi_of_target = brain.targets["roi"].astype(str).to_numpy()
        return [targets[:, roi_of_target == roi] for roi in group_names(brain)]
    return [brain.data[:, :, index] for index in range(brain.data.shape[2])]
