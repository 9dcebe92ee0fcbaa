"""What a study costs beyond its runs: orchestration, and the report.

    python benchmarks/study_overhead.py [--steps 300] [--levels 2]

A small study (one factor, ``--levels`` learning rates, the smoke fit of ``--steps`` steps,
probes of the exports after training as separate jobs, 200 bootstrap resamples) on the
simulated subject, run sequentially with the local launcher through the command line, as a
user runs it (``brainalign study run``, then ``brainalign study report``). The baseline, in
the same run: the very same commands run one after the other by hand (``brainalign fit ...``
and ``brainalign study probe-exports RUN`` of each cell, each a fresh process), which is what a
user without the study layer would do.

- orchestration overhead = (``study run`` wall time - the hand-run commands' wall time) /
  ``study run`` wall time (target < 5%): checking every cell's configs before any job, the
  study table, job bookkeeping;
- report = ``study report`` wall time / ``study run`` wall time;
- report statistics / probes = the statistics part of the report (comparisons, chance levels,
  trends, intervals; printed in report.md) / the probe jobs' own time (target < 10%).

The machine's load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from brainalign.probe.simulate import simulate_subject
from brainalign.study.config import load_study
from brainalign.study.job_status import read_job_status
from brainalign.study.orchestrate import prepare_runs
from brainalign.study.table import read_table

REPO = Path(__file__).resolve().parents[1]
BRAINALIGN = Path(sys.executable).parent / "brainalign"


def _seconds(status: dict) -> float:
    start = datetime.fromisoformat(status["start"])
    return (datetime.fromisoformat(status["end"]) - start).total_seconds()


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([str(BRAINALIGN), *argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _study(root: Path, subject, steps: int, levels: int, directory: Path) -> Path:
    cells = {
        f"lr{index}": {
            "model": {"optim": {"base_lr": 0.001 * (index + 1)}},
            "trainer": {"max_steps": steps},
        }
        for index in range(levels)
    }
    path = root / f"{directory.name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "overhead",
                "base": [str(REPO / "configs" / "experiments" / "smoke.yaml")],
                "factors": {"lr": cells},
                "probe": {
                    "brain": [str(subject.fmri_dir), str(subject.meg_path)],
                    "features": {"pooling": "cls"},
                    "bootstrap": {"n_resamples": 200},
                },
                "probing": {
                    "during_training": False,
                    "after_training": True,
                    "n_exports": 6,
                    "checkpoint_every_n_steps": 10,
                },
                "launcher": {"kind": "local", "max_workers": 1},
                "directory": str(directory),
            },
            sort_keys=False,
        )
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--levels", type=int, default=2)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.chdir(root)
        subject = simulate_subject(root / "sim", n_stimuli=300, image_size=32, seed=0)
        # by hand: the same command lines, one fresh process each (inputs written first)
        by_hand = load_study(_study(root, subject, args.steps, args.levels, root / "by_hand"))
        plans = prepare_runs(by_hand, root / "by_hand")
        hand_s = sum(_timed(plan.job.argv) for plan in plans)
        hand_s += sum(_timed(["study", "probe-exports", str(plan.run_dir)]) for plan in plans)
        # the study
        study_file = _study(root, subject, args.steps, args.levels, root / "study")
        study_s = _timed(["study", "run", str(study_file)])
        table = read_table(root / "study")
        probes = [read_job_status(Path(run_dir) / "probe_exports") for run_dir in table["run_dir"]]
        probe_s = sum(_seconds(status) for status in probes)
        report_s = _timed(["study", "report", str(root / "study")])
        statistics_s = float(
            re.search(
                r"Statistics took ([0-9.]+) s",
                (root / "study" / "report" / "report.md").read_text(),
            ).group(1)
        )
    print(
        f"study of {len(table)} runs: `study run` {study_s:.1f} s wall; the same commands by "
        f"hand {hand_s:.1f} s"
    )
    print(f"orchestration overhead = {(study_s - hand_s) / study_s:.1%} of the study (target < 5%)")
    print(f"report = {report_s:.1f} s = {report_s / study_s:.1%} of the study")
    print(
        f"report statistics = {statistics_s:.2f} s = {statistics_s / probe_s:.1%} of the probes "
        "they summarise (target < 10%)"
    )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
