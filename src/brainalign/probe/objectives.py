"""Model-agnostic per-image losses for gradient features (see :mod:`brainalign.probe.gradients`).

- :class:`InvarianceObjective`: self-supervised; two seeded views of each image, the first one a
  fixed target (no gradient), the second one pulled towards it: ``1 - cos(z_student, z_target)``
  on the pooled output of the model's deepest layer. Works for any model.
- :class:`SupervisedObjective`: cross-entropy of the model's classifier logits against given
  labels, for models that have a classifier head.

Views come from :class:`SeededViews`: random resized crop, horizontal flip, brightness and
contrast, drawn for each image from its own seed (a hash of its pixels) and the objective's
seed, so they never depend on the batch. The DINO + iBOT objective of brainalign checkpoints
is ``brainalign.train.gradient_objective.DinoGradientObjective``.

Example::

    gradients = extract_gradient_features(model, stimuli, InvarianceObjective(seed=0))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainalign.models.views import SeededViews
from brainalign.probe.features import pool_tokens
from brainalign.probe.gradients import StimulusBatch
from brainalign.probe.models import ProbeModel
from brainalign.probe.stimuli import format_id_list

__all__ = ["InvarianceObjective", "SeededViews", "SupervisedObjective"]


def _describe(kind: str, config: Mapping[str, Any]) -> str:
    """``kind:<sha256 of the canonical JSON of config>`` (a short, stable identity)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return f"{kind}:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


# ---------------------------------------------------------------------------- views
# ---------------------------------------------------------------------------- invariance
@dataclass(frozen=True)
class InvarianceObjective:
    """Pull a seeded view's embedding towards another seeded view's (held fixed).

    ``loss_i = 1 - cos(z(view_1 of image i), stopgrad(z(view_0 of image i)))``, with ``z`` the
    pooled output of the model's deepest layer (as returned by ``model.extract``). Only view 1
    carries gradients; view 0 is a target, as the teacher is in self-distillation.

    Parameters
    ----------
    views : SeededViews
    embedding : {"auto", "cls", "mean", "cls+mean"}
        How the deepest layer's tokens become ``z`` (see
        :func:`~brainalign.probe.features.pool_tokens`); ``auto`` is ``cls+mean`` when the
        model has a class token, else ``mean``, so that every token of the deepest layer
        receives a gradient.
    seed : int
        Mixed with each image's seed to draw its views.
    """

    views: SeededViews = field(default_factory=SeededViews)
    embedding: Literal["auto", "cls", "mean", "cls+mean"] = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.embedding not in ("auto", "cls", "mean", "cls+mean"):
            raise ValueError(
                f"embedding must be auto, cls, mean or cls+mean, got {self.embedding!r}"
            )

    @property
    def identity(self) -> str:
        config = {"views": asdict(self.views), "embedding": self.embedding, "seed": self.seed}
        return _describe("invariance", config)

    def _embed(self, model: ProbeModel, images: Tensor) -> Tensor:
        tokens = model.extract(images, [model.depth - 1])[0]  # (B, T, D)
        pooling = self.embedding
        if pooling == "auto":
            pooling = "cls+mean" if model.token_layout.has_cls else "mean"
        return pool_tokens(tokens, model.token_layout, pooling)  # (B, D) or (B, 2D)

    def __call__(self, model: ProbeModel, batch: StimulusBatch) -> Tensor:
        """Per-image loss, Tensor of shape (B,)."""
        views = self.views(
            batch.images, batch.seeds, n_views=2, seed=self.seed, preprocess=model.preprocess
        )  # (2, B, 3, R, R)
        with torch.no_grad():
            target = self._embed(model, views[0])  # (B, D)
        student = self._embed(model, views[1])  # (B, D)
        return 1.0 - F.cosine_similarity(student.float(), target.float(), dim=-1, eps=1e-8)


# ---------------------------------------------------------------------------- supervised
def _classifier_logits(module: nn.Module, images: Tensor) -> Tensor:
    """``module(images)`` (or its ``.logits``) for models with a classifier head."""
    if getattr(module, "num_classes", None) == 0:
        raise ValueError(
            f"{type(module).__name__} has no classifier head (num_classes=0): the supervised "
            "objective needs one; use InvarianceObjective instead"
        )
    output = module(images)
    return getattr(output, "logits", output)


@dataclass(frozen=True, eq=False)
class SupervisedObjective:
    """Cross-entropy between the model's classifier logits and a label per stimulus.

    Parameters
    ----------
    labels : ndarray of shape (n_stimuli,), int
        Class index of each stimulus, in the stimulus set's order.
    logits : callable, optional
        ``logits(module, images) -> Tensor (B, n_classes)``; default ``module(images)``
        (its ``.logits`` for Hugging Face outputs).
    """

    labels: np.ndarray
    logits: Callable[[nn.Module, Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError(
                f"labels must be non-negative integers, one per stimulus; got {labels.dtype} "
                f"of shape {labels.shape}"
            )
        object.__setattr__(self, "labels", labels.astype(np.int64))

    @classmethod
    def from_mapping(
        cls, labels: Mapping[str, int], stimulus_ids: Sequence[str], **options: Any
    ) -> SupervisedObjective:
        """Labels given per stimulus id, put in the order of ``stimulus_ids``."""
        missing = [stimulus_id for stimulus_id in stimulus_ids if stimulus_id not in labels]
        if missing:
            raise ValueError(
                f"no label for stimulus ids {format_id_list(missing, len(stimulus_ids))}"
            )
        return cls(np.array([int(labels[i]) for i in stimulus_ids], dtype=np.int64), **options)

    @property
    def identity(self) -> str:
        logits = "default" if self.logits is None else getattr(self.logits, "__qualname__", "")
        config = {
            "labels": hashlib.sha256(self.labels.tobytes()).hexdigest(),
            "logits": logits,
        }
        return _describe("supervised", config)

    def __call__(self, model: ProbeModel, batch: StimulusBatch) -> Tensor:
        """Per-image cross-entropy, Tensor of shape (B,)."""
        indices = batch.indices.numpy()
        if indices.max() >= len(self.labels):
            raise ValueError(
                f"stimulus position {int(indices.max())} has no label: {len(self.labels)} labels "
                "given; give one label per stimulus, in the stimulus set's order"
            )
        logits = (self.logits or _classifier_logits)(model.module, batch.images)
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"{model.architecture}: the classifier output is {shape}, not logits of shape "
                "(B, n_classes); pass logits=<callable> or use InvarianceObjective"
            )
        labels = torch.from_numpy(self.labels[indices]).to(logits.device)  # (B,)
        if int(labels.max()) >= logits.shape[1]:
            raise ValueError(
                f"label {int(labels.max())} is out of range for {logits.shape[1]} classes"
            )
        return F.cross_entropy(logits.float(), labels, reduction="none")
