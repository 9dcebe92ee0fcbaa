"""What :class:`~brainalign.callbacks.BrainProbeCallback` writes to TensorBoard.

Tags are rooted at the probe's name (``brain`` by default):

- ``<name>/<subject>/<modality>[/<kind>]/{encoding,spatial_score,temporal_score}``,
  ``.../roi/<ROI>``, ``.../window/<label>`` against the global step, and the same under
  ``<name>_vs_fraction/`` against the fraction of training (per mille);
- for every other metric probed (``rsa``, ``cka``, ``cka_cv``): ``.../<metric>`` (its best
  layer's score), ``.../<metric>/spatial_score``, ``.../<metric>/temporal_score``,
  ``.../<metric>/roi/<ROI>``, ``.../<metric>/window/<label>``: the chronology's curves;
- with variance partitioning, each unique and shared variance, over all targets, per ROI and
  per MEG window (``.../unique_variance/gradient/layer_3[/roi/V1]``, the chronology's names
  from :func:`~brainalign.probe.metric_names.partition_curve`);
- figures under ``<name>_figures/`` (those of :func:`brainalign.probe.report.probe_figures`,
  brain maps included); ``<name>/probe_failed`` for failed probes;
- a custom-scalars layout (one chart per score, ROI and window family) and the HParams summary
  pairing the run's factors with the latest value of every metric tag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import pandas as pd
from lightning.pytorch.loggers import TensorBoardLogger

from brainalign.probe.chronology import partition_curve_rows
from brainalign.probe.pipeline import MetricNames, ProbeScores, window_label

__all__ = [
    "failure_rows",
    "hparams_of_run",
    "log_failure",
    "log_layout_and_hparams",
    "log_scores",
    "scalar_values",
    "tag_prefix",
]


def tensorboard(trainer: L.Trainer) -> Any:
    """The ``SummaryWriter`` of the trainer's TensorBoard logger, or None."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def tag_prefix(name: str, summary: Mapping[str, Any]) -> str:
    """``<name>/<subject>/<modality>`` (plus ``/<kind>`` for features other than activations)."""
    prefix = f"{name}/{summary['subject']}/{summary['modality']}"
    kind = summary["feature_kind"]
    return prefix if kind == "activation" else f"{prefix}/{kind}"


def scalar_values(
    name: str, scores: ProbeScores, meg_windows: Sequence[tuple[float, float]]
) -> dict[str, float]:
    """The scalar tags of one probe result and their values."""
    summary, table = scores.summary, scores.table
    prefix = tag_prefix(name, summary)
    values: dict[str, float] = {}
    if "encoding_score" in summary:  # the ridge was fitted
        values[f"{prefix}/encoding"] = summary["encoding_score"]
        for key in ("spatial_score_backward_order", "temporal_score_backward_order"):
            if key in summary:  # gradient features (Study B)
                values[f"{prefix}/{key}"] = summary[key]
        values.update(_metric_scalars(prefix, MetricNames("encoding"), summary, table, meg_windows))
    for metric, entry in summary.get("metrics", {}).items():
        names = MetricNames(metric)
        values[f"{prefix}/{names.curve()}"] = entry["score"]
        values.update(_metric_scalars(prefix, names, entry, table, meg_windows))
    partitions = partition_curve_rows(table)
    values.update(zip(prefix + "/" + partitions["curve"], partitions["value"]))
    return {tag: float(value) for tag, value in values.items()}


def _metric_scalars(
    prefix: str,
    names: MetricNames,
    summary: Mapping[str, Any],
    table: pd.DataFrame,
    meg_windows: Sequence[tuple[float, float]],
) -> dict[str, float]:
    """The spatial score and ROI values (fMRI), or temporal score and windows (MEG)."""
    values = {}
    if "spatial_score" in summary:
        values[f"{prefix}/{names.curve('spatial_score')}"] = summary["spatial_score"]
        for roi, value in summary[names.roi_key].items():
            values[f"{prefix}/{names.curve(f'roi/{roi}')}"] = value
    else:
        values[f"{prefix}/{names.curve('temporal_score')}"] = summary["temporal_score"]
        for window in meg_windows:
            label = window_label(window)
            rows = table[(table["group"] == label) & (table["metric"] == names.layer)]
            values[f"{prefix}/{names.curve(f'window/{label}')}"] = float(rows["value"].max())
    return values


def log_scores(
    trainer: L.Trainer,
    name: str,
    scores: ProbeScores,
    values: Mapping[str, float],
    step: int,
    fraction: float,
    rois: Mapping[str, pd.DataFrame],
    figures: bool,
) -> None:
    """Scalars against step and fraction; figures when ``figures``."""
    for logger in trainer.loggers:
        if not isinstance(logger, TensorBoardLogger):
            logger.log_metrics(dict(values), step=step)
    writer = tensorboard(trainer)
    if writer is None:
        return
    permille = round(fraction * 1000)
    for tag, value in values.items():
        # NaN is logged too (e.g. a temporal score when every layer peaks at the same time):
        # every scheduled probe leaves one point per tag.
        writer.add_scalar(tag, value, step)
        writer.add_scalar(tag.replace(f"{name}/", f"{name}_vs_fraction/", 1), value, permille)
    if figures:
        _log_figures(writer, name, scores, step, rois)
    writer.flush()


#: TensorBoard tags of the figures the callback has always logged, by report name.
_FIGURE_TAGS = {
    "roi_heatmap": "layer_x_roi",
    "brain_map": "best_layer_map",
    "meg_time_courses": "time_courses",
}


def _log_figures(
    writer: Any, name: str, scores: ProbeScores, step: int, rois: Mapping[str, pd.DataFrame]
) -> None:
    from brainalign.probe import report

    prefix = tag_prefix(name, scores.summary).replace(f"{name}/", f"{name}_figures/", 1)
    figures = report.probe_figures(
        scores.table, rois.get(scores.summary["subject"]), maps=scores.maps
    )
    for figure_name, figure in figures:
        writer.add_figure(f"{prefix}/{_FIGURE_TAGS.get(figure_name, figure_name)}", figure, step)


def log_failure(trainer: L.Trainer, name: str, step: int) -> None:
    writer = tensorboard(trainer)
    if writer is not None:
        writer.add_scalar(f"{name}/probe_failed", 1.0, step)
        writer.flush()


def log_layout_and_hparams(
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    name: str,
    results: Sequence[ProbeScores],
    latest: Mapping[str, Mapping[str, float]],
    *,
    layout_written: bool,
    hparams_written: bool,
    extra_hparams: Mapping[str, Any] | None = None,
) -> tuple[bool, bool]:
    """Write the custom-scalars layout and the HParams summary once; returns what is written.

    ``extra_hparams`` (e.g. a study's factor levels) join the run's own in the HParams view.
    """
    writer = tensorboard(trainer)
    if writer is None:
        return layout_written, hparams_written
    if not layout_written:
        layout: dict[str, dict[str, list]] = {}
        for scores in results:
            prefix = tag_prefix(name, scores.summary)
            layout[prefix] = {
                "scores": ["Multiline", [f"^{prefix}/(encoding|spatial_score|temporal_score)$"]],
                "ROIs": ["Multiline", [f"^{prefix}/roi/"]],
                "MEG windows": ["Multiline", [f"^{prefix}/window/"]],
            }
            for metric in scores.summary.get("metrics", {}):
                layout[prefix].update(
                    {
                        f"{metric} scores": [
                            "Multiline",
                            [f"^{prefix}/{metric}(/spatial_score|/temporal_score)?$"],
                        ],
                        f"{metric} ROIs": ["Multiline", [f"^{prefix}/{metric}/roi/"]],
                        f"{metric} MEG windows": ["Multiline", [f"^{prefix}/{metric}/window/"]],
                    }
                )
        writer.add_custom_scalars(layout)
    if not hparams_written:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # The HParams view pairs these factors with the latest value of each metric tag;
        # writing the summaries directly (not through log_hyperparams) logs no extra scalar.
        metrics = {tag: value for values in latest.values() for tag, value in values.items()}
        params = {**hparams_of_run(trainer, pl_module), **dict(extra_hparams or {})}
        experiment, start, end = hparams_summary(params, metrics)
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary)
        writer.flush()
    return True, True


def hparams_of_run(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """The factors a run varies (model size, data mixture, number of steps) + the module's hparams.

    Values are flattened to scalars (``optim/base_lr``) as the HParams view needs.
    """
    params: dict[str, Any] = {}
    hparams = dict(getattr(pl_module, "hparams", {}))
    _flatten_into(params, "", hparams)
    params["max_steps"] = int(trainer.max_steps)
    params["model_size"] = str(hparams.get("backbone", type(pl_module).__name__))
    describe = getattr(trainer.datamodule, "describe_sources", None)
    if callable(describe):
        params["data"] = ", ".join(
            f"{source['name']}:{source['weight']:g}" for source in describe()
        )
    return params


def _flatten_into(out: dict[str, Any], prefix: str, value: Any) -> None:
    if hasattr(value, "__dataclass_fields__"):
        value = {name: getattr(value, name) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten_into(out, f"{prefix}{key}/" if prefix or key else "", item)
        return
    key = prefix.rstrip("/")
    if isinstance(value, bool | int | float | str):
        out[key] = value
    elif value is None:
        out[key] = "None"
    else:
        out[key] = str(value)


def failure_rows(model: str, step: int, fraction: float, error: Exception) -> pd.DataFrame:
    """The chronology row that records a failed probe."""
    return pd.DataFrame(
        [
            {
                "subject": "",
                "modality": "",
                "feature_kind": "",
                "layer": -1,
                "depth": math.nan,
                "group": "all",
                "time": math.nan,
                "metric": "probe_failed",
                "value": math.nan,
                "model": model,
                "step": step,
                "train_fraction": fraction,
                "status": "failed",
                "error": f"{type(error).__name__}: {error}",
            }
        ]
    )
