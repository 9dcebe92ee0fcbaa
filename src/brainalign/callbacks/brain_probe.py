"""BrainProbeCallback: probe the network against fMRI and MEG while it trains.

Configured in YAML like any Lightning callback; ``probe`` is the same block as ``brainalign
probe --config`` and a study's ``probe:`` (:class:`~brainalign.probe.config.ProbeConfig`)::

    trainer:
      callbacks:
        - class_path: brainalign.callbacks.BrainProbeCallback
          init_args:
            probe:
              brain: [data/simulated/fmri, data/simulated/meg/sim01-epo.fif]
              max_stimuli: 300
              features: {pooling: mean}
            schedule: log
            n_probes: 12

At each scheduled step (step 0 included: chronology needs the untrained point) the probe core
(:mod:`brainalign.probe.run`) runs on the EMA teacher (or the student): every rank extracts the
features of its share of the stimuli (activations, and with ``features.kinds: [activation,
gradient]`` the per-image gradients of the module's own DINO + iBOT objective with the current
teacher held fixed); the shares are gathered; every rank fits the ridge mappings of its share of
the layers; rank 0 gathers the fits, summarises them, logs scalars, figures, hparams and a
custom-scalars layout to TensorBoard, and appends the rows to ``<run>/chronology.parquet``. A
probe that fails (NaN features, a singular fit...) is logged and recorded as failed, and
training goes on (``strict`` re-raises). The schedule position lives in ``state_dict`` under a
``state_key`` of the callback's name, so a run with several probe callbacks resumes each one
without repeating or skipping a probe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from brainalign.callbacks.brain_logging import (
    failure_rows,
    hparams_of_run,
    log_failure,
    log_layout_and_hparams,
    log_scores,
    scalar_values,
    tag_prefix,
)
from brainalign.callbacks.checkpoint_schedule import log_spaced_steps
from brainalign.probe.chronology import (
    CHRONOLOGY_FILE,
    DEFAULT_PROBE_NAME,
    append_chronology,
    chronology_file,
    replicates_file,
    truncate_chronology,
    write_roi_tables,
)
from brainalign.probe.config import ProbeConfig
from brainalign.probe.features import select_layers
from brainalign.probe.formats import check_brain_spec
from brainalign.probe.models import DinoProbeModel
from brainalign.probe.run import (
    FeatureSet,
    ProbeTarget,
    SSLObjective,
    StimulusGroup,
    choose_objective,
    extract_group,
    fit_targets,
    load_targets,
    stimulus_groups,
    summarise,
)
from brainalign.probe.stimuli import StimulusSet
from brainalign.train.gradient_objective import DinoGradientObjective

__all__ = [
    "CHRONOLOGY_FILE",
    "BrainProbeCallback",
    "chronology_file",
    "hparams_of_run",
    "probe_steps",
    "replicates_file",
]

log = logging.getLogger(__name__)


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
    probe : ProbeConfig, optional
        The probe block: brain data, stimulus subset, preprocessing overrides, features,
        encoding, MEG windows (see :class:`~brainalign.probe.config.ProbeConfig`; the same
        defaults as ``brainalign probe``). The feature cache is not used here: the weights
        change between probes.
    brain : list of str, optional
        Shorthand for ``probe.brain`` (the two are joined).
    name : str
        Names this probe's TensorBoard tags (``<name>/<subject>/<modality>/...``), its
        chronology file and its state in checkpoints; give each probe callback of a run its
        own (default ``brain``).
    network : {"teacher", "student"}
    schedule : {"log", "every", "fractions"}
    n_probes, every_n_steps, fractions
        Parameters of the schedule (see :func:`probe_steps`).
    strict : bool
        Re-raise a failed probe instead of logging it and going on.
    log_figures : bool
        Log heatmap, time-course and brain-map figures to TensorBoard.
    figures_every_n_probes : int
        Figures at the first probe, every n-th probe and the last one (drawing them, the
        nilearn glass brain above all, costs about as much as the probe's ridge fits).
    hparams : dict of str to str, optional
        More values for TensorBoard's HParams view (a study passes its factor levels).
    """

    def __init__(
        self,
        *,
        probe: ProbeConfig | None = None,
        brain: list[str] | None = None,
        name: str = DEFAULT_PROBE_NAME,
        network: Literal["teacher", "student"] = "teacher",
        schedule: Literal["log", "every", "fractions"] = "log",
        n_probes: int = 12,
        every_n_steps: int = 1000,
        fractions: list[float] | None = None,
        strict: bool = False,
        log_figures: bool = True,
        figures_every_n_probes: int = 3,
        hparams: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        config = probe or ProbeConfig()
        specs = list(dict.fromkeys([*config.brain, *(brain or [])]))
        if not specs:
            raise ValueError("brain is empty: give at least one brain data spec (probe.brain)")
        if schedule not in ("log", "every", "fractions"):
            raise ValueError(f"schedule must be log, every or fractions, got {schedule!r}")
        if n_probes < 1 or every_n_steps < 1:
            raise ValueError("n_probes and every_n_steps must be >= 1")
        if figures_every_n_probes < 1:
            raise ValueError(f"figures_every_n_probes must be >= 1, got {figures_every_n_probes}")
        if network not in ("teacher", "student"):
            raise ValueError(f"network must be 'teacher' or 'student', got {network!r}")
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"name must be letters, digits, '-' or '_'; got {name!r}")
        for spec in specs:  # before the trainer prepares any data
            check_brain_spec(spec)
        self.config = replace(config, brain=specs, cache_dir=None)
        self.name = name
        self.network = network
        self.schedule = schedule
        self.n_probes = n_probes
        self.every_n_steps = every_n_steps
        self.fractions = fractions
        self.strict = strict
        self.log_figures = log_figures
        self.figures_every_n_probes = figures_every_n_probes
        self.hparams = dict(hparams or {})
        self.done_steps: list[int] = []
        self.failed_steps: list[int] = []
        self.last_summary: dict[str, dict[str, Any]] = {}
        self.probe_seconds: list[float] = []
        self._targets: list[ProbeTarget] | None = None
        self._groups: list[StimulusGroup] | None = None
        self._run_dir: Path | None = None
        self._layout_written = False
        self._hparams_written = False

    @property
    def state_key(self) -> str:
        return f"BrainProbeCallback[{self.name}]"

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._targets is not None:
            return
        names = [
            callback.name
            for callback in trainer.callbacks
            if isinstance(callback, BrainProbeCallback)
        ]
        if names.count(self.name) > 1:
            raise ValueError(
                f"{names.count(self.name)} BrainProbeCallbacks are named {self.name!r}: give each "
                "its own init_args.name (it names its TensorBoard tags, chronology and state)"
            )
        self._targets = load_targets(self.config, where="init_args.probe.stimuli")
        # Images are read once and kept in memory (the probed subset is small).
        self._groups = [
            replace(group, stimuli=_in_memory(group.stimuli))
            for group in stimulus_groups(self._targets)
        ]

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

    @property
    def chronology_path(self) -> Path:
        if self._run_dir is None:
            raise RuntimeError("the run folder is known once training has started")
        return self._run_dir / chronology_file(self.name)

    @property
    def replicates_path(self) -> Path:
        return self.chronology_path.with_name(replicates_file(self.chronology_path.name))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run_dir = None
        self.run_dir(trainer)  # every rank, before any rank-0-only work
        if self._skipped(trainer):
            return
        if trainer.is_global_zero:
            # Rows written after the checkpoint we resumed from belong to steps to be redone.
            truncate_chronology(self.chronology_path, trainer.global_step)
            truncate_chronology(self.replicates_path, trainer.global_step)
            write_roi_tables(self._targets or [], self.run_dir(trainer))
        self._probe_if_due(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self._probe_if_due(trainer, pl_module)

    @staticmethod
    def _skipped(trainer: L.Trainer) -> bool:
        return bool(trainer.sanity_checking or trainer.fast_dev_run)

    # ------------------------------------------------------------------ the probe
    def _probe_if_due(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if self._skipped(trainer) or step in self.done_steps or step not in self.steps(trainer):
            return
        started = time.perf_counter()
        model = self._probe_model(pl_module)
        layers = select_layers(model.depth, self.config.features.layers)
        rank, world = trainer.global_rank, trainer.world_size
        failure: Exception | None = None
        fits = None
        was_training = model.module.training
        model.module.eval()
        try:
            try:
                shares = self._extract_shares(model, pl_module, layers, rank, world)
            except Exception as error:  # every rank still joins the collectives below
                shares, failure = None, error
            features = _gather_features(shares, self._groups or [], world)
            if features is not None:
                try:
                    fits = fit_targets(
                        self._targets or [], self._groups or [], features, self.config,
                        share=(rank, world),
                    )  # fmt: skip
                except Exception as error:
                    failure = failure or error
            fits = _gather_fits(fits, world)
        finally:
            model.module.train(was_training)
        status = torch.zeros(1)
        if trainer.is_global_zero:
            depths = {layer: model.relative_depths[layer] for layer in layers}
            status[0] = float(
                self._summarise_and_log(trainer, pl_module, step, depths, fits, failure)
            )
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
        model = DinoProbeModel(backbone, norm=self.config.features.final_norm)
        if self.config.preprocess.overrides:
            model.preprocess = model.preprocess.with_overrides(self.config.preprocess.overrides)
        return model

    def _extract_shares(
        self,
        model: DinoProbeModel,
        pl_module: L.LightningModule,
        layers: list[int],
        rank: int,
        world: int,
    ) -> list[FeatureSet]:
        """This rank's share of every group's features: stimuli ``rank::world``."""
        shares = []
        for group in self._groups or []:
            rows = np.arange(rank, len(group.stimuli), world)
            stimuli = group.stimuli.subset([group.stimuli.ids[row] for row in rows])
            objective = None
            if "gradient" in self.config.features.kinds:
                objective = choose_objective(
                    self.config.features, self._ssl_objective(pl_module), stimuli
                )
            shares.append(self._extract(model, stimuli, layers, objective, pl_module.device))
        return shares

    def _extract(
        self,
        model: DinoProbeModel,
        stimuli: StimulusSet,
        layers: list[int],
        objective: Any,
        device: torch.device,
    ) -> FeatureSet:
        return extract_group(
            model, stimuli, self.config, layers, objective=objective, device=device
        )

    @staticmethod
    def _ssl_objective(pl_module: L.LightningModule) -> SSLObjective:
        """The module's own SSL objective at its current step (teacher held fixed)."""
        try:
            objective = DinoGradientObjective.from_module(pl_module)
        except ValueError as error:
            return SSLObjective(reason=f"is not available: {error}")
        return SSLObjective(make=lambda: objective)

    def _summarise_and_log(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        step: int,
        depths: dict[int, float],
        fits: dict | None,
        failure: Exception | None,
    ) -> bool:
        fraction = step / trainer.max_steps
        model_name = str(getattr(pl_module.hparams, "get", dict().get)("backbone", "model"))
        chronology = self.chronology_path
        try:
            if failure is not None or fits is None:
                raise failure or RuntimeError("the probe failed on another rank")
            run = summarise(
                self._targets or [],
                fits,
                depths,
                self.config,
                model_name=model_name,
                architecture=model_name,
                extra_columns={
                    "step": step,
                    "train_fraction": fraction,
                    "status": "ok",
                    "error": "",
                },
            )
        except Exception as error:  # recorded, logged, and training goes on
            log.warning("brain probe failed at step %d: %s", step, error)
            append_chronology(chronology, failure_rows(model_name, step, fraction, error))
            log_failure(trainer, self.name, step)
            return False
        for scores in run.scores:
            values = scalar_values(self.name, scores, self.config.meg_windows)
            self.last_summary[tag_prefix(self.name, scores.summary)] = values
            figures = self.log_figures and self._figures_due(trainer, step)
            log_scores(trainer, self.name, scores, values, step, fraction, run.rois, figures)
        append_chronology(chronology, run.table)
        if not run.replicates.empty:
            append_chronology(self.replicates_path, run.replicates)
        self._layout_written, self._hparams_written = log_layout_and_hparams(
            trainer,
            pl_module,
            self.name,
            run.scores,
            self.last_summary,
            layout_written=self._layout_written,
            hparams_written=self._hparams_written,
            extra_hparams=self.hparams,
        )
        return True

    def scalars(self, scores: Any) -> dict[str, float]:
        """The scalar tags of one probe result (what TensorBoard receives)."""
        return scalar_values(self.name, scores, self.config.meg_windows)

    def _figures_due(self, trainer: L.Trainer, step: int) -> bool:
        steps = self.steps(trainer)
        index = steps.index(step) if step in steps else 0
        return index % self.figures_every_n_probes == 0 or step == steps[-1]

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"done_steps": list(self.done_steps), "failed_steps": list(self.failed_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done_steps = list(state_dict.get("done_steps", []))
        self.failed_steps = list(state_dict.get("failed_steps", []))


def _in_memory(stimuli: StimulusSet) -> StimulusSet:
    """The same stimuli with their images read into memory once."""
    return StimulusSet.from_array(stimuli.ids, stimuli.load_array())


def _distributed(world: int) -> bool:
    return world > 1 and dist.is_available() and dist.is_initialized()


def _gather_features(
    shares: list[FeatureSet] | None, groups: Sequence[StimulusGroup], world: int
) -> list[FeatureSet] | None:
    """Every group's full features on every rank (None if any rank failed)."""
    if not _distributed(world):
        return shares
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, shares)
    if any(part is None for part in parts):
        return None
    gathered = []
    for index, group in enumerate(groups):
        full: FeatureSet = {}
        for kind, layer_arrays in parts[0][index].items():
            full[kind] = {}
            for layer, first in layer_arrays.items():
                array = np.empty((len(group.stimuli), first.shape[1]), np.float32)
                for rank, part in enumerate(parts):
                    array[rank::world] = part[index][kind][layer]
                full[kind][layer] = array
        gathered.append(full)
    return gathered


def _gather_fits(fits: dict | None, world: int) -> dict | None:
    """Every rank's share of the layer fits, joined (None if any rank failed)."""
    if not _distributed(world):
        return fits
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, fits)
    if any(part is None for part in parts):
        return None
    joined: dict = {}
    for part in parts:
        for key, layer_fits in part.items():
            joined.setdefault(key, []).extend(layer_fits)
    return joined
