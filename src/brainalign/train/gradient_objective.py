"""The DINOv3 self-supervised loss made per image, for gradient features (Study B).

:class:`DinoGradientObjective` is the objective (``objective(model, batch) -> (B,)`` losses)
that ``brainalign.probe.gradients.extract_gradient_features`` differentiates. The probed
backbone plays the student; the teacher (backbone and heads) is held fixed. For each stimulus:

1. two global views are drawn from the image's own seed (random resized crop, flip, brightness
   and contrast), and iBOT masks for the student's views from the same seed (half of the views
   masked, as in training, with ratios in the module's range);
2. teacher targets are the teacher head's softmax at the teacher temperature, *per image*:
   Sinkhorn-Knopp (which balances prototypes over the batch) is replaced by this fixed
   per-image target, so no loss depends on another image;
3. the loss is ``dino_weight * DINO + ibot_weight * iBOT``: DINO is the cross-entropy between
   the teacher's CLS targets of one view and the student's CLS head on the other view (both
   pairs, averaged); iBOT is the cross-entropy on the masked patches, each masked patch
   weighted by 1 / (masked patches of its view), divided by the number of views, as in
   training. KoLeo (a nearest-neighbour term across the batch) and Gram anchoring are left out.

Build it from a live module (the callback) or a Lightning checkpoint (the CLI)::

    objective = DinoGradientObjective.from_module(module)          # current teacher
    objective = DinoGradientObjective.from_checkpoint("last.ckpt")  # heads from the state_dict

Teacher exports hold no heads: use the probe's invariance objective for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainalign.models.backbone import DinoBackbone
from brainalign.models.checkpoint import read_lightning_checkpoint, weights_under
from brainalign.models.export import load_state_dict_checked
from brainalign.models.views import SeededViews
from brainalign.models.weights import hash_weights
from brainalign.train.heads import DINOHead
from brainalign.train.losses import masked_patch_indices_and_weights
from brainalign.train.masks import block_masks
from brainalign.train.schedules import Schedule

__all__ = ["DinoGradientObjective"]

_HEADS = ("teacher.dino_head.", "teacher.ibot_head.", "student.dino_head.", "student.ibot_head.")
_MASK_STREAM = 1_000_003  # SeedSequence key of the masks (views use 0, 1)


class _Batch(Protocol):
    """What the objective reads of ``brainalign.probe.gradients.StimulusBatch``."""

    images: Tensor  # (B, 3, R, R)
    seeds: Tensor  # (B,) int64


def _final_value(value: float | Schedule | Mapping[str, Any] | None, default: float) -> float:
    """A scheduled value at the end of training (a float is returned as it is)."""
    if value is None:
        return default
    if isinstance(value, Mapping):
        value = Schedule(**value)
    if isinstance(value, Schedule):
        return float(value(1, 1))  # last step of a 1-step run: past warmup, at the end value
    if hasattr(value, "start"):  # an inert record of a Schedule
        return _final_value({k: getattr(value, k) for k in vars(value)}, default)
    return float(value)


class DinoGradientObjective(nn.Module):
    """Per-image DINO + iBOT loss with a fixed teacher; the probed backbone is the student.

    Parameters
    ----------
    teacher : DinoBackbone
        Makes the targets (never differentiated).
    teacher_dino_head, teacher_ibot_head, student_dino_head, student_ibot_head : DINOHead
    teacher_temp, student_temp : float
        Softmax temperatures (> 0).
    dino_weight, ibot_weight : float
        Weights of the two terms (>= 0, not both 0).
    mask_probability : float
        Share of the two student views that get an iBOT mask (0.5: one of them).
    mask_ratio_range : tuple of float
        Masking ratios of the masked views.
    crop_scale : tuple of float
        Area fraction range of the random resized crops.
    flip_p, brightness, contrast : float
        Horizontal-flip probability; brightness and contrast factors in ``[1 - v, 1 + v]``.
    seed : int
        Mixed with each image's seed to draw its views and masks.
    """

    def __init__(
        self,
        *,
        teacher: DinoBackbone,
        teacher_dino_head: DINOHead,
        teacher_ibot_head: DINOHead,
        student_dino_head: DINOHead,
        student_ibot_head: DINOHead,
        teacher_temp: float = 0.07,
        student_temp: float = 0.1,
        dino_weight: float = 1.0,
        ibot_weight: float = 1.0,
        mask_probability: float = 0.5,
        mask_ratio_range: tuple[float, float] = (0.1, 0.5),
        crop_scale: tuple[float, float] = (0.32, 1.0),
        flip_p: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not (teacher_temp > 0 and student_temp > 0):
            raise ValueError(f"temperatures must be > 0, got {teacher_temp}, {student_temp}")
        if dino_weight < 0 or ibot_weight < 0 or dino_weight + ibot_weight == 0:
            raise ValueError(f"weights must be >= 0, not both 0; got {dino_weight}, {ibot_weight}")
        if not 0.0 <= mask_probability <= 1.0:
            raise ValueError(f"mask_probability must be in [0, 1], got {mask_probability}")
        if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}")
        self.teacher = teacher
        self.teacher_dino_head = teacher_dino_head
        self.teacher_ibot_head = teacher_ibot_head
        self.student_dino_head = student_dino_head
        self.student_ibot_head = student_ibot_head
        self.config = {
            "teacher_temp": float(teacher_temp),
            "student_temp": float(student_temp),
            "dino_weight": float(dino_weight),
            "ibot_weight": float(ibot_weight),
            "mask_probability": float(mask_probability),
            "mask_ratio_range": [float(v) for v in mask_ratio_range],
            "crop_scale": [float(v) for v in crop_scale],
            "flip_p": float(flip_p),
            "brightness": float(brightness),
            "contrast": float(contrast),
            "seed": int(seed),
        }

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_module(
        cls, module: nn.Module, *, step: int | None = None, seed: int = 0
    ) -> DinoGradientObjective:
        """The objective of a live ``DINOv3Module`` (shares its teacher and heads, no copy).

        Scheduled values (teacher temperature, loss weights) are taken at ``step`` (default
        the module's global step) when the module is attached to a trainer with ``max_steps``,
        else at the end of training.
        """
        missing = [
            name for name in ("teacher", "student", "teacher_temp") if not hasattr(module, name)
        ]
        if missing:
            raise ValueError(
                f"{type(module).__name__} lacks {missing}: the SSL gradient objective needs a "
                "brainalign DINOv3Module"
            )
        total = _total_steps(module)
        at = int(module.global_step if step is None else step)

        def scheduled(schedule: Schedule | float) -> float:
            if not isinstance(schedule, Schedule):
                return float(schedule)
            return float(schedule(at, total)) if total else _final_value(schedule, math.nan)

        return cls(
            teacher=module.teacher["backbone"],
            teacher_dino_head=module.teacher["dino_head"],
            teacher_ibot_head=module.teacher["ibot_head"],
            student_dino_head=module.student["dino_head"],
            student_ibot_head=module.student["ibot_head"],
            teacher_temp=scheduled(module.teacher_temp),
            student_temp=float(module.student_temp),
            dino_weight=scheduled(module.loss_weights["dino"]),
            ibot_weight=scheduled(module.loss_weights["ibot"]),
            mask_probability=float(module.mask_probability),
            mask_ratio_range=tuple(module.mask_ratio_range),
            seed=seed,
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        allow_pickle: bool = False,
        teacher_temp: float | None = None,
        seed: int = 0,
    ) -> DinoGradientObjective:
        """The objective of a brainalign Lightning checkpoint (teacher and heads from its weights).

        Head sizes are read from the weights' shapes. The teacher temperature and loss weights
        are the end-of-training values of the run's schedules (a checkpoint does not record the
        run's length); pass ``teacher_temp`` to override.

        Raises
        ------
        ValueError
            When the checkpoint lacks the teacher backbone or one of the four heads
            (``teacher.dino_head.*``, ``teacher.ibot_head.*``, ``student.dino_head.*``,
            ``student.ibot_head.*``), or holds pickled objects without ``allow_pickle``.
        """
        path = Path(path)
        checkpoint = read_lightning_checkpoint(path, allow_pickle=allow_pickle)
        state, hyper = checkpoint.state_dict, checkpoint.hyper_parameters
        missing = [
            prefix + "*" for prefix in (*_HEADS, "teacher.backbone.") if not checkpoint.has(prefix)
        ]
        if missing:
            raise ValueError(
                f"{path}: no weights under {missing} in state_dict; the SSL gradient objective "
                "needs a checkpoint written by brainalign's DINOv3Module (teacher exports hold "
                "no heads: use the invariance objective)"
            )
        teacher = checkpoint.backbone("teacher.backbone.")
        heads = {
            prefix: _head_from_state(weights_under(state, prefix), f"{path} [{prefix}*]")
            for prefix in _HEADS
        }
        defaults = {"mask_probability": 0.5, "mask_ratio_range": (0.1, 0.5)}
        return cls(
            teacher=teacher.eval().requires_grad_(False),
            teacher_dino_head=heads["teacher.dino_head."],
            teacher_ibot_head=heads["teacher.ibot_head."],
            student_dino_head=heads["student.dino_head."],
            student_ibot_head=heads["student.ibot_head."],
            teacher_temp=(
                float(teacher_temp)
                if teacher_temp is not None
                else _final_value(hyper.get("teacher_temp"), 0.07)
            ),
            student_temp=float(hyper.get("student_temp", 0.1)),
            dino_weight=_final_value(hyper.get("dino_weight"), 1.0),
            ibot_weight=_final_value(hyper.get("ibot_weight"), 1.0),
            mask_probability=float(hyper.get("mask_probability", defaults["mask_probability"])),
            mask_ratio_range=tuple(hyper.get("mask_ratio_range", defaults["mask_ratio_range"])),
            seed=seed,
        )

    # ------------------------------------------------------------------ identity
    @property
    def identity(self) -> str:
        """``dino_ibot:<sha256>`` of the configuration and the teacher and head weights."""
        return f"dino_ibot:{hash_weights(self.config, self.state_dict())[:32]}"

    # ------------------------------------------------------------------ the loss
    def forward(self, model: Any, batch: _Batch) -> Tensor:
        """Per-image loss.

        Parameters
        ----------
        model : ProbeModel
            Its ``module`` must be a :class:`DinoBackbone` (the student); ``preprocess`` gives
            the normalisation of ``batch.images``.
        batch : StimulusBatch
            ``images`` (B, 3, R, R) preprocessed, ``seeds`` (B,) per-image seeds.

        Returns
        -------
        Tensor of shape (B,), float32
        """
        student = getattr(model, "module", None)
        if not isinstance(student, DinoBackbone):
            raise ValueError(
                f"the SSL gradient objective needs a brainalign ViT as the probed model, got "
                f"{type(student).__name__}; use the invariance objective for other models"
            )
        images = batch.images
        if next(self.teacher.parameters()).device != images.device:
            self.to(images.device)
        n_images = images.shape[0]
        config = self.config
        seeds = [int(seed) for seed in batch.seeds.tolist()]
        views = _seeded_views(images, seeds, model.preprocess, config)  # (2, B, 3, R, R)
        flat_views = views.flatten(0, 1)  # (2B, 3, R, R), view-major
        patch = student.patch_size
        grid = (flat_views.shape[-2] // patch, flat_views.shape[-1] // patch)
        masks = self._masks(seeds, grid).to(images.device)  # (2B, N)
        masked_index, masked_weight = masked_patch_indices_and_weights(masks)  # (M,), (M,)
        image_of_patch = torch.div(masked_index, grid[0] * grid[1], rounding_mode="floor")
        image_of_patch = image_of_patch % n_images  # (M,)

        with torch.no_grad():  # the teacher is fixed: targets only
            teacher_out = self.teacher(flat_views)
            teacher_cls = self.teacher_dino_head(teacher_out.cls).float()  # (2B, K)
            teacher_cls = F.softmax(teacher_cls / config["teacher_temp"], dim=-1)
            teacher_patches = teacher_out.patches.flatten(0, 1)[masked_index]  # (M, D)
            teacher_patches = F.softmax(
                self.teacher_ibot_head(teacher_patches).float() / config["teacher_temp"], dim=-1
            )  # (M, K)

        student_out = student(flat_views, masks=masks)
        student_temp = config["student_temp"]
        student_cls = F.log_softmax(
            self.student_dino_head(student_out.cls).float() / student_temp, dim=-1
        ).view(2, n_images, -1)  # (2, B, K)
        teacher_cls = teacher_cls.view(2, n_images, -1)
        dino = -0.5 * (
            (teacher_cls[0] * student_cls[1]).sum(-1) + (teacher_cls[1] * student_cls[0]).sum(-1)
        )  # (B,): both cross-view pairs
        student_patches = student_out.patches.flatten(0, 1)[masked_index]  # (M, D)
        student_patches = F.log_softmax(
            self.student_ibot_head(student_patches).float() / student_temp, dim=-1
        )  # (M, K)
        per_patch = -(teacher_patches * student_patches).sum(-1) * masked_weight  # (M,)
        ibot = dino.new_zeros(n_images).index_add(0, image_of_patch, per_patch) / 2.0  # (B,)
        return config["dino_weight"] * dino + config["ibot_weight"] * ibot

    def _masks(self, seeds: list[int], grid: tuple[int, int]) -> Tensor:
        """iBOT masks of the two views of every image, view-major: (2B, N) bool."""
        config = self.config
        per_image = []
        for image_seed in seeds:
            entropy = np.random.SeedSequence([config["seed"], image_seed, _MASK_STREAM])
            generator = torch.Generator().manual_seed(int(entropy.generate_state(1)[0]))
            per_image.append(
                block_masks(
                    2,
                    grid,
                    mask_probability=config["mask_probability"],
                    ratio_range=tuple(config["mask_ratio_range"]),
                    generator=generator,
                )
            )  # (2, N)
        return torch.stack(per_image, dim=1).flatten(0, 1)  # (2, B, N) -> (2B, N)


# ---------------------------------------------------------------------------- helpers
def _seeded_views(
    images: Tensor, seeds: list[int], preprocess: Any, config: Mapping[str, Any]
) -> Tensor:
    """Two views per image from its seed (:class:`~brainalign.models.views.SeededViews`).

    Returns (2, B, 3, R, R), view-major.
    """
    views = SeededViews(
        scale=tuple(config["crop_scale"]),
        flip_p=config["flip_p"],
        brightness=config["brightness"],
        contrast=config["contrast"],
    )
    seed_tensor = torch.as_tensor(list(seeds), dtype=torch.int64)
    return views(images, seed_tensor, n_views=2, seed=config["seed"], preprocess=preprocess)


def _total_steps(module: nn.Module) -> int | None:
    trainer = getattr(module, "_trainer", None)
    max_steps = getattr(trainer, "max_steps", None) if trainer is not None else None
    return int(max_steps) if max_steps is not None and max_steps > 0 else None


def _head_from_state(state: dict[str, Tensor], source: str) -> DINOHead:
    """A :class:`DINOHead` sized from its weights' shapes, weights loaded, frozen."""
    linear = sorted(
        (int(key.split(".")[1]), value)
        for key, value in state.items()
        if key.startswith("mlp.") and key.endswith(".weight")
    )
    last = state.get("last_layer.weight")
    if not linear or last is None:
        raise ValueError(f"{source}: not a DINO head (need mlp.*.weight and last_layer.weight)")
    shapes = [tuple(weight.shape) for _, weight in linear]  # (out, in) per Linear
    head = DINOHead(
        shapes[0][1],
        int(last.shape[0]),
        hidden_dim=shapes[0][0] if len(shapes) > 1 else 2048,
        bottleneck_dim=shapes[-1][0],
        n_layers=len(shapes),
    )
    load_state_dict_checked(head, state, source=source)
    return head.eval().requires_grad_(False)
