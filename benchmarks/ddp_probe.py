"""Wall time of one in-training brain probe with 2 DDP processes against 1, on the same data.

    python benchmarks/ddp_probe.py [--n-stimuli 300] [--repeats 3]

A one-step fit (CPU, gloo, one torch thread per process) whose BrainProbeCallback probes the
teacher at steps 0 and 1 against the simulated subject's fMRI and MEG. With two processes each
rank extracts half of the stimuli and fits the ridges of half of the layers (DESIGN.md: the
ridge fits of a probe are split across ranks, not all on rank 0). The probe's own wall time
(``BrainProbeCallback.probe_seconds``, rank 0) is compared: 1 process / 2 processes (target
>= 1.6). Runs alternate (1, 2, 1, 2, ...) and the median ratio of the pairs is printed, with
the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from brainalign.callbacks import BrainProbeCallback
from brainalign.probe.config import EncodingConfig, FeatureConfig, ProbeConfig
from brainalign.probe.simulate import simulate_subject
from brainalign.train.data import DataSource, ProceduralSpec, SSLDataModule
from brainalign.train.module import DINOv3Module, HeadConfig


class TimedProbe(BrainProbeCallback):
    """Writes rank 0's probe durations to a JSON file at the end of training."""

    def __init__(self, *, out: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            Path(self.out).write_text(json.dumps(self.probe_seconds))


def one_run(root: Path, subject, devices: int, out: Path) -> list[float]:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    head = HeadConfig(n_prototypes=256, hidden_dim=128, bottleneck_dim=32)
    data = SSLDataModule(
        sources=[
            DataSource(
                str(root / "shards"),
                kind="procedural",
                procedural=ProceduralSpec(n_images=256, image_size=32),
            )
        ],
        batch_size=8,
        num_workers=0,
        global_size=32,
        local_size=16,
        n_local_crops=0,
    )
    probe = ProbeConfig(
        features=FeatureConfig(pooling="cls", layers="all"),
        encoding=EncodingConfig(backend="torch"),
    )
    callback = TimedProbe(
        out=str(out),
        brain=[str(subject.fmri_dir), str(subject.meg_path)],
        probe=probe,
        schedule="every",
        every_n_steps=1,
        log_figures=False,
    )
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=L.pytorch.loggers.TensorBoardLogger(root / "logs", name=f"d{devices}"),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data.prepare_data()
    module = DINOv3Module(backbone="vit_small_test", img_size=32, dino_head=head, ibot_head=head)
    trainer.fit(module, datamodule=data)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-stimuli", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        subject = simulate_subject(root / "sim", n_stimuli=args.n_stimuli, image_size=32, seed=0)
        ratios = []
        for repeat in range(args.repeats):
            seconds = {}
            for devices in (1, 2):
                probes = one_run(root, subject, devices, root / f"probe_{devices}_{repeat}.json")
                seconds[devices] = sum(probes) / len(probes)
            ratios.append(seconds[1] / seconds[2])
            print(
                f"pair {repeat + 1}: probe {seconds[1]:.2f} s with 1 process, "
                f"{seconds[2]:.2f} s with 2 (ratio {ratios[-1]:.2f})"
            )
            time.sleep(1)
    print(
        f"in-DDP probe, 1 process / 2 processes = {statistics.median(ratios):.2f} "
        f"(median of {len(ratios)} pairs: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 1.6)"
    )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
