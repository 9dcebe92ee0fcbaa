"""Step 4 of a probe: the per-layer fits of every data set and feature kind.

:func:`fit_targets` (exported by :mod:`brainalign.probe.run`, where the other steps are) fits
the ridge of every layer (:func:`brainalign.probe.fitting.fit_layer`), adds the other metrics
(:func:`brainalign.probe.metrics.per_group.add_metrics`) and, when configured, variance
partitioning (:func:`brainalign.probe.metrics.per_group.add_partitions`). The training
callback calls it on each DDP rank's share of the layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from brainalign.probe.config import ProbeConfig

if TYPE_CHECKING:
    from brainalign.probe.fitting import BootstrapPlan
    from brainalign.probe.run import FeatureSet, ProbeTarget, StimulusGroup

__all__ = ["fit_targets"]


def fit_targets(
    targets: Sequence[ProbeTarget],
    groups: Sequence[StimulusGroup],
    features: Sequence[FeatureSet],
    config: ProbeConfig,
    *,
    share: tuple[int, int] = (0, 1),
    progress: bool = False,
    depths: Mapping[int, float] | None = None,
) -> dict[tuple[int, str], list[Any]]:
    """Per-layer fits of every (target, feature kind), or of a share of the layers.

    Each layer gets the ridge (``encoding`` among ``config.metrics``) and every other metric
    (:func:`brainalign.probe.metrics.per_group.add_metrics`); ``config.variance_partitioning``
    adds partitions to the fits (:func:`~brainalign.probe.metrics.per_group.add_partitions`).

    Parameters
    ----------
    targets, groups : as returned by :func:`load_targets` and :func:`stimulus_groups`
    features : sequence of FeatureSet
        One per group, rows in the group's stimulus order.
    config : ProbeConfig
    share : (index, count)
        Fit only the layers at positions ``index::count`` of the sorted layers (a DDP rank's
        share); the union of all shares is every layer.
    progress : bool
    depths : mapping of int to float, optional
        Relative depth of each layer, for ``variance_partitioning.layers``; default the
        layers' positions among the probed layers, ``i / (n - 1)`` (the model's relative
        depth when every layer is probed).

    Returns
    -------
    dict of (target index, kind) to list of LayerFit
    """
    from tqdm.auto import tqdm

    from brainalign.probe.features import reduce_features
    from brainalign.probe.fitting import BootstrapPlan, LayerFit, fit_layer
    from brainalign.probe.metrics.per_group import add_metrics

    index, count = share
    fits: dict[tuple[int, str], list[Any]] = {}
    resamples = config.bootstrap.n_resamples
    with_encoding = "encoding" in config.metrics

    def prepared(by_layer: Mapping[int, np.ndarray], layers: Sequence[int], rows: np.ndarray):
        selected = {layer: by_layer[layer][rows] for layer in layers}
        return reduce_features(selected, config.features.pca) if config.features.pca else selected

    for group, group_features in zip(groups, features):
        for target_index, rows in group.rows.items():
            target = targets[target_index]
            plan = None
            if resamples and (with_encoding or config.variance_partitioning.enabled):
                # one draw per data set: layers, kinds and partitions share it
                plan = BootstrapPlan.draw(
                    target.brain.n_stimuli, config.encoding, resamples, config.bootstrap.seed
                )
            selected_by_kind = {}
            for kind, by_layer in group_features.items():
                layers = sorted(by_layer)[index::count]
                selected = prepared(by_layer, layers, rows) if layers else {}
                _check_finite_features(selected, kind, target.spec)
                name = f"fit {target.brain.subject}/{target.brain.modality}/{kind}"
                kind_fits = [
                    fit_layer(layer, selected[layer], target.brain, config.encoding, bootstrap=plan)
                    if with_encoding
                    else LayerFit.without_encoding(layer)
                    for layer in tqdm(layers, desc=name, disable=not progress)
                ]
                fits[(target_index, kind)] = add_metrics(kind_fits, selected, target.brain, config)
                selected_by_kind[kind] = selected
            if config.variance_partitioning.enabled and any(selected_by_kind.values()):
                _partition(
                    target, fits, target_index, selected_by_kind, group_features, rows, config,
                    depths=depths, first_share=index == 0, prepared=prepared, plan=plan,
                )  # fmt: skip
    return fits


def _partition(
    target: ProbeTarget,
    fits: dict[tuple[int, str], list[Any]],
    target_index: int,
    selected: Mapping[str, Mapping[int, np.ndarray]],
    group_features: FeatureSet,
    rows: np.ndarray,
    config: ProbeConfig,
    *,
    depths: Mapping[int, float] | None,
    first_share: bool,
    prepared: Callable[..., dict[int, np.ndarray]],
    plan: BootstrapPlan | None = None,
) -> None:
    """Variance partitioning of one data set's share of layers, added to its fits."""
    from brainalign.probe.metrics.per_group import add_partitions

    all_layers = sorted(next(iter(group_features.values())))
    if depths is None:
        last = max(len(all_layers) - 1, 1)
        depths = {layer: position / last for position, layer in enumerate(all_layers)}
    by_kind = {kind: fits[(target_index, kind)] for kind in selected}
    add_partitions(
        by_kind,
        selected,
        target.brain,
        config,
        depths={layer: depths[layer] for layer in all_layers},
        pair_features=lambda kind, pair: prepared(group_features[kind], pair, rows),
        images=target.stimuli.load,
        first_share=first_share,
        bootstrap=plan,
    )
    for kind, kind_fits in by_kind.items():
        fits[(target_index, kind)] = kind_fits


def _check_finite_features(features: Mapping[int, np.ndarray], kind: str, spec: str) -> None:
    bad = [layer for layer, array in features.items() if not np.isfinite(array).all()]
    if bad:
        raise FloatingPointError(f"non-finite features in layers {bad} ({kind}, for {spec})")
