"""SSL step overhead: one full DINOv3 step / bare backbone work on the same crops.

    python benchmarks/train_step.py [--sizes vit_tiny_test vit_small_test] [--batch 32]

The bare baseline is what any ViT training on these crops must do: student forward + backward
on the 2 global and L local crops, and the teacher's forward on the 2 global crops. The full
step adds the masks, heads, Sinkhorn-Knopp, the three losses, AdamW with its parameter groups,
gradient clipping and the EMA update. Both are timed in the same run (ratio: the machine is
noisy); target <= 1.25.
"""

from __future__ import annotations

import argparse
import time

import torch

from brainalign.train.module import DINOv3Module, HeadConfig

SIZES = {  # backbone -> (global px, local px, head: prototypes, hidden, bottleneck)
    "vit_tiny_test": (32, 16, HeadConfig(1024, 256, 64)),
    "vit_small_test": (64, 32, HeadConfig(4096, 512, 128)),
    "vit_s": (224, 96, HeadConfig(65536, 2048, 256)),
}


class _Trainer:
    """The few trainer attributes the module reads, for timing outside a Trainer."""

    max_steps = 1000
    world_size = 1
    global_rank = 0
    accumulate_grad_batches = 1
    training = True


def median_time(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def benchmark(name: str, batch: int, n_local: int, repeats: int) -> tuple[float, float]:
    global_px, local_px, head = SIZES[name]
    torch.manual_seed(0)
    module = DINOv3Module(backbone=name, dino_head=head, ibot_head=head)
    module.__dict__["_trainer"] = None
    type(module).total_steps = property(lambda self: 1000)
    module._global_batch = batch
    optimizer = module.configure_optimizers()
    crops = {
        "global_crops": torch.randn(2, batch, 3, global_px, global_px),
        "local_crops": torch.randn(n_local, batch, 3, local_px, local_px),
    }

    def full_step() -> None:
        loss, _ = module.compute_losses(crops, step=100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.student.parameters(), 3.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        module._update_teacher(0.996)

    student, teacher = module.student_backbone, module.teacher_backbone

    def bare_step() -> None:
        with torch.no_grad():
            teacher(crops["global_crops"].flatten(0, 1))
        out = student(crops["global_crops"].flatten(0, 1))
        local = student(crops["local_crops"].flatten(0, 1))
        (out.cls.sum() + out.patches.sum() + local.cls.sum()).backward()
        student.zero_grad(set_to_none=True)

    return median_time(full_step, repeats), median_time(bare_step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["vit_tiny_test", "vit_small_test"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n-local", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch threads {torch.get_num_threads()}, batch {args.batch}, "
        f"2 global + {args.n_local} local crops"
    )
    for name in args.sizes:
        full, bare = benchmark(name, args.batch, args.n_local, args.repeats)
        print(
            f"{name:15s} full SSL step {full * 1000:7.1f} ms | bare backbone fwd+bwd "
            f"{bare * 1000:7.1f} ms | ratio {full / bare:.2f} (target <= 1.25)"
        )


if __name__ == "__main__":
    main()
