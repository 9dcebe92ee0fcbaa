"""``brainalign demo``: the main job on the embedded default, with no download.

1. writes the simulated subject (``data/simulated``) once;
2. trains the tiny ViT on procedural images (shards written once to ``data/``) with the brain
   probe callback on (``configs/experiments/demo.yaml``, or ``demo_long.yaml`` with
   ``--preset long``);
3. prints where the TensorBoard logs are, and the chronology summary.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

REPO_CONFIGS = Path(__file__).resolve().parents[3] / "configs"
PRESETS = {"short": ["demo.yaml"], "long": ["demo.yaml", "demo_long.yaml"]}

CAVEAT = """\
What a run this short can and cannot show
- It shows the machinery: training, probing at log-spaced steps, TensorBoard curves, chronology.
- Early, low-level ROIs (V1, V2, V3, hV4) and the early MEG window (80-130 ms) gain within a few
  hundred steps; the spatial score, negative at initialisation, turns positive.
- ROIs driven by object category (FFC, PHA1, IFSp) stay near r = 0: a few minutes of CPU training
  do not learn the categories, so their half times are noise around zero (read the first/last
  values, not the half time) and the spatial and temporal scores mostly reflect early areas.
- `make demo-long` trains ten times longer: there the category ROIs leave zero after ~700-1,350
  steps (measured curve in the README)."""


def add(subparsers: argparse._SubParsersAction) -> Callable[[argparse.Namespace], None]:
    parser = subparsers.add_parser(
        "demo",
        help="train the tiny ViT with the brain probe on the embedded default",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="short")
    parser.add_argument("--max-steps", type=int, help="override the preset's number of steps")
    parser.add_argument("--data", default="data", help="where simulated data and shards live")
    parser.add_argument(
        "--keep", action="store_true", help="keep a previous run folder instead of starting afresh"
    )

    def run(ns: argparse.Namespace) -> None:
        run_demo(ns)

    return run


def run_demo(ns: argparse.Namespace) -> None:
    import torch

    from brainalign.cli import run_lightning
    from brainalign.probe.simulate import simulate_subject

    if not torch.cuda.is_available():
        # One compute thread beside the data worker: on a small CPU machine more threads spin
        # against each other (measured several times slower on 2 cores).
        torch.set_num_threads(1)

    configs = [REPO_CONFIGS / "experiments" / name for name in PRESETS[ns.preset]]
    for config in configs:
        if not config.is_file():
            raise FileNotFoundError(
                f"demo config {config} not found: run the demo from a clone of the repository "
                "(make demo)"
            )
    simulated = Path(ns.data) / "simulated"
    if not (simulated / "truth.json").is_file():
        print(f"[demo] writing the simulated subject to {simulated}")
        simulate_subject(simulated, n_stimuli=300, image_size=32, seed=0, overwrite=True)
    else:
        print(f"[demo] reusing the simulated subject in {simulated}")
    run_dir = Path("runs") / ("demo" if ns.preset == "short" else "demo_long")
    if run_dir.exists() and not ns.keep:
        print(f"[demo] removing the previous {run_dir}")
        shutil.rmtree(run_dir)
    args = ["fit"] + [part for config in configs for part in ("--config", str(config))]
    if ns.max_steps:
        args += ["--trainer.max_steps", str(ns.max_steps)]
    print(f"[demo] brainalign {' '.join(args)}")
    run_lightning(args)

    from brainalign.commands.chronology import load_runs, print_report, write_report
    from brainalign.probe.config import ProbeConfig

    report = run_dir / "chronology_report"
    tables, rois, replicates = load_runs([run_dir], ProbeConfig())
    summary, times = write_report(tables, rois, report, overwrite=True, replicates=replicates)
    print("\n== Chronology of alignment (half time = fraction of training) ==")
    print_report(times, summary)
    print(f"\nTensorBoard logs: {run_dir}\n  open them with: tensorboard --logdir {run_dir.parent}")
    print(f"Chronology: {run_dir}/chronology.parquet, report in {report}/\n")
    if ns.preset == "short":
        print(CAVEAT)
