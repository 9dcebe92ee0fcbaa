"""Step 3 of a probe: per-layer fits of one subject -> the long score table and a summary.

:func:`score_layers` fits every layer (:func:`brainalign.probe.fitting.fit_layer`) and
summarises; :func:`summarise_fits` does the second half for fits made elsewhere (the training
callback fits a share of the layers on each DDP rank). Every score comes from
:mod:`brainalign.probe.scores`: encoding scores, best depths, spatial and temporal scores,
``T_max``, normalised R. The rows are built by :mod:`brainalign.probe.score_rows`.

Groups: ``all`` (every target), one per fMRI ROI, one per MEG time sample (``time`` column set)
and one per MEG window (``80-130ms``...). Metrics: ``r`` (mean held-out Pearson R over the
group's targets; for decoding, the held-out R of that group's decoder averaged over feature
dimensions), ``r_normalised`` (``r`` divided by its maximum over layers, per group; NaN where
that maximum is not positive) and, when the data have a noise ceiling, ``r_ceiling_normalised``
(``r / sqrt(ceiling)`` averaged over the group's targets; extra rows, never folded into ``r``;
encoding only). Summary rows have ``layer = -1`` and hold ``encoding_score``,
``spatial_score``, ``temporal_score``, ``best_depth`` (per ROI) and ``t_max`` (per layer, as
``group``).

Other metrics (``ProbeConfig.metrics``: ``rsa``, ``cka``, ``cka_cv``, see
:mod:`brainalign.probe.metrics.per_group`) get the same rows under their own names, so the
encoding rows never change: per layer and group ``metric = <m>`` (``all``, ROIs, MEG time
samples and windows, as ``r``), and summary rows ``score_<m>`` (the best layer's value over all
targets), ``best_depth_<m>`` (per ROI), ``spatial_score_<m>``, ``t_max_<m>`` (per layer) and
``temporal_score_<m>``: the spatial and temporal scores computed from that metric. With a
bootstrap, RSA rows (Pearson and Spearman comparisons) get intervals and chronology curves as
encoding rows do (:mod:`brainalign.probe.metrics.rsa_bootstrap`); CKA and Kendall's tau-a rows
have none (``ci_low``/``ci_high`` NaN). The summary holds them under ``metrics.<m>``.

Noise ceilings (:class:`~brainalign.probe.metrics.per_group.TargetCeilings`), rows at
``layer = -1`` per group: ``noise_ceiling`` (mean over the group's targets of the explainable
share of variance, 0..1), ``noise_ceiling_r`` (mean of its square root: the R a perfect model
would reach, to set beside ``r``), from the data's declared ceiling in its declared unit, else
the split-half (Spearman-Brown) reliability of the repeats (``summary.noise_ceiling_source``);
``rsa_noise_ceiling`` (split-half RSA ceiling) with ``rsa`` and repeats;
``rsa_noise_ceiling_lower`` / ``_upper`` (leave-one-subject-out bounds, rsatoolbox) with ``rsa``
and two or more data sets of one modality on the same stimuli and groups (the same values in
each subject's rows).

Variance partitioning (``ProbeConfig.variance_partitioning``), rows with a ``space`` column
(present only then): ``r2_single`` (R2 of one space alone, ``space`` names it), ``r2_joint``
(both spaces, ``space = a+b``), ``unique_variance`` (``space = a``) and ``shared_variance``
(``space = a+b``), per group, at the layer partitioned (``layer = -1`` for two layers, named
``layer_<i>`` in ``space``); ``feature_kind = activation+gradient`` for the two kinds.

Gradient features (Study B) also get ``spatial_score_backward_order`` and
``temporal_score_backward_order``: the same scores with layers ordered as the backward pass
computes them (last layer first), i.e. with relative depth ``1 - depth``. A positive value there
means that gradients follow the brain's hierarchy in backward order (they invert it in forward
order); it is the negation of the forward-order score, reported so tables can be read either way.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import DEFAULT_MEG_WINDOWS, EncodingConfig
from brainalign.probe.fitting import LayerFit, fit_layer, group_means, group_names
from brainalign.probe.metric_names import partition_curve
from brainalign.probe.score_rows import (
    COLUMNS,
    INTERVAL_COLUMNS,
    NO_REPLICATES,
    REPLICATE_COLUMNS,
    MetricNames,
    Replicates,
    ScoreRows,
    fmri_rows,
    group_value_rows,
    meg_rows,
    window_label,
)
from brainalign.probe.scores import normalised_r
from brainalign.probe.target_maps import TargetMaps

__all__ = [
    "COLUMNS",
    "DEFAULT_MEG_WINDOWS",
    "INTERVAL_COLUMNS",
    "EncodingConfig",
    "MetricNames",
    "ProbeScores",
    "score_layers",
    "summarise_fits",
    "window_label",
]


@dataclass
class ProbeScores:
    """Scores of one feature kind against one subject and modality.

    Attributes
    ----------
    table : DataFrame
        Long format with :data:`COLUMNS`.
    summary : dict
        ``encoding_score``, ``spatial_score`` / ``temporal_score`` (NaN when not computable),
        ``best_layer`` and per-ROI or per-layer details; the other metrics under
        ``metrics.<name>``.
    replicates : DataFrame
        With a bootstrap: the value of every chronology curve (``encoding``,
        ``spatial_score``, ``temporal_score``, ``roi/<ROI>``, ``window/<label>``) in every
        resample (:data:`REPLICATE_COLUMNS`); empty otherwise.
    maps : TargetMaps, optional
        Per-target R of every layer, where the targets can be drawn on a brain (fsaverage
        vertices, voxels with an affine, MEG sensors with positions).
    """

    table: pd.DataFrame
    summary: dict[str, Any]
    replicates: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=REPLICATE_COLUMNS)
    )
    maps: TargetMaps | None = None


def score_layers(
    features: Mapping[int, np.ndarray],
    depths: Mapping[int, float],
    brain: BrainData,
    *,
    config: EncodingConfig | None = None,
    feature_kind: str = "activation",
    meg_windows: Sequence[tuple[float, float]] = DEFAULT_MEG_WINDOWS,
    progress: bool = False,
    stimulus_ids: Sequence[str] | None = None,
) -> ProbeScores:
    """Fit a ridge per layer and compute every score of DESIGN.md for one subject.

    Parameters
    ----------
    features : mapping of int to ndarray of shape (n_stimuli, n_features)
        Layer index -> pooled features, rows in ``brain.stimulus_ids`` order.
    depths : mapping of int to float
        Layer index -> relative depth in [0, 1].
    brain : BrainData
        Already aligned to the stimuli (see :meth:`BrainData.align`).
    config : EncodingConfig
    feature_kind : str
        ``activation`` or ``gradient``; copied into the table.
    meg_windows : sequence of (start, end) in seconds
    progress : bool
        Show a progress bar over layers.
    stimulus_ids : sequence of str, optional
        Ids of the feature rows; when given they must equal ``brain.stimulus_ids`` (a guard
        against features extracted in another order).

    Returns
    -------
    ProbeScores
    """
    config = config or EncodingConfig()
    layers = sorted(features)
    if not layers:
        raise ValueError("no layers to score: features is empty")
    if stimulus_ids is not None and list(stimulus_ids) != list(brain.stimulus_ids):
        raise ValueError(
            f"feature rows follow another stimulus order than {brain.subject}/{brain.modality}; "
            "extract features from the StimulusSet returned by BrainData.align"
        )
    _check_depths(layers, depths)
    iterator = tqdm(layers, desc=f"ridge {brain.subject}/{brain.modality}", disable=not progress)
    fits = [fit_layer(layer, features[layer], brain, config) for layer in iterator]
    return summarise_fits(
        fits, depths, brain, config=config, feature_kind=feature_kind, meg_windows=meg_windows
    )


def _check_depths(layers: Sequence[int], depths: Mapping[int, float]) -> None:
    missing = [layer for layer in layers if layer not in depths]
    if missing:
        raise ValueError(f"no relative depth given for layers {missing}")


def _check_depths(layers: Sequence[int], depths: Mapping[int, float]) -> None:
    missing = [layer for layer in layers if layer not in depths]
    if missing:
        raise ValueError(f"no relative depth given for layers {missing}")


def summarise_fits(
    fits: Sequence[LayerFit],
    depths: Mapping[int, float],
    brain: BrainData,
    *,
    config: EncodingConfig,
    feature_kind: str = "activation",
    meg_windows: Sequence[tuple[float, float]] = DEFAULT_MEG_WINDOWS,
    level: float = 0.95,
    ceilings: Any = None,
) -> ProbeScores:
    """The score table and summary of one subject from its per-layer fits.

    Parameters
    ----------
    fits : sequence of LayerFit
        One per layer, any order (sorted by layer here). When they carry bootstrap
        resamples, every encoding row gets ``ci_low``/``ci_high`` and the chronology curves'
        resamples are kept in ``replicates``. Their other metrics and partitions get rows too.
    depths : mapping of int to float
    brain : BrainData
    config : EncodingConfig
        Its ``direction`` says how the fits were made.
    feature_kind : str
    meg_windows : sequence of (start, end) in seconds
    level : float
        Coverage of the bootstrap intervals.
    ceilings : TargetCeilings, optional
        The data's noise ceilings (computed once per data set by the probe core); default
        :func:`~brainalign.probe.metrics.per_group.encoding_ceiling` of ``brain``.
    """
    fits = sorted(fits, key=lambda fit: fit.layer)
    layers = [fit.layer for fit in fits]
    if not layers:
        raise ValueError("no layers to score: fits is empty")
    _check_depths(layers, depths)
    if ceilings is None:
        from brainalign.probe.metrics.per_group import TargetCeilings, encoding_ceiling

        ceilings = TargetCeilings(*encoding_ceiling(brain))
    boot = Replicates.of(fits)
    rows = ScoreRows(
        brain.subject,
        brain.modality,
        feature_kind,
        level=level,
        with_intervals=boot.overall_r is not None
        or any(item.boot_overall is not None for item in fits[0].metrics.values())
        or any(item.boot_r2 is not None for fit in fits for item in fit.partitions),
    )
    summary: dict[str, Any] = {
        "subject": brain.subject,
        "modality": brain.modality,
        "feature_kind": feature_kind,
        "direction": config.direction,
        "n_stimuli": brain.n_stimuli,
        "n_targets": int(brain.n_targets),
        "layers": layers,
        "depths": [float(depths[layer]) for layer in layers],
    }
    encoded = all(fit.group_r is not None for fit in fits)
    if encoded:
        ceiling = ceilings.encoding if config.direction == "encoding" else None
        _encoding_rows(rows, summary, fits, boot, depths, brain, meg_windows, ceiling)
    for metric in fits[0].metrics:
        summary.setdefault("metrics", {})[metric] = _metric_rows(
            rows, fits, MetricNames(metric), depths, brain, meg_windows
        )
    _ceiling_rows(rows, summary, ceilings, brain, meg_windows)
    _partition_rows(rows, summary, fits, depths, brain, meg_windows)
    table = _add_normalised(rows.table()) if encoded else rows.table()
    maps = None
    if encoded and config.direction == "encoding":
        maps = TargetMaps.of(
            brain,
            np.stack([fit.target_r for fit in fits]),
            np.array([depths[layer] for layer in layers], dtype=np.float64),
            meg_windows,
        )
    return ProbeScores(table=table, summary=summary, replicates=rows.replicate_table(), maps=maps)


def _encoding_rows(
    rows: ScoreRows,
    summary: dict[str, Any],
    fits: Sequence[LayerFit],
    boot: Replicates,
    depths: Mapping[int, float],
    brain: BrainData,
    meg_windows: Sequence[tuple[float, float]],
    ceiling: np.ndarray | None,
) -> None:
    """The ridge's rows: ``r`` per layer and group, its scores, ``r_ceiling_normalised``."""
    layers = [fit.layer for fit in fits]
    overall = {fit.layer: fit.overall_r for fit in fits}
    best_layer = max(layers, key=lambda layer: overall[layer])
    summary.update(
        encoding_score=overall[best_layer],
        best_layer=best_layer,
        best_depth=float(depths[best_layer]),
        encoding_by_layer=[overall[layer] for layer in layers],
    )
    if ceiling is not None:
        ceiling = np.where(ceiling > 0, ceiling, np.nan)  # a ratio to a ceiling <= 0: NaN
    for index, fit in enumerate(fits):
        rows.add(
            "r",
            overall[fit.layer],
            layer=fit.layer,
            depth=depths[fit.layer],
            replicates=boot.overall(index),
        )
        if ceiling is not None:
            value = float(np.nanmean(fit.target_r / np.sqrt(ceiling)))
            rows.add("r_ceiling_normalised", value, layer=fit.layer, depth=depths[fit.layer])
    by_group = np.stack([fit.group_r for fit in fits])  # (n_layers, n_groups)
    if brain.modality == "fmri":
        fmri_rows(rows, summary, by_group, boot, depths, layers, brain)
        if ceiling is not None:
            _ceiling_normalised_rows(rows, fits, depths, brain, ceiling)
    else:
        meg_rows(rows, summary, by_group, boot, depths, layers, brain.times, meg_windows)
    encoding_replicates = boot.encoding_score()
    rows.add("encoding_score", summary["encoding_score"], replicates=encoding_replicates)
    rows.add_curve("encoding", encoding_replicates)


def _metric_rows(
    rows: ScoreRows,
    fits: Sequence[LayerFit],
    names: MetricNames,
    depths: Mapping[int, float],
    brain: BrainData,
    meg_windows: Sequence[tuple[float, float]],
) -> dict[str, Any]:
    """One other metric's rows and scores (intervals where it has replicates); its summary."""
    layers = [fit.layer for fit in fits]
    measured = [fit.metrics[names.metric] for fit in fits]
    boot = NO_REPLICATES
    if all(item.boot_overall is not None for item in measured):
        boot = Replicates(
            np.stack([item.boot_overall for item in measured], axis=1),
            np.stack([item.boot_group for item in measured], axis=1),
        )
    overall = np.array([item.overall for item in measured], dtype=np.float64)
    finite = np.where(np.isfinite(overall), overall, -np.inf)
    best = int(np.argmax(finite))
    summary: dict[str, Any] = {
        "score": float(overall[best]),
        "best_layer": layers[best],
        "best_depth": float(depths[layers[best]]),
        "by_layer": overall.tolist(),
    }
    for index, (fit, value) in enumerate(zip(fits, overall)):
        depth = depths[fit.layer]
        rows.add(names.layer, value, layer=fit.layer, depth=depth, replicates=boot.overall(index))
    by_group = np.stack([item.group for item in measured])  # (n_layers, n_groups)
    if brain.modality == "fmri":
        fmri_rows(rows, summary, by_group, boot, depths, layers, brain, names)
    else:
        meg_rows(rows, summary, by_group, boot, depths, layers, brain.times, meg_windows, names)
    score_replicates = boot.encoding_score()  # the best layer's value, chosen per replicate
    rows.add(names.score, summary["score"], replicates=score_replicates)
    rows.add_curve(names.curve(), score_replicates)
    return summary


def _ceiling_normalised_rows(
    rows: ScoreRows,
    fits: Sequence[LayerFit],
    depths: Mapping[int, float],
    brain: BrainData,
    ceiling: np.ndarray,
) -> None:
    """``r_ceiling_normalised`` per layer and ROI (extra rows; encoding direction only)."""
    roi_of_target = brain.targets["roi"].astype(str).to_numpy()
    for fit in fits:
        for roi in group_names(brain):
            selected = roi_of_target == roi
            value = float(np.nanmean(fit.target_r[selected] / np.sqrt(ceiling[selected])))
            rows.add(
                "r_ceiling_normalised",
                value,
                layer=fit.layer,
                depth=depths[fit.layer],
                group=roi,
            )


def _ceiling_rows(
    rows: ScoreRows,
    summary: dict[str, Any],
    ceilings: Any,
    brain: BrainData,
    meg_windows: Sequence[tuple[float, float]],
) -> None:
    """``noise_ceiling``, ``noise_ceiling_r`` and the RSA ceilings' rows per group."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN groups stay NaN
        if ceilings.encoding is not None:
            fraction = np.asarray(ceilings.encoding, dtype=np.float64)
            r_ceiling = np.sqrt(np.where(fraction > 0, fraction, np.nan))
            for name, values in (("noise_ceiling", fraction), ("noise_ceiling_r", r_ceiling)):
                overall = float(np.nanmean(values))
                group_value_rows(
                    rows, name, overall, group_means(values, brain), brain, meg_windows
                )
                summary[name] = overall
            summary["noise_ceiling_source"] = ceilings.source
        bounds = {"rsa_noise_ceiling": ceilings.rsa}
        if ceilings.rsa_subjects is not None:
            lower, upper = ceilings.rsa_subjects
            bounds |= {"rsa_noise_ceiling_lower": lower, "rsa_noise_ceiling_upper": upper}
        for name, values in bounds.items():
            if values is not None:
                values = np.asarray(values, dtype=np.float64)
                group_value_rows(rows, name, values[0], values[1:], brain, meg_windows)
                summary[name] = float(values[0])


def _partition_rows(
    rows: ScoreRows,
    summary: dict[str, Any],
    fits: Sequence[LayerFit],
    depths: Mapping[int, float],
    brain: BrainData,
    meg_windows: Sequence[tuple[float, float]],
) -> None:
    """Rows of every variance partitioning the fits carry (``space`` column set).

    With replicates, every row gets its interval and the unique and shared variance curves
    (:func:`~brainalign.probe.metric_names.partition_curve`) keep their resamples.
    """
    for partition in (partition for fit in fits for partition in fit.partitions):
        depth = depths[partition.layer] if partition.layer >= 0 else math.nan
        where = {"layer": partition.layer, "depth": depth, "feature_kind": partition.label}
        entry: dict[str, Any] = {"layer": partition.layer, "spaces": list(partition.spaces)}
        for index, subset in enumerate(partition.subsets):
            space = "+".join(subset)
            joint = len(subset) == len(partition.spaces)
            region = "unique_variance" if len(subset) == 1 else "shared_variance"
            for name, values, resamples in (
                ("r2_joint" if joint else "r2_single", partition.r2[index], partition.boot_r2),
                (region, partition.regions[index], partition.boot_regions),
            ):
                curve = None
                if name == region:
                    curve = functools.partial(partition_curve, name, space, partition.layer)
                group_value_rows(
                    rows,
                    name,
                    values[0],
                    values[1:],
                    brain,
                    meg_windows,
                    replicates=None if resamples is None else resamples[:, index],
                    curve=curve,
                    space=space,
                    **where,
                )
                entry.setdefault(name, {})[space] = float(values[0])
        summary.setdefault("variance_partitioning", []).append(entry)


def _add_normalised(table: pd.DataFrame) -> pd.DataFrame:
    """Append ``r_normalised`` rows: ``r`` divided by its maximum over layers, per group/time.

    Computed with :func:`brainalign.probe.scores.normalised_r` (NaN where the maximum is not
    positive: a ratio to a negative best score means nothing).
    """
    r_rows = table[(table["metric"] == "r") & (table["layer"] >= 0)]
    if r_rows.empty:
        return table
    keys = ["subject", "modality", "feature_kind", "group", "time"]
    normalised = r_rows.copy()
    normalised["metric"] = "r_normalised"
    if "ci_low" in normalised:  # intervals are those of r, not of the ratio
        normalised[INTERVAL_COLUMNS] = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # reported as NaN rows
        normalised["value"] = r_rows.groupby(keys, dropna=False)["value"].transform(
            lambda values: normalised_r(values.to_numpy())
        )
    return pd.concat([table, normalised], ignore_index=True)
