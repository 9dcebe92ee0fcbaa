"""The metrics as the probe core computes them: every layer against every group of one data set.

The groups are those of encoding (:func:`brainalign.probe.fitting.group_names`): the ``all``
group (every target as one set: all voxels, or MEG channels x times flattened), then one set per
fMRI ROI (its voxels) or per MEG time sample (the channels at that time). For each metric of
:class:`~brainalign.probe.config.ProbeConfig` other than ``encoding``, :func:`measure_layers`
returns one :class:`~brainalign.probe.fitting.MetricFit` per layer; the summary
(:func:`brainalign.probe.pipeline.summarise_fits`) turns them into rows, best depths, spatial
and temporal scores exactly as it does R.

- ``rsa``: RDMs (``rsa.distance`` for the brain, ``rsa.layer_distance`` for the layers),
  compared with ``rsa.comparison`` (:mod:`brainalign.probe.metrics.rsa`). Each layer's RDM is
  computed once; brain RDMs are computed in chunks of sets that fit a memory budget.
- ``cka``: linear CKA (``cka.unbiased``); ``cka_cv``: split-half cross-validated CKA on the
  single repeats (:mod:`brainalign.probe.metrics.cka`).

Noise ceilings (:func:`target_ceilings`): the data's declared ceiling in its declared unit,
else the split-half Spearman-Brown reliability of the repeats; and, when ``rsa`` is asked, the
split-half RSA ceiling per group (with repeats) and the leave-one-subject-out bounds across the
probe's subjects that saw the same stimuli (:func:`rsa_subject_ceilings`). Variance partitioning
(:func:`partition_layer`): himalaya's banded ridge of two feature spaces and their unique and
shared variance, averaged over each group's targets.

A set the metric is undefined for (the correlation distance of an ROI with one voxel: every
pattern is constant) gets NaN, never an error that would stop the probe.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import (
    BootstrapConfig,
    CKAConfig,
    EncodingConfig,
    ProbeConfig,
    RSAConfig,
    VariancePartitioningConfig,
)
from brainalign.probe.fitting import (
    BootstrapPlan,
    LayerFit,
    MetricFit,
    PartitionFit,
    group_means,
    group_names,
    target_groups,
)

__all__ = [
    "TargetCeilings",
    "add_metrics",
    "add_partitions",
    "check_partition_layers",
    "encoding_ceiling",
    "group_sets",
    "low_level_space",
    "measure_layers",
    "partition_layer",
    "rsa_subject_ceilings",
    "target_ceilings",
]

_RDM_BUDGET_VALUES = 2**25  # brain RDMs held at once: 32 Mi values (256 MiB in float64)
_SPLITS = 20  # random half splits averaged for split-half ceilings with more than 2 repeats
_ENERGY_FLOOR = 1e-5  # oriented energies are log-transformed (as the simulated subject's)
_N_GLOBAL_STATISTICS = 5  # leading columns of low_level_statistics that are not energies


# ---------------------------------------------------------------------------- sets
def group_sets(brain: BrainData, *, repeats: bool = False) -> list[np.ndarray]:
    """The ``all`` set, then one set per group, of the responses or of their repeats.

    Parameters
    ----------
    brain : BrainData
    repeats : bool
        Sets of the single repeats (``brain.repeats``, which must exist) instead of the means.

    Returns
    -------
    sets : list of 1 + n_groups arrays
        Of shape (n_stimuli, n_targets_j), or (n_repeats, n_stimuli, n_targets_j) with
        ``repeats``: all targets (MEG: channels x times flattened), then each ROI's voxels
        (:func:`~brainalign.probe.fitting.group_names` order) or the channels at each MEG time.
    """
    if repeats and brain.repeats is None:
        raise ValueError(f"{brain.subject}/{brain.modality} has no repeats")
    values = brain.repeats if repeats else brain.data  # (..., n, targets) or (..., n, C, T)
    leading = values.shape[: values.ndim - brain.data.ndim + 1]  # (n,) or (R, n)
    everything = values.reshape(*leading, -1)
    if brain.modality == "fmri":
        roi_of_target = brain.targets["roi"].astype(str).to_numpy()
        parts = [values[..., roi_of_target == roi] for roi in group_names(brain)]
    else:
        parts = [values[..., index] for index in range(values.shape[-1])]  # (..., n, C)
    return [everything, *parts]


def _usable(sets: Sequence[np.ndarray], distance: str | None) -> np.ndarray:
    """Which sets a metric is defined for: (n_sets,) bool."""
    if distance != "correlation":
        return np.ones(len(sets), dtype=bool)
    return np.array([item.shape[-1] >= 2 for item in sets])  # one voxel: no pattern to correlate


def _chunks(mask: np.ndarray, n_per_chunk: int) -> list[np.ndarray]:
    usable = np.flatnonzero(mask)
    return [usable[start : start + n_per_chunk] for start in range(0, len(usable), n_per_chunk)]


# ---------------------------------------------------------------------------- metrics
def _rsa(
    layers: list[np.ndarray],
    brain: BrainData,
    options: RSAConfig,
    device: Any,
    counts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """RSA of every layer with every set, and its bootstrap replicates given ``counts``.

    Returns (n_layers, n_sets) values and (n_boot, n_layers, n_sets) replicates (None without
    ``counts`` or for a comparison without a bootstrap).
    """
    from brainalign.probe.metrics.rsa import average_ranks, compare_rdms, n_pairs, rdms
    from brainalign.probe.metrics.rsa_bootstrap import (
        BOOTSTRAPPED_COMPARISONS,
        bootstrap_compare_rdms,
    )

    crossnobis = options.distance == "crossnobis"
    sets = group_sets(brain, repeats=crossnobis)
    layer_rdms = rdms(layers, options.layer_distance, device=device)  # (n_layers, n_pairs)
    model, method = layer_rdms, options.comparison
    if method == "spearman":  # Pearson of ranks: the layers' ranks once, not once per chunk
        model, method = average_ranks(layer_rdms), "pearson"
    result = np.full((len(layers), len(sets)), np.nan)
    boot = None
    if counts is not None and options.comparison in BOOTSTRAPPED_COMPARISONS:
        boot = np.full((counts.shape[0], len(layers), len(sets)), np.nan)
    per_chunk = max(1, _RDM_BUDGET_VALUES // n_pairs(brain.n_stimuli))
    for chunk in _chunks(_usable(sets, options.distance), per_chunk):
        brain_rdms = rdms([sets[i] for i in chunk], options.distance, device=device)
        if boot is not None:
            boot[:, :, chunk] = bootstrap_compare_rdms(
                layer_rdms, brain_rdms, counts, options.comparison
            )
        if options.comparison == "spearman":
            brain_rdms = average_ranks(brain_rdms)
        result[:, chunk] = compare_rdms(model, brain_rdms, method)
    return result, boot


def _cka(
    layers: list[np.ndarray],
    brain: BrainData,
    options: CKAConfig,
    device: Any,
    *,
    cv: bool,
    counts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """CKA (or its cross-validated form) of every layer with every set, and its replicates.

    Returns (n_layers, n_sets) values and (n_boot, n_layers, n_sets) replicates (None without
    ``counts``).
    """
    from brainalign.probe.metrics.cka import cross_validated_cka, linear_cka
    from brainalign.probe.metrics.cka_bootstrap import (
        bootstrap_cross_validated_cka,
        bootstrap_linear_cka,
    )

    if cv:
        sets = group_sets(brain, repeats=True)
        values = cross_validated_cka(layers, sets, device=device)
        if counts is None:
            return values, None
        return values, bootstrap_cross_validated_cka(layers, sets, counts, device=device)
    sets = group_sets(brain)
    values = linear_cka(layers, sets, unbiased=options.unbiased, device=device)
    if counts is None:
        return values, None
    boot = bootstrap_linear_cka(layers, sets, counts, unbiased=options.unbiased, device=device)
    return values, boot


def measure_layers(
    features: Mapping[int, np.ndarray],
    brain: BrainData,
    metrics: Sequence[str],
    *,
    rsa: RSAConfig | None = None,
    cka: CKAConfig | None = None,
    bootstrap: BootstrapConfig | None = None,
    device: Any = "cpu",
) -> dict[int, dict[str, MetricFit]]:
    """Every metric of every layer against every group of ``brain``.

    Parameters
    ----------
    features : mapping of int to ndarray of shape (n_stimuli, n_features)
        Layer -> features, rows in ``brain.stimulus_ids`` order.
    brain : BrainData
    metrics : sequence of {"rsa", "cka", "cka_cv"}
        ``encoding`` is skipped (the ridge is :func:`brainalign.probe.fitting.fit_layer`).
    rsa, cka : options of those metrics (defaults: :class:`RSAConfig`, :class:`CKAConfig`)
    bootstrap : BootstrapConfig, optional
        With ``n_resamples > 0``, every metric also gets its replicates over stimuli (the
        same resamples for every layer and metric): RSA with a Pearson or Spearman comparison
        (:mod:`brainalign.probe.metrics.rsa_bootstrap`; Kendall's tau-a has no weighted form
        there and gets none), CKA and cross-validated CKA
        (:mod:`brainalign.probe.metrics.cka_bootstrap`).
    device : str or torch.device
        Where the matrix products run (``cpu``, ``cuda``, ``auto``).

    Returns
    -------
    dict of layer to dict of metric name to MetricFit
    """
    rsa, cka = rsa or RSAConfig(), cka or CKAConfig()
    layers = sorted(features)
    stack = [np.asarray(features[layer], dtype=np.float64) for layer in layers]
    measured: dict[int, dict[str, MetricFit]] = {layer: {} for layer in layers}
    counts = None
    if bootstrap is not None and bootstrap.n_resamples > 0:
        from brainalign.probe.bootstrap import resample_counts

        counts = resample_counts(brain.n_stimuli, bootstrap.n_resamples, bootstrap.seed)
    for metric in metrics:
        if metric == "encoding":
            continue
        boot = None
        if metric == "rsa":
            values, boot = _rsa(stack, brain, rsa, device, counts)
        elif metric in ("cka", "cka_cv"):
            values, boot = _cka(stack, brain, cka, device, cv=metric == "cka_cv", counts=counts)
        else:
            raise ValueError(f"unknown metric {metric!r}; use rsa, cka or cka_cv")
        for row, layer in enumerate(layers):  # values: (n_layers, 1 + n_groups)
            measured[layer][metric] = MetricFit(
                float(values[row, 0]),
                values[row, 1:].copy(),
                boot_overall=None if boot is None else boot[:, row, 0].copy(),
                boot_group=None if boot is None else boot[:, row, 1:].copy(),
            )
    return measured


# ---------------------------------------------------------------------------- ceilings
@dataclass(frozen=True)
class TargetCeilings:
    """The noise ceilings of one data set.

    Attributes
    ----------
    encoding : ndarray of shape (n_targets_flat,), or None
        Fraction of each target's variance that is explainable (compare R with its square
        root).
    source : str
        ``declared`` (the data's own, in its declared unit), ``split_half`` (Spearman-Brown
        split-half reliability of the repeats) or ``""``.
    rsa : ndarray of shape (1 + n_groups,), or None
        Split-half RSA ceiling of the ``all`` set and of each group (with ``rsa`` asked).
    rsa_subjects : tuple of 2 ndarrays of shape (1 + n_groups,), or None
        Lower and upper leave-one-subject-out RSA ceilings across the probe's data sets that
        show the same stimuli with the same groups (:func:`rsa_subject_ceilings`).
    """

    encoding: np.ndarray | None = None
    source: str = ""
    rsa: np.ndarray | None = None
    rsa_subjects: tuple[np.ndarray, np.ndarray] | None = None


def _split_half(repeats: np.ndarray) -> np.ndarray:
    from brainalign.probe.metrics.ceilings import noise_ceiling_random_splits

    n_repeats = repeats.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant targets: NaN
        if n_repeats == 2:  # one split only
            return noise_ceiling_random_splits(repeats, n_splits=1, seed=None).reshape(-1)
        return noise_ceiling_random_splits(repeats, n_splits=_SPLITS, seed=0).reshape(-1)


def encoding_ceiling(brain: BrainData) -> tuple[np.ndarray | None, str]:
    """The encoding noise ceiling of ``brain`` as a fraction, and where it comes from.

    The data's own ceiling when it has one of declared unit
    (:meth:`BrainData.noise_ceiling_fraction`), else the split-half reliability of its
    repeats (the reliability of their mean, which ``data`` is assumed to be), else None.
    """
    declared = brain.noise_ceiling_fraction()
    if declared is not None:
        return declared, "declared"
    if brain.repeats is not None and brain.repeats.shape[0] >= 2 and brain.n_stimuli >= 3:
        return _split_half(brain.repeats), "split_half"
    return None, ""


def _rsa_ceiling(brain: BrainData, options: RSAConfig) -> np.ndarray | None:
    from brainalign.probe.metrics.ceilings import rsa_noise_ceiling_split_half

    n_repeats = 0 if brain.repeats is None else brain.repeats.shape[0]
    if n_repeats < (4 if options.distance == "crossnobis" else 2):
        return None  # crossnobis halves need 2 repeats each
    sets = group_sets(brain, repeats=True)
    ceiling = np.full(len(sets), np.nan)
    per_chunk = max(1, _RDM_BUDGET_VALUES // (2 * brain.n_stimuli**2))
    for chunk in _chunks(_usable(sets, options.distance), per_chunk):
        ceiling[chunk] = rsa_noise_ceiling_split_half(
            [sets[i] for i in chunk], metric=options.distance, method=options.comparison
        ).ceiling
    return ceiling


def rsa_subject_ceilings(
    brains: Sequence[BrainData], options: RSAConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-subject-out RSA ceilings of several subjects' data on the same stimuli.

    rsatoolbox's bounds (:func:`brainalign.probe.metrics.rsa_noise_ceiling_subjects`) per
    set: the ``all`` set and each group, which every subject must share (same ROI names, or
    the same MEG times).

    Parameters
    ----------
    brains : sequence of at least 2 BrainData
        The same stimulus ids (any order; compared in sorted order) and the same groups.
    options : RSAConfig
        The brain RDMs' distance and the comparison.

    Returns
    -------
    lower, upper : ndarrays of shape (1 + n_groups,)
        NaN for sets the distance is undefined for in some subject.
    """
    from brainalign.probe.metrics.ceilings import rsa_noise_ceiling_subjects
    from brainalign.probe.metrics.rsa import rdms

    ids = sorted(brains[0].stimulus_ids)
    crossnobis = options.distance == "crossnobis"
    subject_sets = [group_sets(brain.select_stimuli(ids), repeats=crossnobis) for brain in brains]
    usable = np.logical_and.reduce([_usable(sets, options.distance) for sets in subject_sets])
    lower = np.full(len(subject_sets[0]), np.nan)
    upper = np.full(len(subject_sets[0]), np.nan)
    per_chunk = max(1, _RDM_BUDGET_VALUES // (len(brains) * brains[0].n_stimuli ** 2))
    for chunk in _chunks(usable, per_chunk):
        stack = np.stack(
            [rdms([sets[i] for i in chunk], options.distance) for sets in subject_sets]
        )  # (n_subjects, n_chunk, n_pairs)
        bounds = rsa_noise_ceiling_subjects(stack, method=options.comparison)
        lower[chunk], upper[chunk] = bounds.lower, bounds.upper
    return lower, upper


def target_ceilings(brain: BrainData, *, rsa: RSAConfig | None = None) -> TargetCeilings:
    """The encoding ceiling of ``brain`` and, with ``rsa`` options, its RSA ceiling."""
    encoding, source = encoding_ceiling(brain)
    return TargetCeilings(
        encoding=encoding, source=source, rsa=None if rsa is None else _rsa_ceiling(brain, rsa)
    )


# ---------------------------------------------------------------------------- partitioning
def low_level_space(images: Sequence[Any], size: int) -> np.ndarray:
    """Low-level statistics of images resized to ``size`` px: (n_images, n_statistics).

    :func:`brainalign.synthetic.low_level.low_level_statistics` (luminance, contrast, colour
    means, oriented energies per cell), the energies log-transformed as in the simulated
    subject's low-level level.

    Parameters
    ----------
    images : sequence of PIL.Image.Image
    size : int
    """
    from PIL import Image

    from brainalign.synthetic.low_level import low_level_statistics

    pixels = np.stack(
        [np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR)) for image in images]
    )  # (n, size, size, 3) uint8
    statistics = low_level_statistics(pixels)
    energies = np.log(statistics[:, _N_GLOBAL_STATISTICS:] + _ENERGY_FLOOR)
    return np.column_stack([statistics[:, :_N_GLOBAL_STATISTICS], energies])


def _himalaya_backend(backend: str) -> str:
    if backend in ("numpy", "torch", "torch_cuda"):
        return backend
    import torch

    return "torch_cuda" if torch.cuda.is_available() else "numpy"


def partition_layer(
    spaces: Mapping[str, np.ndarray],
    brain: BrainData,
    encoding: EncodingConfig,
    options: VariancePartitioningConfig,
    *,
    label: str,
    layer: int,
    bootstrap: BootstrapPlan | None = None,
) -> PartitionFit:
    """Unique and shared variance of two feature spaces, per group of ``brain``.

    Parameters
    ----------
    spaces : mapping of str to ndarray of shape (n_stimuli, n_features_i)
        Two feature spaces, rows in ``brain.stimulus_ids`` order.
    brain : BrainData
    encoding : EncodingConfig
        Alphas, outer folds, shuffling and seed (the probe's own), and the backend.
    options : VariancePartitioningConfig
    label : str
        The ``feature_kind`` of the rows.
    layer : int
        The layer partitioned (-1 for two layers).
    bootstrap : BootstrapPlan, optional
        Also resample the held-out predictions of each banded ridge within its outer folds (the
        encoding's resamples, :class:`~brainalign.probe.fitting.BootstrapPlan`) and keep R2 and
        the regions in every resample (no refit: R2 from weighted sums, regions by
        inclusion-exclusion of the resampled R2s).

    Returns
    -------
    PartitionFit
        R2 and Venn regions over all targets and per group (means over the group's targets).
    """
    from brainalign.probe.bootstrap import GroupRAccumulator
    from brainalign.probe.metrics.variance_partitioning import variance_partitioning, venn_regions

    targets = brain.targets_matrix()
    index_sets = [np.arange(targets.shape[1]), *target_groups(brain)]  # all, then each group
    accumulators: dict[frozenset[str], GroupRAccumulator] = {}

    def prediction_sink(subset: tuple[str, ...]) -> Callable[..., None]:
        accumulator = GroupRAccumulator(
            bootstrap.weights,
            bootstrap.folds,
            index_sets,
            n_targets=targets.shape[1],
            score="r2",
        )
        accumulators[frozenset(subset)] = accumulator
        return accumulator.add

    partition = variance_partitioning(
        spaces,
        targets,
        prediction_sinks=None if bootstrap is None else prediction_sink,
        alphas=encoding.alphas,
        n_folds=encoding.n_folds,
        inner_folds=options.inner_folds,
        n_iter=options.n_iter,
        solver=options.solver,
        backend=_himalaya_backend(encoding.backend),
        shuffle=encoding.shuffle,
        seed=encoding.seed,
    )

    def by_group(values: np.ndarray) -> np.ndarray:  # (n_subsets, n_targets) -> (.., 1 + groups)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.stack(
                [np.concatenate([[np.nanmean(row)], group_means(row, brain)]) for row in values]
            )

    boot_r2 = boot_regions = None
    if bootstrap is not None:
        resampled = {subset: accumulator.result() for subset, accumulator in accumulators.items()}
        regions = venn_regions(resampled, partition.space_names)
        keys = [frozenset(subset) for subset in partition.subsets]
        boot_r2 = np.stack([resampled[key] for key in keys], axis=1)  # (n_boot, n_subsets, ..)
        boot_regions = np.stack([regions[key] for key in keys], axis=1)
    return PartitionFit(
        label=label,
        layer=layer,
        spaces=partition.space_names,
        subsets=partition.subsets,
        r2=by_group(partition.r2),
        regions=by_group(partition.regions),
        boot_r2=boot_r2,
        boot_regions=boot_regions,
    )


# ---------------------------------------------------------------------------- in the core
def add_metrics(
    fits: Sequence[LayerFit],
    features: Mapping[int, np.ndarray],
    brain: BrainData,
    config: ProbeConfig,
) -> list[LayerFit]:
    """``fits`` with every configured metric other than ``encoding`` added to each layer."""
    others = [metric for metric in config.metrics if metric != "encoding"]
    if not others or not fits:  # a DDP share may hold no layer
        return list(fits)
    measured = measure_layers(
        features,
        brain,
        others,
        rsa=config.rsa,
        cka=config.cka,
        bootstrap=config.bootstrap,
        device=config.device,
    )
    return [replace(fit, metrics={**fit.metrics, **measured[fit.layer]}) for fit in fits]


def _nearest_layers(wanted: Sequence[float], depths: Mapping[int, float]) -> list[int]:
    """The probed layer nearest each relative depth (ties: the shallower), in order."""
    layers = sorted(depths)
    return [min(layers, key=lambda layer: (abs(depths[layer] - depth), layer)) for depth in wanted]


def check_partition_layers(config: ProbeConfig, depths: Mapping[int, float]) -> None:
    """``variance_partitioning.layers`` of ``spaces: layers`` must fall on two probed layers.

    Called with the probed layers' depths before any feature is extracted.
    """
    options = config.variance_partitioning
    if options.spaces != "layers":
        return
    pair = sorted(set(_nearest_layers(options.layers or [], depths)))
    if len(pair) != 2:
        raise ValueError(
            f"variance_partitioning.layers {options.layers} pick the same probed layer "
            f"{pair}: give two depths that fall on different probed layers "
            f"(probed depths: {[round(depths[layer], 3) for layer in sorted(depths)]})"
        )


def add_partitions(
    fits: dict[str, list[LayerFit]],
    features: Mapping[str, Mapping[int, np.ndarray]],
    brain: BrainData,
    config: ProbeConfig,
    *,
    depths: Mapping[int, float],
    pair_features: Callable[[str, list[int]], dict[int, np.ndarray]],
    images: Callable[[], Sequence[Any]],
    first_share: bool,
    bootstrap: BootstrapPlan | None = None,
) -> None:
    """Add ``config.variance_partitioning`` to the fits of one data set (in place).

    Parameters
    ----------
    fits : dict of feature kind to list of LayerFit
        This share's fits of every kind; partitions are added to them.
    features : dict of feature kind to dict of layer to ndarray (n_stimuli, n_features)
        This share's features, as fitted.
    brain : BrainData
    config : ProbeConfig
    depths : mapping of int to float
        Relative depth of every probed layer (all shares).
    pair_features : callable (kind, layers) -> dict of layer to features
        The features of two layers whatever the share (``spaces: layers``).
    images : callable () -> sequence of PIL images
        The stimuli, in ``brain`` order (``spaces: low_level``).
    first_share : bool
        Layer pairs are partitioned once, by the first share.
    bootstrap : BootstrapPlan, optional
        The data set's resamples: every partition gets its replicates (:func:`partition_layer`).
    """
    options = config.variance_partitioning
    if not options.enabled:
        return
    chosen = set(depths) if options.layers is None else set(_nearest_layers(options.layers, depths))

    def run(spaces: dict[str, np.ndarray], kind: str, layer: int) -> PartitionFit:
        return partition_layer(
            spaces, brain, config.encoding, options, label=kind, layer=layer, bootstrap=bootstrap
        )

    if options.spaces == "layers":
        check_partition_layers(config, depths)
        if not first_share:
            return
        pair = sorted(set(_nearest_layers(options.layers or [], depths)))
        for kind, kind_fits in fits.items():
            arrays = pair_features(kind, pair)
            spaces = {f"layer_{layer}": arrays[layer] for layer in pair}
            kind_fits[0] = _with(kind_fits[0], run(spaces, kind, -1))
        return
    low_level = (
        low_level_space(images(), options.low_level_size) if options.spaces != "kinds" else None
    )
    for kind, kind_fits in fits.items():
        if options.spaces == "kinds" and kind != "activation":
            continue
        for index, fit in enumerate(kind_fits):
            if fit.layer not in chosen:
                continue
            if options.spaces == "kinds":
                spaces = {name: features[name][fit.layer] for name in ("activation", "gradient")}
                kind_fits[index] = _with(fit, run(spaces, "activation+gradient", fit.layer))
            else:
                spaces = {kind: features[kind][fit.layer], "low_level": low_level}
                kind_fits[index] = _with(fit, run(spaces, kind, fit.layer))


def _with(fit: LayerFit, partition: PartitionFit) -> LayerFit:
    return replace(fit, partitions=(*fit.partitions, partition))
