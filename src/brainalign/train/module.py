"""The DINOv3 LightningModule: student, EMA teacher, DINO + iBOT + KoLeo (+ Gram) losses.

Run it through the CLI::

    brainalign fit --config configs/experiments/smoke.yaml

Every scheduled value (lr, weight decay, EMA momentum, teacher temperature, loss weights) is a
function of the global step, and the iBOT masks are drawn from a generator seeded by
(seed, step, rank), so a resumed run restores them exactly from the checkpoint's step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainalign.models.backbone import DinoBackbone, create_backbone
from brainalign.train.heads import DINOHead
from brainalign.train.losses import (
    DINOLoss,
    GramAnchoringLoss,
    IBOTPatchLoss,
    KoLeoLoss,
    masked_patch_indices_and_weights,
    sinkhorn_knopp,
)
from brainalign.train.masks import block_masks
from brainalign.train.optim import parameter_groups
from brainalign.train.schedules import Schedule


@dataclass
class HeadConfig:
    """Projection head sizes (DINOv3: 3 layers, hidden 2048, bottleneck 256, 65,536 prototypes)."""

    n_prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    n_layers: int = 3


@dataclass
class OptimConfig:
    """AdamW and its schedules.

    The peak learning rate is ``base_lr * 4 * sqrt(global_batch / 1024)``, with ``global_batch``
    the images per optimiser step over all processes.
    """

    base_lr: float = 1e-3
    min_lr: float = 1e-6
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_fraction: float = 0.1
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    freeze_last_layer_fraction: float = 0.01


@dataclass
class GramConfig:
    """Optional Gram-anchoring phase.

    From ``start_fraction`` of training on, a frozen copy of the EMA teacher (the Gram teacher,
    refreshed every ``refresh_every_steps``) anchors the student's patch-similarity matrices.
    """

    enabled: bool = False
    start_fraction: float = 0.5
    refresh_every_steps: int = 10000
    weight: Schedule = field(
        default_factory=lambda: Schedule(start=2.0, kind="constant", warmup_fraction=0.0)
    )


def check_max_steps(max_steps: int | None, where: str = "") -> int:
    """Return ``max_steps`` if it is a positive number of steps; raise ``ValueError`` otherwise.

    Every schedule of the DINOv3 recipe is a function of the fraction of training done, so the
    run length must be known (Lightning's default, -1, means "no limit"). ``where`` (such as
    " (set in config file x.yaml)") follows the value in the message.
    """
    if max_steps is None or isinstance(max_steps, bool) or max_steps <= 0:
        raise ValueError(
            f"trainer.max_steps must be a positive number of optimiser steps, got {max_steps}"
            f"{where}: "
            "every schedule of the DINOv3 recipe is step-based (set it in the config, e.g. "
            "trainer.max_steps: 1000, or pass --trainer.max_steps 1000)"
        )
    return int(max_steps)


def _as_schedule(value: float | Schedule) -> Schedule:
    return value if isinstance(value, Schedule) else Schedule(start=float(value), kind="constant")


class DINOv3Module(L.LightningModule):
    """Student + EMA teacher trained with the DINOv3 objective.

    Parameters
    ----------
    backbone : str
        Backbone name (see ``brainalign.models.BACKBONES``).
    img_size : int, optional
        Nominal backbone resolution (defaults to the model's own).
    drop_path_rate : float
        Stochastic depth on every student block (the teacher has none).
    rope_rescale, rope_jitter : float, optional
        RoPE coordinate augmentation of the student in training.
    dino_head, ibot_head : HeadConfig
        Separate heads for the CLS (DINO) and masked-patch (iBOT) losses.
    optim : OptimConfig
    teacher_momentum : Schedule
        EMA momentum (0.992 -> 1.0 cosine by default).
    teacher_temp : Schedule
        Teacher temperature (0.04 -> 0.07 warmup over 30% of training, then constant).
    student_temp : float
    dino_weight, ibot_weight, koleo_weight : float or Schedule
        Loss weights (1.0, 1.0, 0.1).
    mask_probability : float
        Fraction of global-crop images that get an iBOT mask.
    mask_ratio_range : tuple of float
        Masking ratios are spread over this range.
    gram : GramConfig
    seed : int
        Seeds the iBOT masks (with the step and rank).
    """

    def __init__(
        self,
        *,
        backbone: str = "vit_tiny_test",
        img_size: int | None = None,
        drop_path_rate: float = 0.0,
        rope_rescale: float | None = 2.0,
        rope_jitter: float | None = None,
        dino_head: HeadConfig | None = None,
        ibot_head: HeadConfig | None = None,
        optim: OptimConfig | None = None,
        teacher_momentum: Schedule | None = None,
        teacher_temp: Schedule | None = None,
        student_temp: float = 0.1,
        dino_weight: float | Schedule = 1.0,
        ibot_weight: float | Schedule = 1.0,
        koleo_weight: float | Schedule = 0.1,
        mask_probability: float = 0.5,
        mask_ratio_range: tuple[float, float] = (0.1, 0.5),
        gram: GramConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_probability <= 1.0:
            raise ValueError(f"mask_probability must be in [0, 1], got {mask_probability}")
        low, high = mask_ratio_range
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"mask_ratio_range must satisfy 0 < low <= high < 1, got {low, high}")
        self.save_hyperparameters()
        self.dino_head_config = dino_head or HeadConfig()
        self.ibot_head_config = ibot_head or HeadConfig()
        self.optim_config = optim or OptimConfig()
        self.teacher_momentum = teacher_momentum or Schedule(start=0.992, end=1.0)
        self.teacher_temp = teacher_temp or Schedule(
            start=0.07, kind="constant", warmup_fraction=0.3, warmup_start=0.04
        )
        self.student_temp = student_temp
        self.loss_weights = {
            "dino": _as_schedule(dino_weight),
            "ibot": _as_schedule(ibot_weight),
            "koleo": _as_schedule(koleo_weight),
        }
        self.mask_probability = mask_probability
        self.mask_ratio_range = (low, high)
        self.gram_config = gram or GramConfig()
        self.seed = seed

        self.student = self._build_network(
            backbone, img_size, drop_path_rate, rope_rescale, rope_jitter
        )
        self.teacher = self._build_network(backbone, img_size, 0.0, None, None)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.gram_teacher: DinoBackbone | None = None
        if self.gram_config.enabled:
            self.gram_teacher = copy.deepcopy(self.teacher["backbone"])
            self.gram_teacher.requires_grad_(False)

        self.dino_loss = DINOLoss()
        self.ibot_loss = IBOTPatchLoss()
        self.koleo_loss = KoLeoLoss()
        self.gram_loss = GramAnchoringLoss()
        self._global_batch: int | None = None

    def _build_network(
        self,
        name: str,
        img_size: int | None,
        drop_path_rate: float,
        rope_rescale: float | None,
        rope_jitter: float | None,
    ) -> nn.ModuleDict:
        backbone = create_backbone(
            name,
            img_size=img_size,
            drop_path_rate=drop_path_rate,
            rope_rescale=rope_rescale,
            rope_jitter=rope_jitter,
        )
        width = backbone.embed_dim
        heads = {
            key: DINOHead(
                width,
                config.n_prototypes,
                hidden_dim=config.hidden_dim,
                bottleneck_dim=config.bottleneck_dim,
                n_layers=config.n_layers,
            )
            for key, config in (
                ("dino_head", self.dino_head_config),
                ("ibot_head", self.ibot_head_config),
            )
        }
        return nn.ModuleDict({"backbone": backbone, **heads})

    # ------------------------------------------------------------------ public accessors
    @property
    def teacher_backbone(self) -> DinoBackbone:
        """The EMA teacher's backbone (what checkpoints export and the probe scores)."""
        return self.teacher["backbone"]

    @property
    def student_backbone(self) -> DinoBackbone:
        return self.student["backbone"]

    @property
    def total_steps(self) -> int:
        return check_max_steps(self.trainer.max_steps if self._trainer is not None else -1)

    @property
    def train_fraction(self) -> float:
        return self.global_step / self.total_steps

    def export_metadata(self) -> dict[str, Any]:
        """What a teacher export records besides its weights: model size and data mixture."""
        meta: dict[str, Any] = {"model_size": self.hparams["backbone"]}
        if self._trainer is not None and self.trainer.datamodule is not None:
            data = _describe_datamodule(self.trainer.datamodule)
            if data is not None:
                meta["data"] = data
        return meta

    # ------------------------------------------------------------------ Lightning hooks
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture with a message that names both."""
        saved = (checkpoint.get("hyper_parameters") or {}).get("backbone")
        if saved is not None and saved != self.hparams["backbone"]:
            raise ValueError(
                f"the checkpoint was trained with backbone {saved!r} but this run builds "
                f"{self.hparams['backbone']!r}; resume with the same model config, or probe the "
                "checkpoint offline with `brainalign probe --model CKPT`"
            )
        expected = self.state_dict()
        mismatched = [
            key
            for key, value in checkpoint.get("state_dict", {}).items()
            if key in expected and tuple(value.shape) != tuple(expected[key].shape)
        ]
        if mismatched:
            raise ValueError(
                f"the checkpoint's tensors do not fit this model ({len(mismatched)} shape "
                f"mismatches, e.g. {mismatched[0]}): were the head sizes changed?"
            )

    def on_fit_start(self) -> None:
        _ = self.total_steps  # fail early with a clear message

    def train(self, mode: bool = True) -> DINOv3Module:
        super().train(mode)
        self.teacher.eval()  # no drop path, no RoPE augmentation, ever
        if self.gram_teacher is not None:
            self.gram_teacher.eval()
        return self

    def configure_optimizers(self) -> torch.optim.Optimizer:
        config = self.optim_config
        groups = parameter_groups(
            self.student.named_children(),
            depth=self.student_backbone.depth,
            layerwise_decay=config.layerwise_decay,
            patch_embed_lr_mult=config.patch_embed_lr_mult,
        )
        for group in groups:
            group["lr"] = 0.0
            group["weight_decay"] = config.weight_decay * group["wd_mult"]
        fused = torch.cuda.is_available() and self.device.type == "cuda"
        return torch.optim.AdamW(groups, betas=config.betas, fused=fused or None)

    def _peak_lr(self) -> float:
        if self._global_batch is None and self._trainer is not None and self.trainer.training:
            raise RuntimeError("the global batch size is unknown before the first batch")
        global_batch = self._global_batch or 1024
        return self.optim_config.base_lr * 4.0 * math.sqrt(global_batch / 1024.0)

    def _scheduled(self, step: int) -> dict[str, float]:
        config = self.optim_config
        total = self.total_steps
        peak = self._peak_lr()
        lr = Schedule(
            start=peak,
            end=config.min_lr,
            kind=config.lr_schedule,
            warmup_fraction=config.warmup_fraction,
        )(step, total)
        wd = Schedule(start=config.weight_decay, end=config.weight_decay_end)(step, total)
        return {
            "lr": lr,
            "weight_decay": wd,
            "teacher_momentum": self.teacher_momentum(step, total),
            "teacher_temp": self.teacher_temp(step, total),
            **{f"{name}_weight": s(step, total) for name, s in self.loss_weights.items()},
            "gram_weight": self.gram_config.weight(step, total),
        }

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        values = self._scheduled(self.global_step)
        frozen = self.global_step < self.optim_config.freeze_last_layer_fraction * self.total_steps
        for group in optimizer.param_groups:
            group["lr"] = (
                0.0 if (frozen and group["is_last_layer"]) else values["lr"] * group["lr_mult"]
            )
            group["weight_decay"] = values["weight_decay"] * group["wd_mult"]
        optimizer.step(closure=optimizer_closure)
        self._update_teacher(values["teacher_momentum"])
        self._maybe_refresh_gram_teacher()

    @torch.no_grad()
    def _update_teacher(self, momentum: float) -> None:
        teacher = [p for p in self.teacher.parameters()]
        student = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1.0 - momentum)

    def _gram_active(self, step: int) -> bool:
        return (
            self.gram_teacher is not None
            and step >= self.gram_config.start_fraction * self.total_steps
        )

    @torch.no_grad()
    def _maybe_refresh_gram_teacher(self) -> None:
        if self.gram_teacher is None:
            return
        step = self.global_step  # already incremented for the step just taken
        start = math.ceil(self.gram_config.start_fraction * self.total_steps)
        since_start = step - start
        if since_start >= 0 and since_start % max(self.gram_config.refresh_every_steps, 1) == 0:
            self.gram_teacher.load_state_dict(self.teacher_backbone.state_dict())

    # ------------------------------------------------------------------ the objective
    def _masks(
        self, n_images: int, grid: tuple[int, int], step: int, device: torch.device
    ) -> Tensor:
        rank = self.global_rank if self._trainer is not None else 0
        seed = int(np.random.SeedSequence([self.seed, step, rank]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        masks = block_masks(
            n_images,
            grid,
            mask_probability=self.mask_probability,
            ratio_range=self.mask_ratio_range,
            generator=generator,
        )
        return masks.to(device)

    def compute_losses(self, batch: dict[str, Any], step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted DINOv3 loss of one batch and its parts (and collapse diagnostics).

        Parameters
        ----------
        batch : dict
            ``global_crops`` (2, B, 3, G, G), ``local_crops`` (L, B, 3, g, g) or None.
        step : int
            Global step: picks the scheduled values and seeds the masks.
        """
        values = self._scheduled(step)
        global_crops: Tensor = batch["global_crops"]
        local_crops: Tensor | None = batch.get("local_crops")
        n_global, batch_size = global_crops.shape[:2]
        if n_global != 2:
            raise ValueError(f"expected 2 global crops, got {n_global}")
        images = global_crops.flatten(0, 1)  # (2B, 3, G, G)
        patch = self.student_backbone.patch_size
        grid = (images.shape[-2] // patch, images.shape[-1] // patch)
        masks = self._masks(images.shape[0], grid, step, images.device)  # (2B, N)
        masked_index, masked_weight = masked_patch_indices_and_weights(masks)  # (M,), (M,)

        # Teacher: both global crops, unmasked.
        with torch.no_grad():
            teacher_out = self.teacher_backbone(images)
            teacher_cls_logits = self.teacher["dino_head"](teacher_out.cls)  # (2B, K)
            teacher_cls_probs = sinkhorn_knopp(teacher_cls_logits, values["teacher_temp"])
            teacher_cls_probs = teacher_cls_probs.view(2, batch_size, -1)
            teacher_masked = teacher_out.patches.flatten(0, 1)[masked_index]  # (M, D)
            teacher_patch_probs = sinkhorn_knopp(
                self.teacher["ibot_head"](teacher_masked), values["teacher_temp"]
            )

        # Student: global crops with masks, local crops without.
        student_out = self.student_backbone(images, masks=masks)
        student_cls_logits = self.student["dino_head"](student_out.cls).view(2, batch_size, -1)
        student_local_logits = None
        if local_crops is not None and local_crops.shape[0] > 0:
            n_local = local_crops.shape[0]
            local_out = self.student_backbone(local_crops.flatten(0, 1))
            student_local_logits = self.student["dino_head"](local_out.cls).view(
                n_local, batch_size, -1
            )
        student_masked = student_out.patches.flatten(0, 1)[masked_index]  # (M, D)
        student_patch_logits = self.student["ibot_head"](student_masked)  # (M, K)

        dino = self.dino_loss(
            student_cls_logits, student_local_logits, teacher_cls_probs, self.student_temp
        )
        ibot = self.ibot_loss(
            student_patch_logits,
            teacher_patch_probs,
            masked_weight,
            images.shape[0],
            self.student_temp,
        )
        student_cls = student_out.cls.view(2, batch_size, -1)
        koleo = sum(self.koleo_loss(student_cls[crop]) for crop in range(2))
        total = (
            values["dino_weight"] * dino
            + values["ibot_weight"] * ibot
            + values["koleo_weight"] * koleo
        )
        parts: dict[str, Tensor] = {"loss_dino": dino, "loss_ibot": ibot, "loss_koleo": koleo}
        if self._gram_active(step):
            with torch.no_grad():
                gram_patches = self.gram_teacher(images).patches
            gram = self.gram_loss(student_out.patches, gram_patches)
            total = total + values["gram_weight"] * gram
            parts["loss_gram"] = gram
        parts["loss"] = total
        parts.update(
            self._diagnostics(teacher_cls_logits, teacher_cls_probs, student_out.cls, values)
        )
        return total, parts

    @torch.no_grad()
    def _diagnostics(
        self, teacher_logits: Tensor, teacher_probs: Tensor, student_cls: Tensor, values: dict
    ) -> dict[str, Tensor]:
        """Collapse diagnostics: teacher entropy, prototype usage, CLS feature spread."""
        softmax = F.softmax(teacher_logits.float() / values["teacher_temp"], dim=-1)
        entropy = -(softmax * torch.log(softmax.clamp_min(1e-12))).sum(-1).mean()
        assigned = teacher_probs.flatten(0, 1).argmax(-1)
        usage = torch.unique(assigned).numel() / teacher_probs.shape[-1]
        normalised = F.normalize(student_cls.float(), dim=-1)
        return {
            "teacher_entropy": entropy,
            "prototype_usage": torch.tensor(usage, device=teacher_logits.device),
            "cls_std": normalised.std(dim=0).mean(),
        }

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed the step's randomness (drop path, RoPE augmentation) from (seed, step, rank).

        Lightning checkpoints do not carry the global RNG state; seeding every step from its
        index makes a resumed run draw exactly what the uninterrupted run drew.
        """
        if self._global_batch is None:  # before optimizer_step reads it for the lr scaling
            self._global_batch = (
                batch["global_crops"].shape[1]
                * self.trainer.world_size
                * self.trainer.accumulate_grad_batches
            )
        micro_batch = batch_idx % max(int(self.trainer.accumulate_grad_batches), 1)
        state = np.random.SeedSequence([self.seed, self.global_step, micro_batch, self.global_rank])
        torch.manual_seed(int(state.generate_state(1)[0]))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        batch_size = batch["global_crops"].shape[1]
        loss, parts = self.compute_losses(batch, self.global_step)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at step {self.global_step}: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
            )
        values = self._scheduled(self.global_step)
        logs = {
            f"train/{key}": value
            for key, value in parts.items()
            if key.startswith("loss") and key != "loss"
        }
        logs.update(
            {
                f"diagnostics/{key}": value
                for key, value in parts.items()
                if not key.startswith("loss")
            }
        )
        logs["diagnostics/koleo"] = parts["loss_koleo"]
        for key in ("lr", "weight_decay", "teacher_momentum", "teacher_temp"):
            logs[f"schedule/{key}"] = torch.tensor(values[key])
        logs["train/fraction"] = torch.tensor(self.train_fraction)
        if "n_skipped" in batch:
            logs["data/skipped_samples"] = torch.tensor(float(batch["n_skipped"]))
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("train/loss", parts["loss"], prog_bar=True, on_step=True, batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        batch_size = batch["global_crops"].shape[1]
        _, parts = self.compute_losses(batch, self.global_step)
        self.log_dict(
            {f"val/{key}": value for key, value in parts.items()},
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
        )


def _describe_datamodule(datamodule: Any) -> Any:
    describe = getattr(datamodule, "describe_sources", None)
    return describe() if callable(describe) else None
