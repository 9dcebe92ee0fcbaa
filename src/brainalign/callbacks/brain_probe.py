"""BrainProbeCallback: probe the network against fMRI and MEG while it trains.

Configured in YAML like any Lightning callback::

    trainer:
      callbacks:
        - class_path: brainalign.callbacks.BrainProbeCallback
          init_args:
            brain: [data/simulated/fmri, data/simulated/meg/sim01-epo.fif]
            schedule: log
            n_probes: 12

At each scheduled step (step 0 included: chronology needs the untrained point) it extracts
features of a fixed stimulus subset from the EMA teacher (or the student), split across ranks
and gathered: activations, and with ``feature_kinds: [activation, gradient]`` also the
per-image gradients of the module's own DINO + iBOT objective with the current teacher held
fixed (:mod:`brainalign.train.gradient_objective`). Rank 0 fits the ridge encoders
(:mod:`brainalign.probe`), logs scalars, figures, hparams and a custom-scalars layout to
TensorBoard, and appends the rows to ``<run>/chronology.parquet``; the other ranks wait at a
barrier. A probe that fails (NaN features, a singular fit...) is logged and recorded as failed,
and training goes on (``strict`` re-raises). The schedule position lives in ``state_dict``, so
a resumed run neither repeats nor skips a probe.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from brainalign.callbacks.checkpoint_schedule import log_spaced_steps
from brainalign.probe.brain_data import BrainData
from brainalign.probe.chronology import append_chronology, truncate_chronology
from brainalign.probe.features import Pooling, extract_features, select_layers
from brainalign.probe.formats import load_brain
from brainalign.probe.gradients import Objective, extract_gradient_features
from brainalign.probe.models import DinoProbeModel
from brainalign.probe.objectives import InvarianceObjective
from brainalign.probe.pipeline import (
    DEFAULT_MEG_WINDOWS,
    EncodingConfig,
    ProbeScores,
    score_layers,
    window_label,
)
from brainalign.probe.rois import distance_from_v1
from brainalign.probe.stimuli import StimulusSet
from brainalign.train.gradient_objective import DinoGradientObjective
from brainalign.utils.atomic import atomic_path

log = logging.getLogger(__name__)

CHRONOLOGY_FILE = "chronology.parquet"
ROI_FOLDER = "brain_rois"


@dataclass
class _Target:
    """One brain data set held in memory: aligned responses and their stimulus images."""

    name: str
    brain: BrainData
    images: np.ndarray  # (n_stimuli, H, W, 3) uint8, rows in brain.stimulus_ids order


def probe_steps(
    max_steps: int,
    *,
    schedule: Literal["log", "every", "fractions"],
    n_probes: int,
    every_n_steps: int,
    fractions: Sequence[float] | None,
) -> list[int]:
    """The global steps at which to probe, step 0 included.

    Parameters
    ----------
    max_steps : int
    schedule : {"log", "every", "fractions"}
        ``log``: ``n_probes`` log-spaced steps (dense early); ``every``: every
        ``every_n_steps``; ``fractions``: the given fractions of training.
    """
    if schedule == "log":
        return log_spaced_steps(max_steps, n_probes, include_zero=True)
    if schedule == "every":
        return sorted(set(range(0, max_steps + 1, every_n_steps)) | {max_steps})
    if not fractions:
        raise ValueError("schedule='fractions' needs a non-empty list of fractions")
    return sorted({0} | {round(fraction * max_steps) for fraction in fractions})


class BrainProbeCallback(Callback):
    """Probe checkpoints against brain data during training.

    Parameters
    ----------
    brain : list of str
        Brain data specs read with :func:`brainalign.probe.formats.load_brain` (a generic fMRI
        folder, an MEG ``-epo.fif``, or a named data set).
    stimuli : str, optional
        Stimulus folder or table, for brain data that do not name their images.
    max_stimuli : int
        Fixed random subset of stimuli probed at every step (same subset throughout).
    layers : list of float, int or "all"
        Relative depths, a number of evenly spaced depths, or every layer.
    pooling : {"cls", "mean", "registers", "cls+mean"}
    network : {"teacher", "student"}
    feature_kinds : list of str
        ``activation`` and/or ``gradient``: gradients of the module's DINO + iBOT objective
        (current teacher fixed, per-image targets) w.r.t. each probed layer of ``network``,
        pooled like activations. A module without DINO heads falls back to the invariance
        objective (with a warning).
    schedule : {"log", "every", "fractions"}
    n_probes, every_n_steps, fractions
        Parameters of the schedule (see :func:`probe_steps`).
    encoding : EncodingConfig, optional
        Ridge settings (default: 5 outer folds, leave-one-out alphas 1e0..1e8).
    meg_windows : list of (float, float), optional
        MEG windows in seconds (default 80-130, 130-180, 500-550 ms).
    batch_size : int
        Images per forward pass.
    strict : bool
        Re-raise a failed probe instead of logging it and going on.
    log_figures : bool
        Log heatmap, time-course and brain-map figures to TensorBoard.
    figures_every_n_probes : int
        Figures at the first probe, every n-th probe and the last one (drawing them, the
        nilearn glass brain above all, costs about as much as the probe's ridge fits).
    seed : int
        Seeds the stimulus subset.
    """

    def __init__(
        self,
        *,
        brain: list[str],
        stimuli: str | None = None,
        max_stimuli: int = 300,
        layers: list[float] | int | Literal["all"] = "all",
        pooling: Pooling = "cls",
        network: Literal["teacher", "student"] = "teacher",
        feature_kinds: list[str] | None = None,
        schedule: Literal["log", "every", "fractions"] = "log",
        n_probes: int = 12,
        every_n_steps: int = 1000,
        fractions: list[float] | None = None,
        encoding: EncodingConfig | None = None,
        meg_windows: list[tuple[float, float]] | None = None,
        batch_size: int = 128,
        strict: bool = False,
        log_figures: bool = True,
        figures_every_n_probes: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not brain:
            raise ValueError("brain is empty: give at least one brain data spec")
        if max_stimuli < 10:
            raise ValueError(f"max_stimuli must be >= 10, got {max_stimuli}")
        if schedule not in ("log", "every", "fractions"):
            raise ValueError(f"schedule must be log, every or fractions, got {schedule!r}")
        if n_probes < 1 or every_n_steps < 1:
            raise ValueError("n_probes and every_n_steps must be >= 1")
        kinds = feature_kinds or ["activation"]
        unknown = sorted(set(kinds) - {"activation", "gradient"})
        if unknown:
            raise ValueError(f"unknown feature kinds {unknown}: use activation or gradient")
        self.brain_specs = list(brain)
        self.stimuli_spec = stimuli
        self.max_stimuli = max_stimuli
        self.layers = layers
        self.pooling = pooling
        self.network = network
        self.feature_kinds = list(dict.fromkeys(kinds))
        self.schedule = schedule
        self.n_probes = n_probes
        self.every_n_steps = every_n_steps
        self.fractions = fractions
        self.encoding = encoding or EncodingConfig()
        self.meg_windows = [tuple(w) for w in (meg_windows or DEFAULT_MEG_WINDOWS)]
        self.batch_size = batch_size
        self.strict = strict
        self.log_figures = log_figures
        if figures_every_n_probes < 1:
            raise ValueError(f"figures_every_n_probes must be >= 1, got {figures_every_n_probes}")
        self.figures_every_n_probes = figures_every_n_probes
        self.seed = seed
        self.done_steps: list[int] = []
        self.failed_steps: list[int] = []
        self.last_summary: dict[str, dict[str, Any]] = {}
        self._targets: list[_Target] | None = None
        self._run_dir: Path | None = None
        self._layout_written = False
        self._hparams_written = False
        self.probe_seconds: list[float] = []

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._targets is not None:
            return
        self._targets = [self._load_target(spec) for spec in self.brain_specs]

    def _load_target(self, spec: str) -> _Target:
        brain, stimuli = load_brain(spec)
        if stimuli is None:
            if self.stimuli_spec is None:
                raise ValueError(
                    f"brain data {spec!r} names no images: give the callback a stimuli folder "
                    "or table (init_args.stimuli)"
                )
            stimuli = _read_stimuli(self.stimuli_spec)
        brain, stimuli = brain.align(stimuli)
        brain = brain.drop_bad_targets()
        if brain.n_stimuli > self.max_stimuli:
            generator = np.random.default_rng(self.seed)
            chosen = np.sort(generator.choice(brain.n_stimuli, self.max_stimuli, replace=False))
            ids = [brain.stimulus_ids[i] for i in chosen]
            brain = brain.select_stimuli(ids)
            stimuli = stimuli.subset(ids)
        if brain.n_stimuli < self.encoding.n_folds * 2:
            raise ValueError(
                f"brain data {spec!r} has {brain.n_stimuli} stimuli, too few for "
                f"{self.encoding.n_folds}-fold encoding"
            )
        return _Target(name=spec, brain=brain, images=stimuli.load_array())

    def steps(self, trainer: L.Trainer) -> list[int]:
        if trainer.max_steps is None or trainer.max_steps <= 0:
            raise ValueError("BrainProbeCallback needs trainer.max_steps to place its schedule")
        return probe_steps(
            trainer.max_steps,
            schedule=self.schedule,
            n_probes=self.n_probes,
            every_n_steps=self.every_n_steps,
            fractions=self.fractions,
        )

    def run_dir(self, trainer: L.Trainer) -> Path:
        """The run folder; resolved on every rank at train start (``log_dir`` is a collective)."""
        if self._run_dir is None:
            self._run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        return self._run_dir

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run_dir = None
        self.run_dir(trainer)  # every rank, before any rank-0-only work
        if self._skipped(trainer):
            return
        if trainer.is_global_zero:
            # Rows written after the checkpoint we resumed from belong to steps to be redone.
            truncate_chronology(self.run_dir(trainer) / CHRONOLOGY_FILE, trainer.global_step)
            self._write_roi_tables(self.run_dir(trainer))
        self._probe_if_due(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self._probe_if_due(trainer, pl_module)

    def _write_roi_tables(self, run_dir: Path) -> None:
        """``<run>/brain_rois/<subject>.csv``: ROI centroids, distance from V1, properties.

        ``brainalign chronology`` reads them to correlate ROI half times with distance and
        properties without reloading the brain data.
        """
        for target in self._targets or []:
            rois = target.brain.rois
            if target.brain.modality != "fmri" or rois is None or rois.empty:
                continue
            table = rois.copy()
            if "V1" in set(table["roi"].astype(str)):
                distances = distance_from_v1(table)
                table["distance_from_v1"] = table["roi"].map(distances)
            with atomic_path(run_dir / ROI_FOLDER / f"{target.brain.subject}.csv") as temporary:
                table.to_csv(temporary, index=False)

    @staticmethod
    def _skipped(trainer: L.Trainer) -> bool:
        return bool(trainer.sanity_checking or trainer.fast_dev_run)

    # ------------------------------------------------------------------ the probe
    def _probe_if_due(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if self._skipped(trainer) or step in self.done_steps or step not in self.steps(trainer):
            return
        started = time.perf_counter()
        failure = None
        try:
            features = self._extract_all(trainer, pl_module)
        except Exception as error:  # every rank still joins the gather below
            features, failure = None, error
        gathered = self._gather(trainer, features)
        status = torch.zeros(1)
        if trainer.is_global_zero:
            status[0] = float(self._score_and_log(trainer, pl_module, step, gathered, failure))
        status = trainer.strategy.broadcast(status, src=0)
        trainer.strategy.barrier("brain_probe")
        self.done_steps.append(step)
        self.probe_seconds.append(time.perf_counter() - started)
        if status[0] == 0:
            self.failed_steps.append(step)
            if self.strict:
                raise RuntimeError(f"brain probe failed at step {step} (strict=True)")

    def _probe_model(self, pl_module: L.LightningModule) -> DinoProbeModel:
        backbone = (
            pl_module.teacher_backbone if self.network == "teacher" else pl_module.student_backbone
        )
        return DinoProbeModel(backbone)

    def _extract_all(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> list[dict[str, dict[int, np.ndarray]]]:
        """This rank's share of features, per target and kind: stimuli ``rank::world``."""
        model = self._probe_model(pl_module)
        layers = select_layers(model.depth, self.layers)
        objective = None
        if "gradient" in self.feature_kinds:
            objective = self._objective(pl_module, trainer.global_step)
        was_training = model.module.training
        model.module.eval()
        try:
            shares = []
            for target in self._targets or []:
                rows = np.arange(trainer.global_rank, len(target.images), trainer.world_size)
                images = target.images[rows]
                share = {}
                for kind in self.feature_kinds:
                    if kind == "activation":
                        share[kind] = self._extract(model, images, layers, pl_module.device)
                    else:
                        share[kind] = self._extract_gradients(
                            model, images, layers, pl_module.device, objective
                        )
                shares.append(share)
            return shares
        finally:
            model.module.train(was_training)

    @staticmethod
    def _objective(pl_module: L.LightningModule, step: int) -> Objective:
        """The module's own SSL objective at ``step`` (its current teacher, held fixed)."""
        try:
            return DinoGradientObjective.from_module(pl_module, step=step)
        except ValueError as error:
            log.warning("gradient features use the invariance objective: %s", error)
            return InvarianceObjective()

    def _extract_gradients(
        self,
        model: DinoProbeModel,
        images: np.ndarray,
        layers: list[int],
        device: torch.device,
        objective: Objective,
    ) -> dict[int, np.ndarray]:
        return extract_gradient_features(
            model,
            images,
            objective,
            layers=layers,
            pooling=self.pooling,
            batch_size=self.batch_size,
            device=device,
            progress=False,
        )

    def _extract(
        self, model: DinoProbeModel, images: np.ndarray, layers: list[int], device: torch.device
    ) -> dict[int, np.ndarray]:
        return extract_features(
            model,
            images,
            layers=layers,
            pooling=self.pooling,
            batch_size=self.batch_size,
            device=device,
            progress=False,
        )

    def _gather(
        self, trainer: L.Trainer, features: list[dict[str, dict[int, np.ndarray]]] | None
    ) -> list[dict[str, dict[int, np.ndarray]]] | None:
        """Reassemble every target's features on rank 0 (None if any rank failed)."""
        world = trainer.world_size
        if world == 1 or not (dist.is_available() and dist.is_initialized()):
            return features
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, features)
        if any(part is None for part in parts):
            return None
        gathered = []
        for index, target in enumerate(self._targets or []):
            full: dict[str, dict[int, np.ndarray]] = {}
            for kind, layer_arrays in parts[0][index].items():
                full[kind] = {}
                for layer, first in layer_arrays.items():
                    array = np.empty((len(target.images), first.shape[1]), np.float32)
                    for rank, part in enumerate(parts):
                        array[rank::world] = part[index][kind][layer]
                    full[kind][layer] = array
            gathered.append(full)
        return gathered

    def _score_and_log(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        step: int,
        features: list[dict[str, dict[int, np.ndarray]]] | None,
        failure: Exception | None,
    ) -> bool:
        fraction = step / trainer.max_steps
        meta = {"model": getattr(pl_module.hparams, "get", dict().get)("backbone", "model")}
        try:
            if failure is not None or features is None:
                raise failure or RuntimeError("feature extraction failed on another rank")
            model = self._probe_model(pl_module)
            depths = dict(enumerate(model.relative_depths))
            results = []
            for target, kind_features in zip(self._targets or [], features):
                for kind in self.feature_kinds:
                    layer_features = kind_features[kind]
                    bad = [
                        layer
                        for layer, array in layer_features.items()
                        if not np.isfinite(array).all()
                    ]
                    if bad:
                        raise FloatingPointError(
                            f"non-finite features in layers {bad} ({kind}) at step {step}"
                        )
                    results.append(
                        score_layers(
                            layer_features,
                            depths,
                            target.brain,
                            config=self.encoding,
                            feature_kind=kind,
                            meg_windows=self.meg_windows,
                            stimulus_ids=target.brain.stimulus_ids,
                        )
                    )
        except Exception as error:  # recorded, logged, and training goes on
            log.warning("brain probe failed at step %d: %s", step, error)
            append_chronology(
                self.run_dir(trainer) / CHRONOLOGY_FILE,
                _failure_rows(meta["model"], step, fraction, error),
            )
            self._log_failure(trainer, step)
            return False
        tables = []
        for scores in results:
            table = scores.table.assign(
                model=meta["model"], step=step, train_fraction=fraction, status="ok", error=""
            )
            tables.append(table)
            self._log_scores(trainer, scores, step, fraction)
        append_chronology(self.run_dir(trainer) / CHRONOLOGY_FILE, pd.concat(tables))
        self._log_layout_and_hparams(trainer, pl_module, results)
        return True

    # ------------------------------------------------------------------ TensorBoard
    @staticmethod
    def _tensorboard(trainer: L.Trainer) -> Any:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    @staticmethod
    def _prefix(summary: dict[str, Any]) -> str:
        prefix = f"brain/{summary['subject']}/{summary['modality']}"
        kind = summary["feature_kind"]
        return prefix if kind == "activation" else f"{prefix}/{kind}"

    def scalars(self, scores: ProbeScores) -> dict[str, float]:
        """The scalar tags of one probe result (what TensorBoard receives)."""
        summary, table = scores.summary, scores.table
        prefix = self._prefix(summary)
        values = {f"{prefix}/encoding": summary["encoding_score"]}
        for key in ("spatial_score_backward_order", "temporal_score_backward_order"):
            if key in summary:  # gradient features (Study B)
                values[f"{prefix}/{key}"] = summary[key]
        if summary["modality"] == "fmri":
            values[f"{prefix}/spatial_score"] = summary["spatial_score"]
            for roi, value in summary["roi_encoding"].items():
                values[f"{prefix}/roi/{roi}"] = value
        else:
            values[f"{prefix}/temporal_score"] = summary["temporal_score"]
            for window in self.meg_windows:
                label = window_label(window)
                rows = table[(table["group"] == label) & (table["metric"] == "r")]
                values[f"{prefix}/window/{label}"] = float(rows["value"].max())
        return {tag: float(value) for tag, value in values.items()}

    def _log_scores(
        self, trainer: L.Trainer, scores: ProbeScores, step: int, fraction: float
    ) -> None:
        values = self.scalars(scores)
        self.last_summary[self._prefix(scores.summary)] = values
        writer = self._tensorboard(trainer)
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                logger.log_metrics(values, step=step)
        if writer is None:
            return
        permille = round(fraction * 1000)
        for tag, value in values.items():
            # NaN is logged too (e.g. a temporal score when every layer peaks at the same time):
            # every scheduled probe leaves one point per tag.
            writer.add_scalar(tag, value, step)
            writer.add_scalar(tag.replace("brain/", "brain_vs_fraction/", 1), value, permille)
        if self.log_figures and self._figures_due(trainer, step):
            self._log_figures(writer, scores, step)
        writer.flush()

    def _figures_due(self, trainer: L.Trainer, step: int) -> bool:
        steps = self.steps(trainer)
        index = steps.index(step) if step in steps else 0
        return index % self.figures_every_n_probes == 0 or step == steps[-1]

    def _log_figures(self, writer: Any, scores: ProbeScores, step: int) -> None:
        from brainalign.probe import report

        prefix = self._prefix(scores.summary).replace("brain/", "brain_figures/", 1)
        table = scores.table
        if scores.summary["modality"] == "fmri":
            writer.add_figure(f"{prefix}/layer_x_roi", report.roi_heatmap(table), step)
            rois = next(
                (
                    t.brain.rois
                    for t in self._targets or []
                    if t.brain.subject == scores.summary["subject"]
                ),
                None,
            )
            if rois is not None and not rois.empty:
                writer.add_figure(
                    f"{prefix}/best_layer_map", report.best_layer_brain_map(table, rois), step
                )
        else:
            writer.add_figure(f"{prefix}/time_courses", report.meg_time_courses(table), step)

    def _log_failure(self, trainer: L.Trainer, step: int) -> None:
        writer = self._tensorboard(trainer)
        if writer is not None:
            writer.add_scalar("brain/probe_failed", 1.0, step)
            writer.flush()

    def _log_layout_and_hparams(
        self, trainer: L.Trainer, pl_module: L.LightningModule, results: list[ProbeScores]
    ) -> None:
        writer = self._tensorboard(trainer)
        if writer is None:
            return
        if not self._layout_written:
            layout: dict[str, dict[str, list]] = {}
            for scores in results:
                prefix = self._prefix(scores.summary)
                charts = {
                    "scores": [
                        "Multiline",
                        [f"^{prefix}/(encoding|spatial_score|temporal_score)$"],
                    ],
                    "ROIs": ["Multiline", [f"^{prefix}/roi/"]],
                    "MEG windows": ["Multiline", [f"^{prefix}/window/"]],
                }
                layout[prefix] = charts
            writer.add_custom_scalars(layout)
            self._layout_written = True
        if not self._hparams_written:
            from torch.utils.tensorboard.summary import hparams as hparams_summary

            # The HParams view pairs these factors with the latest value of each metric tag;
            # writing the summaries directly (not through log_hyperparams) logs no extra scalar.
            metrics = {
                tag: value for values in self.last_summary.values() for tag, value in values.items()
            }
            experiment, start, end = hparams_summary(hparams_of_run(trainer, pl_module), metrics)
            for summary in (experiment, start, end):
                writer.file_writer.add_summary(summary)
            writer.flush()
            self._hparams_written = True

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"done_steps": list(self.done_steps), "failed_steps": list(self.failed_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done_steps = list(state_dict.get("done_steps", []))
        self.failed_steps = list(state_dict.get("failed_steps", []))


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


def _failure_rows(model: str, step: int, fraction: float, error: Exception) -> pd.DataFrame:
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


def _read_stimuli(spec: str) -> StimulusSet:
    path = Path(spec)
    if path.is_dir():
        return StimulusSet.from_folder(path)
    return StimulusSet.from_table(path)
