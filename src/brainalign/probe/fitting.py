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

Other metrics of the same layer (RSA, CKA: :mod:`brainalign.probe.metrics.per_group`) are kept
beside R as a :class:`MetricFit` per metric, over the same groups, and variance partitioning of
two feature spaces as a :class:`PartitionFit`. A fit without the ridge (``metrics`` not asking
for ``encoding``) has ``group_r = None``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from brainalign.probe.bootstrap import GroupRAccumulator, resample_counts
from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import EncodingConfig
from brainalign.probe.ridge import fit_mapping, outer_splits
from brainalign.probe.scores import encoding_score, roi_scores

__all__ = [
    "BootstrapPlan",
    "LayerFit",
    "MetricFit",
    "PartitionFit",
    "fit_layer",
    "group_means",
    "group_names",
    "target_groups",
]


@dataclass(frozen=True)
class BootstrapPlan:
    """The resamples of one data set's stimuli, shared by all its layers (and checkpoints).

    Attributes
    ----------
    weights : ndarray of shape (n_boot, n_stimuli)
        Resample counts, drawn within each outer fold.
    folds : list of ndarray of int
        The outer folds' test rows (those of :func:`~brainalign.probe.ridge.fit_encoding`).
    """

    weights: np.ndarray
    folds: list[np.ndarray]

    @classmethod
    def draw(
        cls, n_stimuli: int, config: EncodingConfig, n_resamples: int, seed: int
    ) -> BootstrapPlan:
        """Resamples for ``n_stimuli`` stimuli split into ``config``'s outer folds."""
        splits = outer_splits(n_stimuli, config.n_folds, shuffle=config.shuffle, seed=config.seed)
        folds = [np.asarray(test, dtype=np.int64) for _, test in splits]
        return cls(resample_counts(n_stimuli, n_resamples, seed, folds), folds)


@dataclass(frozen=True)
class MetricFit:
    """One layer's value of a metric other than encoding (``rsa``, ``cka``...), per group.

    Attributes
    ----------
    overall : float
        The metric with every target as one set (the ``all`` group).
    group : ndarray of shape (n_groups,)
        Per ROI (:func:`group_names` order) or per MEG time sample (channels as the set).
    boot_overall : ndarray of shape (n_boot,), optional
        ``overall`` in each bootstrap resample of the stimuli (metrics that have one).
    boot_group : ndarray of shape (n_boot, n_groups), optional
        ``group`` in each resample.
    """

    overall: float
    group: np.ndarray
    boot_overall: np.ndarray | None = None
    boot_group: np.ndarray | None = None


@dataclass(frozen=True)
class PartitionFit:
    """Variance partitioning of two feature spaces, averaged over each group's targets.

    Attributes
    ----------
    label : str
        The ``feature_kind`` of its rows (``activation+gradient`` for the two kinds).
    layer : int
        The layer partitioned, or -1 for two layers (named in ``spaces``).
    spaces : tuple of str
    subsets : tuple of tuples of str
        Every non-empty subset of ``spaces`` (one space, then both).
    r2 : ndarray of shape (n_subsets, 1 + n_groups)
        Held-out R2 of the banded ridge on each subset: over all targets, then per group.
    regions : ndarray of shape (n_subsets, 1 + n_groups)
        Unique variance (one space) and shared variance (both), same layout.
    boot_r2, boot_regions : ndarray of shape (n_boot, n_subsets, 1 + n_groups), optional
        ``r2`` and ``regions`` in each bootstrap resample of the held-out stimuli.
    """

    label: str
    layer: int
    spaces: tuple[str, ...]
    subsets: tuple[tuple[str, ...], ...]
    r2: np.ndarray
    regions: np.ndarray
    boot_r2: np.ndarray | None = None
    boot_regions: np.ndarray | None = None


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
    group_r : ndarray of shape (n_groups,), or None
        R per ROI (fMRI, in :func:`group_names` order) or per time sample (MEG); None when
        the ridge was not fitted (``encoding`` not among the metrics).
    boot_overall_r : ndarray of shape (n_boot,), optional
        ``overall_r`` in each bootstrap resample (with a :class:`BootstrapPlan`).
    boot_group_r : ndarray of shape (n_boot, n_groups), optional
        ``group_r`` in each bootstrap resample.
    metrics : dict of str to MetricFit
        The other metrics of this layer, by name (``rsa``, ``cka``, ``cka_cv``).
    partitions : tuple of PartitionFit
        Variance partitionings computed beside this layer's fit.
    """

    layer: int
    target_r: np.ndarray | None
    overall_r: float
    group_r: np.ndarray | None
    boot_overall_r: np.ndarray | None = None
    boot_group_r: np.ndarray | None = None
    metrics: dict[str, MetricFit] = field(default_factory=dict)
    partitions: tuple[PartitionFit, ...] = ()

    @classmethod
    def without_encoding(cls, layer: int) -> LayerFit:
        """A fit of ``layer`` that holds no ridge results (other metrics are added to it)."""
        return cls(layer, None, float("nan"), None)


def group_names(brain: BrainData) -> list[str]:
    """The groups of a data set: ROI names in order of first appearance, or MEG time labels."""
    if brain.modality == "fmri":
        return list(dict.fromkeys(brain.targets["roi"].astype(str)))
    return [f"t={time:.4f}" for time in np.asarray(brain.times, dtype=np.float64)]


def fit_layer(
    layer: int,
    features: np.ndarray,
    brain: BrainData,
    config: EncodingConfig,
    *,
    bootstrap: BootstrapPlan | None = None,
) -> LayerFit:
    """Fit one layer's mapping to ``brain`` and keep its per-target and per-group R.

    Parameters
    ----------
    layer : int
    features : ndarray of shape (n_stimuli, n_features)
        Rows in ``brain.stimulus_ids`` order.
    brain : BrainData
    config : EncodingConfig
    bootstrap : BootstrapPlan, optional
        Also resample the held-out predictions (as the solver makes them) and keep the
        overall and per-group R of every resample.

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
        if config.direction == "encoding":
            index_sets = [np.arange(targets.shape[1]), *target_groups(brain)]  # all, groups
            overall, boot = _fit(features, targets, config, bootstrap, index_sets)
            target_r = np.asarray(overall, dtype=np.float64)
            groups = group_means(target_r, brain)
            return LayerFit(
                layer,
                target_r,
                encoding_score(target_r),
                groups,
                boot_overall_r=None if boot is None else boot[:, 0],
                boot_group_r=None if boot is None else boot[:, 1:],
            )
        every = [np.arange(features.shape[1])]  # R averaged over all feature dimensions
        overall, boot_overall = _fit(features, targets, config, bootstrap, every)
        decoded = [_fit(features, part, config, bootstrap, every) for part in _predictors(brain)]
        group_boot = None
        if bootstrap is not None:
            group_boot = np.concatenate([boot for _, boot in decoded], axis=1)
        return LayerFit(
            layer,
            None,
            float(np.nanmean(overall)),
            np.asarray([float(np.nanmean(r)) for r, _ in decoded]),
            boot_overall_r=None if boot_overall is None else boot_overall[:, 0],
            boot_group_r=group_boot,
        )


def _fit(
    features: np.ndarray,
    brain: np.ndarray,
    config: EncodingConfig,
    bootstrap: BootstrapPlan | None,
    index_sets: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray | None]:
    """R per target of one mapping, and the group means of its resamples (or None)."""
    if bootstrap is None:
        return fit_mapping(features, brain, config).r, None
    n_targets = brain.shape[1] if config.direction == "encoding" else features.shape[1]
    accumulator = GroupRAccumulator(
        bootstrap.weights, bootstrap.folds, list(index_sets), n_targets=n_targets
    )
    result = fit_mapping(features, brain, config, prediction_sink=accumulator.add)
    return result.r, accumulator.result()


def target_groups(brain: BrainData) -> list[np.ndarray]:
    """The targets of each group: an ROI's voxels, or every channel at one MEG time sample."""
    if brain.modality == "fmri":
        roi_of_target = brain.targets["roi"].astype(str).to_numpy()
        return [np.flatnonzero(roi_of_target == roi) for roi in group_names(brain)]
    positions = brain.unflatten(np.arange(brain.n_targets))  # (n_channels, n_times)
    return [positions[:, index].astype(np.int64) for index in range(positions.shape[1])]


def group_means(values: np.ndarray, brain: BrainData) -> np.ndarray:
    """Mean of a per-target value over each group's targets: (n_rois,) or (n_times,).

    Parameters
    ----------
    values : ndarray of shape (n_targets_flat,)
        One value per column of ``brain.targets_matrix()`` (R, a noise ceiling, a variance
        share); NaN values are ignored.

    Returns
    -------
    ndarray of shape (n_groups,)
        Per ROI (:func:`group_names` order), or per MEG time sample (mean over channels).
    """
    if brain.modality == "fmri":
        by_roi = roi_scores(values, brain.targets["roi"].astype(str).to_numpy())
        return by_roi.reindex(group_names(brain)).to_numpy(dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN time sample stays NaN
        return np.nanmean(brain.unflatten(values), axis=0)  # (n_channels, n_times) -> (n_times,)


def _predictors(brain: BrainData) -> Sequence[np.ndarray]:
    """The predictors of each decoder: one ROI's voxels, or all MEG channels at one time."""
    if brain.modality == "fmri":
        targets = brain.targets_matrix()
        roi_of_target = brain.targets["roi"].astype(str).to_numpy()
        return [targets[:, roi_of_target == roi] for roi in group_names(brain)]
    return [brain.data[:, :, index] for index in range(brain.data.shape[2])]
