"""The probe core: (model, brain data, config) -> :class:`ProbeRun` (tables, summary, figures).

Every entry point goes through here: ``brainalign probe`` (:func:`probe_model`), the training
callback (which adds its DDP split, schedule and logging around the same steps) and
``brainalign chronology`` on exports. The steps, each a function the callback can call on its
share of the work:

1. :func:`load_targets`: read, align and clean every brain data set of the config, and take the
   configured stimulus subset; all checks before any model runs.
2. :func:`stimulus_groups`: data sets showing the same images (by id and image content) share
   one stimulus set, so fMRI and MEG of the same images are extracted once.
3. :func:`extract_group`: activations and/or gradients of every requested layer, once per group
   (through the content-keyed feature cache).
4. :func:`fit_targets`: one ridge mapping per (data set, feature kind, layer).
5. :func:`summarise`: the long score table, the summary and the ROI tables.

Example::

    config = ProbeConfig(brain=["data/simulated/fmri"], features=FeatureConfig(pooling="cls"))
    run = probe_model(ModelSource(spec="runs/demo/exports/step_0000500"), config)
    run.write("out/probe")
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import FeatureConfig, ModelSource, ProbeConfig
from brainalign.probe.stimuli import StimulusSet
from brainalign.probe.target_fits import fit_targets

__all__ = [
    "FeatureSet",
    "ProbeRun",
    "ProbeTarget",
    "SSLObjective",
    "StimulusGroup",
    "choose_objective",
    "extract_group",
    "fit_targets",
    "load_model",
    "load_targets",
    "noise_ceilings",
    "probe_loaded_model",
    "probe_model",
    "read_stimuli",
    "stimulus_groups",
    "summarise",
]

#: Features of one stimulus group: feature kind -> layer -> (n_stimuli, n_features) float32.
FeatureSet = dict[str, dict[int, np.ndarray]]


# ---------------------------------------------------------------------------- targets
@dataclass
class ProbeTarget:
    """One brain data set, aligned with its images (``stimuli.ids == brain.stimulus_ids``).

    ``ceilings`` holds its noise ceilings once computed (they do not change between the
    probes of a training run), keyed by the options they depend on.
    """

    spec: str
    brain: BrainData
    stimuli: StimulusSet
    ceilings: dict[Any, Any] = field(default_factory=dict, repr=False)

    def noise_ceilings(self, config: ProbeConfig) -> Any:
        """The data set's own :class:`~brainalign.probe.metrics.per_group.TargetCeilings`."""
        from brainalign.probe.metrics.per_group import target_ceilings

        rsa = config.rsa if "rsa" in config.metrics else None
        if rsa not in self.ceilings:
            self.ceilings[rsa] = target_ceilings(self.brain, rsa=rsa)
        return self.ceilings[rsa]


def noise_ceilings(targets: Sequence[ProbeTarget], config: ProbeConfig) -> list[Any]:
    """Every data set's noise ceilings, with the RSA bounds across subjects when ``rsa`` is asked.

    Data sets of one modality with the same stimulus ids and the same groups (ROI names, or
    MEG times) are one group of subjects; two or more get
    :func:`~brainalign.probe.metrics.per_group.rsa_subject_ceilings` (computed once, kept on
    the targets like their own ceilings).
    """
    from dataclasses import replace

    from brainalign.probe.fitting import group_names
    from brainalign.probe.metrics.per_group import rsa_subject_ceilings

    ceilings = [target.noise_ceilings(config) for target in targets]
    if "rsa" not in config.metrics:
        return ceilings
    peers: dict[tuple, list[int]] = {}
    for index, target in enumerate(targets):
        brain = target.brain
        key = (brain.modality, frozenset(brain.stimulus_ids), tuple(group_names(brain)))
        peers.setdefault(key, []).append(index)
    cache_key = ("subjects", config.rsa)
    for members in (members for members in peers.values() if len(members) >= 2):
        if cache_key not in targets[members[0]].ceilings:
            bounds = rsa_subject_ceilings([targets[i].brain for i in members], config.rsa)
            for index in members:
                targets[index].ceilings[cache_key] = bounds
        for index in members:
            ceilings[index] = replace(
                ceilings[index], rsa_subjects=targets[index].ceilings[cache_key]
            )
    return ceilings


def read_stimuli(spec: str | Path) -> StimulusSet:
    """A stimulus folder (ids = file stems) or a CSV table with stimulus_id, image_path."""
    path = Path(spec)
    return StimulusSet.from_folder(path) if path.is_dir() else StimulusSet.from_table(path)


def load_targets(config: ProbeConfig, *, where: str = "--stimuli") -> list[ProbeTarget]:
    """Read, align and clean every brain data set of ``config`` (before any model runs).

    Parameters
    ----------
    config : ProbeConfig
    where : str
        How the caller names the stimuli option in errors (``--stimuli``,
        ``init_args.probe.stimuli``).

    Raises
    ------
    ValueError, FileNotFoundError, KeyError
        A missing or malformed data set, missing images, fewer stimuli than the folds
        need, or a metric that needs single repeats (``cka_cv``, crossnobis RSA) asked of
        data without them; the message names the spec.
    """
    from brainalign.probe.formats import load_brain

    if not config.brain:
        raise ValueError("no brain data: give at least one brain data spec (--brain SPEC)")
    targets = []
    for spec in config.brain:
        brain, stimuli = load_brain(spec)
        if stimuli is None:
            if not config.stimuli:
                raise ValueError(f"brain data {spec!r} names no images: pass {where}")
            stimuli = read_stimuli(config.stimuli)
        brain, stimuli = brain.align(stimuli)
        brain = brain.drop_bad_targets()
        if config.max_stimuli is not None and brain.n_stimuli > config.max_stimuli:
            # Drawn from the sorted ids, so data sets of the same images (fMRI, MEG in another
            # order) get the same subset, and one extraction serves them all.
            ordered = sorted(brain.stimulus_ids)
            generator = np.random.default_rng(config.subset_seed)
            drawn = generator.choice(len(ordered), config.max_stimuli, replace=False)
            kept = {ordered[index] for index in drawn}
            ids = [stimulus_id for stimulus_id in brain.stimulus_ids if stimulus_id in kept]
            brain, stimuli = brain.select_stimuli(ids), stimuli.subset(ids)
        n_folds = config.encoding.n_folds
        if brain.n_stimuli < 2 * n_folds:
            raise ValueError(
                f"{spec}: {brain.n_stimuli} stimuli are too few for {n_folds} folds "
                f"(need at least {2 * n_folds})"
            )
        _check_repeats(spec, brain, config)
        targets.append(ProbeTarget(spec=spec, brain=brain, stimuli=stimuli))
    return targets


def _check_repeats(spec: str, brain: BrainData, config: ProbeConfig) -> None:
    """Metrics that read single repeats need data that keep them (before any model runs)."""
    n_repeats = 0 if brain.repeats is None else brain.repeats.shape[0]
    for option, why in config.repeats_needed.items():
        if n_repeats < 2:
            raise ValueError(
                f"{spec}: {option} needs single repeats ({why}), but this data set has "
                f"{'none' if n_repeats == 0 else 'only 1'}: give data with repeats (repeats.npy, "
                "an epochs file with every stimulus shown the same number of times, a data set "
                "split with repeats) or choose another metric"
            )


# ---------------------------------------------------------------------------- stimulus groups
@dataclass
class StimulusGroup:
    """A stimulus set extracted once, and where each member data set finds its rows in it.

    Attributes
    ----------
    stimuli : StimulusSet
    rows : dict of int to ndarray of shape (n_target_stimuli,)
        Target index -> positions of that target's stimuli (in its order) in ``stimuli``.
    """

    stimuli: StimulusSet
    rows: dict[int, np.ndarray] = field(default_factory=dict)


def stimulus_groups(targets: Sequence[ProbeTarget]) -> list[StimulusGroup]:
    """Group data sets whose images are one set, or a subset of another's.

    Images are compared by id and content (:attr:`StimulusSet.row_digests`), never by name
    alone, so two data sets that use the same ids for other images are extracted apart.
    """
    groups: list[tuple[StimulusGroup, dict[str, str]]] = []
    for index, target in enumerate(targets):
        pairs = dict(zip(target.stimuli.ids, target.stimuli.row_digests))
        for group, known in groups:
            if _is_subset(pairs, known):
                break
            if _is_subset(known, pairs):  # the new set covers the group: it becomes the base
                group.stimuli = target.stimuli
                known.clear()
                known.update(pairs)
                break
        else:
            group = StimulusGroup(stimuli=target.stimuli)
            groups.append((group, dict(pairs)))
        group.rows[index] = np.empty(0, dtype=np.int64)  # filled below, once bases are final
    for group, _ in groups:
        for index in group.rows:
            group.rows[index] = group.stimuli.index_of(targets[index].stimuli.ids)
    return [group for group, _ in groups]


def _is_subset(small: Mapping[str, str], large: Mapping[str, str]) -> bool:
    return all(large.get(stimulus_id) == digest for stimulus_id, digest in small.items())


# ---------------------------------------------------------------------------- models
def load_model(source: ModelSource, config: ProbeConfig) -> Any:
    """Load the model of ``source`` with the config's preprocessing and final norm."""
    from brainalign.probe.models import load_probe_model

    return load_probe_model(
        source.spec,
        weights=source.weights,
        allow_pickle=source.allow_pickle,
        network=source.network,
        final_norm=config.features.final_norm,
        **config.preprocess.overrides,
    )


@dataclass(frozen=True)
class SSLObjective:
    """The self-supervised (DINO + iBOT) gradient objective, when the model has one.

    The objective belongs to training (``brainalign.train.gradient_objective``): callers that
    can build it pass ``make``; ``reason`` completes "the SSL objective ..." when there is none
    (e.g. "needs a brainalign .ckpt (it holds the DINO/iBOT heads)").
    """

    make: Callable[[], Any] | None = None
    reason: str = "needs a model with DINO/iBOT heads (a brainalign .ckpt or training module)"


def choose_objective(features: FeatureConfig, ssl: SSLObjective, stimuli: StimulusSet) -> Any:
    """The per-image loss of gradient features, by ``features.gradient_loss``.

    ``auto``: the SSL objective where ``ssl.make`` exists, else the invariance objective (with a
    warning giving ``ssl.reason``); ``ssl``: the SSL objective or an error; ``invariance``: two
    seeded views; ``supervised``: cross-entropy against ``features.labels``.
    """
    from brainalign.probe.objectives import InvarianceObjective, SupervisedObjective

    loss = features.gradient_loss
    if loss == "supervised":
        return SupervisedObjective.from_mapping(_read_labels(features.labels), stimuli.ids)
    if loss in ("auto", "ssl") and ssl.make is not None:
        return ssl.make()
    if loss == "ssl":
        raise ValueError(f"gradient_loss ssl {ssl.reason}; use gradient_loss invariance")
    if loss == "auto":
        warnings.warn(
            f"the SSL objective {ssl.reason}: gradient features use the invariance objective "
            "instead",
            stacklevel=2,
        )
    return InvarianceObjective()


def _read_labels(path: str | None) -> dict[str, int]:
    """``stimulus_id,label`` CSV -> {stimulus_id: label}."""
    if not path:
        raise ValueError(
            "gradient_loss supervised needs --labels FILE (features.labels): a CSV with "
            "stimulus_id,label columns"
        )
    table = pd.read_csv(path, dtype={"stimulus_id": str})
    missing = {"stimulus_id", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; need stimulus_id,label")
    return dict(zip(table["stimulus_id"], table["label"].astype(int)))


# ---------------------------------------------------------------------------- extraction
def extract_group(
    model: Any,
    stimuli: StimulusSet,
    config: ProbeConfig,
    layers: Sequence[int],
    *,
    objective: Any = None,
    device: Any = None,
    progress: bool = False,
) -> FeatureSet:
    """Features of every configured kind and layer for one stimulus set.

    Parameters
    ----------
    model : ProbeModel
    stimuli : StimulusSet
    config : ProbeConfig
    layers : sequence of int
    objective : Objective, optional
        Needed when gradient features are configured (see :func:`choose_objective`).
    device : torch.device, optional
        Default ``config.device``.
    progress : bool
    """
    from brainalign.probe.cache import FeatureCache
    from brainalign.probe.features import extract_features
    from brainalign.probe.gradients import extract_gradient_features

    options = {
        "layers": list(layers),
        "pooling": config.features.pooling,
        "batch_size": config.features.batch_size,
        "device": config.device if device is None else device,
        "dtype": config.precision,
        "progress": progress,
        "cache": FeatureCache(config.cache_dir) if config.cache_dir else None,
    }
    features: FeatureSet = {}
    for kind in config.features.kinds:
        if kind == "activation":
            features[kind] = extract_features(model, stimuli, **options)
        else:
            if objective is None:
                raise ValueError("gradient features need an objective (see choose_objective)")
            features[kind] = extract_gradient_features(model, stimuli, objective, **options)
    return features


# ---------------------------------------------------------------------------- summary
@dataclass
class ProbeRun:
    """What one probe produced.

    Attributes
    ----------
    table : DataFrame
        The long score table (``model`` and any extra columns added).
    summary : dict
        ``model``, ``architecture``, ``layers``, ``pooling`` and one result per (data set,
        feature kind) under ``results``.
    rois : dict of str to DataFrame
        Each fMRI subject's ROI table (for brain maps and chronology).
    scores : list of ProbeScores
        Per (data set, feature kind), in the order of ``results``.
    replicates : DataFrame
        Bootstrap resamples of the chronology curves (empty without a bootstrap); written
        as ``replicates.parquet``.
    """

    table: pd.DataFrame
    summary: dict[str, Any]
    rois: dict[str, pd.DataFrame]
    scores: list[Any] = field(default_factory=list)
    replicates: pd.DataFrame = field(default_factory=pd.DataFrame)

    def write(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """``scores.parquet``, ``summary.json`` and ``figures/`` into ``out`` (atomically).

        Create-or-fail (:func:`~brainalign.utils.atomic.atomic_directory`): an existing
        ``out`` is kept unless ``overwrite``; callers that reserve ``out`` before their work
        enter ``atomic_directory`` themselves and call :meth:`write_files` on its folder.
        """
        from brainalign.utils.atomic import atomic_directory

        out = Path(out)
        with atomic_directory(out, overwrite=overwrite) as folder:
            self.write_files(folder)
        return out

    def write_files(self, folder: str | Path) -> None:
        """Write the outputs into ``folder``, an existing (reserved, temporary) folder."""
        from brainalign.probe.report import save_figures

        folder = Path(folder)
        self.table.to_parquet(folder / "scores.parquet", index=False)
        if not self.replicates.empty:
            self.replicates.to_parquet(folder / "replicates.parquet", index=False)
        (folder / "summary.json").write_text(json.dumps(json_ready(self.summary), indent=2))
        if self.scores:  # each result's own table, with its brain maps
            parts = [(score.table, score.summary, score.maps) for score in self.scores]
        else:
            groups = self.table.groupby(["subject", "modality", "feature_kind"], sort=False)
            parts = [(rows, dict(zip(("subject", "modality", "feature_kind"), key)), None)
                     for key, rows in groups]  # fmt: skip
        for rows, entry, maps in parts:
            save_figures(
                rows,
                self.rois.get(entry["subject"]),
                folder / "figures",
                prefix=f"{entry['subject']}_{entry['modality']}_{entry['feature_kind']}",
                maps=maps,
            )

    def summary_lines(self) -> list[str]:
        """One line per (data set, feature kind): each metric's best score, best depth,
        spatial/temporal score; the noise ceiling."""
        lines = []
        for entry in self.summary["results"]:
            parts = []
            if "encoding_score" in entry:
                scores = {"score": entry["encoding_score"], **entry}
                parts.append(_metric_line("encoding", scores))
            parts += [_metric_line(name, item) for name, item in entry.get("metrics", {}).items()]
            if "noise_ceiling_r" in entry:
                parts.append(
                    f"noise ceiling R {entry['noise_ceiling_r']:.3f} "
                    f"({entry['noise_ceiling_source'].replace('_', '-')})"
                )
            name = f"{entry['subject']}/{entry['modality']}/{entry['feature_kind']}"
            lines.append(f"{name}: " + "; ".join(parts))
        return lines


def _metric_line(name: str, entry: Mapping[str, Any]) -> str:
    """``encoding 0.412 (best depth 0.75), spatial 0.83``, from one metric's summary."""
    line = f"{name} {entry['score']:.3f} (best depth {entry['best_depth']:.2f})"
    if "spatial_score" in entry:
        line += f", spatial {entry['spatial_score']:.2f}"
    if "temporal_score" in entry:
        line += f", temporal {_temporal_text(entry['temporal_score'], entry.get('t_max'))}"
    for key in ("spatial_score_backward_order", "temporal_score_backward_order"):
        if key in entry:
            line += f", {key.split('_')[0]} (backward order) {entry[key]:.2f}"
    return line


def _temporal_text(score: float, peak_times: Sequence[float] | None) -> str:
    """The temporal score, or why it is undefined (it is a correlation with the peak times)."""
    if score == score:
        return f"{score:.2f}"
    if peak_times is not None and len(peak_times) < 3:
        return "undefined (needs 3+ layers)"
    peaks = [value for value in peak_times or () if value == value]
    if not peaks:
        return "undefined (no layer has a positive peak)"
    if len(set(peaks)) == 1:
        return f"undefined (every layer peaks at {1000 * peaks[0]:.0f} ms)"
    return "undefined"


def summarise(
    targets: Sequence[ProbeTarget],
    fits: Mapping[tuple[int, str], Sequence[Any]],
    depths: Mapping[int, float],
    config: ProbeConfig,
    *,
    model_name: str,
    architecture: str,
    extra_columns: Mapping[str, Any] | None = None,
    objective: Any = None,
) -> ProbeRun:
    """Tables and summary of a probe from its fits (all layers of every target and kind)."""
    from brainalign.probe.pipeline import summarise_fits

    scores, rois = [], {}
    ceilings = noise_ceilings(targets, config)
    for target_index, target in enumerate(targets):
        for kind in config.features.kinds:
            scores.append(
                summarise_fits(
                    fits[(target_index, kind)],
                    depths,
                    target.brain,
                    config=config.encoding,
                    feature_kind=kind,
                    meg_windows=config.meg_windows,
                    level=config.bootstrap.level,
                    ceilings=ceilings[target_index],
                )
            )
        brain = target.brain
        if brain.modality == "fmri" and brain.rois is not None and not brain.rois.empty:
            rois[brain.subject] = brain.rois
    table = pd.concat([score.table for score in scores], ignore_index=True)
    table = table.assign(model=model_name, **dict(extra_columns or {}))
    replicates = pd.concat([score.replicates for score in scores], ignore_index=True)
    replicates = replicates.assign(model=model_name, **dict(extra_columns or {}))
    summary: dict[str, Any] = {
        "model": model_name,
        "architecture": architecture,
        "layers": sorted(depths),
        "pooling": config.features.pooling,
        "results": [score.summary for score in scores],
    }
    if objective is not None:
        summary["gradient_objective"] = objective.identity
    return ProbeRun(table=table, summary=summary, rois=rois, scores=scores, replicates=replicates)


# ---------------------------------------------------------------------------- one call
def probe_loaded_model(
    model: Any,
    targets: Sequence[ProbeTarget],
    config: ProbeConfig,
    *,
    model_name: str,
    ssl: SSLObjective | None = None,
    progress: bool = False,
    extra_columns: Mapping[str, Any] | None = None,
) -> ProbeRun:
    """Steps 2-5 for a loaded :class:`~brainalign.probe.models.ProbeModel`."""
    from brainalign.probe.features import select_layers
    from brainalign.probe.metrics.per_group import check_partition_layers

    layers = select_layers(model.depth, config.features.layers)
    depths = {layer: model.relative_depths[layer] for layer in layers}
    check_partition_layers(config, depths)  # before any feature is extracted
    groups = stimulus_groups(targets)
    features, objective = [], None
    for group in groups:
        if "gradient" in config.features.kinds:
            objective = choose_objective(config.features, ssl or SSLObjective(), group.stimuli)
        features.append(
            extract_group(
                model, group.stimuli, config, layers, objective=objective, progress=progress
            )
        )
    fits = fit_targets(targets, groups, features, config, progress=progress, depths=depths)
    return summarise(
        targets,
        fits,
        depths,
        config,
        model_name=model_name,
        architecture=model.architecture,
        extra_columns=extra_columns,
        objective=objective,
    )


def probe_model(
    source: ModelSource,
    config: ProbeConfig,
    *,
    targets: Sequence[ProbeTarget] | None = None,
    ssl: SSLObjective | None = None,
    progress: bool = False,
    extra_columns: Mapping[str, Any] | None = None,
) -> ProbeRun:
    """Probe the model of ``source`` against every data set of ``config`` (steps 1-5).

    Parameters
    ----------
    source : ModelSource
    config : ProbeConfig
    targets : sequence of ProbeTarget, optional
        Already loaded data sets (chronology probes many models on the same ones).
    ssl : SSLObjective, optional
        How to build the SSL gradient objective for this model (callers that import training
        pass it; default: not available).
    progress : bool
    extra_columns : mapping, optional
        Constant columns added to the table (``step``, ``train_fraction``...).
    """
    targets = list(targets) if targets is not None else load_targets(config)
    model = load_model(source, config)
    return probe_loaded_model(
        model,
        targets,
        config,
        model_name=source.spec,
        ssl=ssl,
        progress=progress,
        extra_columns=extra_columns,
    )


def json_ready(value: Any) -> Any:
    """``value`` with NaN as None and numpy scalars as Python numbers (for JSON)."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return json_ready(value.item())
    return value
