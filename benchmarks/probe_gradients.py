"""Cost of gradient features relative to activations, same stimuli, layers and model.

Run::

    .venv/bin/python benchmarks/probe_gradients.py --n-stimuli 256 --batch-size 64

Model: the 12-layer ``vit_small_test`` (64 px, patch 8, width 128) with random weights, wrapped
as a probe model; all 12 layers, patch-mean pooling, random uint8 images. Timed, each as the
median of ``--repeats`` runs after one warm-up run:

- activations: :func:`brainalign.probe.features.extract_features` (one no-grad forward pass
  per batch);
- gradients, invariance objective: :func:`brainalign.probe.gradients.extract_gradient_features`
  with two seeded views (one target forward pass without gradients, one forward pass with
  gradients, one backward pass to the first layer);
- gradients, DINO + iBOT objective of a ``DINOv3Module`` with the ``vit_small_test`` heads
  (4,096 prototypes): teacher forward on two views, student forward on two masked views, one
  backward pass.

Printed: each wall time and the ratio gradient time / activation time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from brainalign.probe.features import extract_features
from brainalign.probe.gradients import extract_gradient_features
from brainalign.probe.models import DinoProbeModel
from brainalign.probe.objectives import InvarianceObjective
from brainalign.train.gradient_objective import DinoGradientObjective
from brainalign.train.module import DINOv3Module, HeadConfig

SMALL_TEST_HEAD = HeadConfig(n_prototypes=4096, hidden_dim=512, bottleneck_dim=128, n_layers=3)


def timed(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run`` over ``repeats`` calls, after one warm-up call."""
    run()
    durations = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-stimuli", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    module = DINOv3Module(
        backbone="vit_small_test", dino_head=SMALL_TEST_HEAD, ibot_head=SMALL_TEST_HEAD
    ).eval()
    model = DinoProbeModel(module.teacher_backbone)
    images = np.random.default_rng(0).integers(0, 256, (args.n_stimuli, 64, 64, 3), dtype=np.uint8)
    layers = list(range(model.depth))
    options = {
        "layers": layers,
        "pooling": "mean",
        "batch_size": args.batch_size,
        "device": args.device,
        "progress": False,
    }
    invariance = InvarianceObjective()
    dino = DinoGradientObjective.from_module(module)

    activation_s = timed(lambda: extract_features(model, images, **options), args.repeats)
    invariance_s = timed(
        lambda: extract_gradient_features(model, images, invariance, **options), args.repeats
    )
    dino_s = timed(lambda: extract_gradient_features(model, images, dino, **options), args.repeats)

    device = model.device
    print(
        f"vit_small_test (12 layers, 64 px), {args.n_stimuli} stimuli, batch {args.batch_size}, "
        f"{len(layers)} layers, mean pooling, device {device}, "
        f"{torch.get_num_threads()} CPU threads, median of {args.repeats}"
    )
    print(f"activations                     {activation_s:8.3f} s")
    print(
        f"gradients, invariance objective {invariance_s:8.3f} s  "
        f"ratio {invariance_s / activation_s:5.2f}x"
    )
    print(f"gradients, DINO + iBOT objective {dino_s:7.3f} s  ratio {dino_s / activation_s:5.2f}x")


if __name__ == "__main__":
    main()
