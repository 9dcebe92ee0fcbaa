"""What a study costs beyond its runs: orchestration, and the report's statistics.

    python benchmarks/study_overhead.py [--steps 300] [--levels 2]

A small study (one factor, ``--levels`` learning rates, the smoke fit of ``--steps`` steps,
probes of the exports after training as separate jobs, 200 bootstrap resamples) on the
simulated subject, run sequentially with the local launcher through the command line, as a
user runs it (``brainalign study run``, then ``brainalign study report``). From the runs'
``job.json``:

- orchestration overhead = (``study run`` wall time - sum of the jobs' own wall times) / the
  study's wall time (target < 5%);
- report = ``study report`` wall time / the study's wall time;
- report statistics / probes = the statistics part of the report (comparisons, chance levels,
  trends, intervals; printed in report.md) / the probe jobs' wall time (target < 10%).

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
from brainalign.study.job_status import read_job_status
from brainalign.study.table import read_table

REPO = Path(__file__).resolve().parents[1]
BRAINALIGN = Path(sys.executable).parent / "brainalign"


def _seconds(status: dict) -> float:
    start = datetime.fromisoformat(status["start"])
    return (datetime.fromisoformat(status["end"]) - start).total_seconds()


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
        levels = {
            f"lr{index}": {
                "model": {"optim": {"base_lr": 0.001 * (index + 1)}},
                "trainer": {"max_steps": args.steps},
            }
            for index in range(args.levels)
        }
        study_file = root / "study.yaml"
        study_file.write_text(
            yaml.safe_dump(
                {
                    "name": "overhead",
                    "base": [str(REPO / "configs" / "experiments" / "smoke.yaml")],
                    "factors": {"lr": levels},
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
                    "directory": str(root / "study"),
                },
                sort_keys=False,
            )
        )
        started = time.perf_counter()
        subprocess.run([str(BRAINALIGN), "study", "run", str(study_file)], check=True)
        study_s = time.perf_counter() - started
        table = read_table(root / "study")
        fits = [read_job_status(Path(run_dir)) for run_dir in table["run_dir"]]
        probes = [read_job_status(Path(run_dir) / "probe_exports") for run_dir in table["run_dir"]]
        jobs_s = sum(_seconds(status) for status in fits + probes)
        probe_s = sum(_seconds(status) for status in probes)
        started = time.perf_counter()
        subprocess.run([str(BRAINALIGN), "study", "report", str(root / "study")], check=True)
        report_s = time.perf_counter() - started
        out = root / "study" / "report"
        statistics_s = float(
            re.search(r"Statistics took ([0-9.]+) s", (out / "report.md").read_text()).group(1)
        )
    print(
        f"study: {len(table)} runs, {study_s:.1f} s wall, jobs {jobs_s:.1f} s "
        f"(fits {jobs_s - probe_s:.1f} s, export probes {probe_s:.1f} s)"
    )
    print(f"orchestration overhead = {(study_s - jobs_s) / study_s:.1%} of the study (target < 5%)")
    print(f"report = {report_s:.1f} s = {report_s / study_s:.1%} of the study")
    print(
        f"report statistics = {statistics_s:.2f} s = {statistics_s / probe_s:.1%} of the probes "
        "they summarise (target < 10%)"
    )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
