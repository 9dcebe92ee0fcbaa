"""A real one-node SLURM cluster for the launcher tests (scripts/slurm/start_cluster.sh).

The cluster starts once per session, on first use, and stops at the end. Tests that use it are
skipped, with the reason, where the SLURM/munge programs are absent (`apt-get install -y
slurm-wlm munge`), where the tests do not run as root, or where the cluster does not start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START = REPO / "scripts" / "slurm" / "start_cluster.sh"
STOP = REPO / "scripts" / "slurm" / "stop_cluster.sh"
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol")


@dataclass(frozen=True)
class SlurmCluster:
    folder: Path  # state, logs, slurm.conf
    conf: Path  # what SLURM_CONF names for the tests
    start_s: float  # how long start_cluster.sh took


def _start(folder: Path) -> SlurmCluster:
    import time

    started = time.perf_counter()
    result = subprocess.run(
        ["bash", str(START), str(folder)], capture_output=True, text=True, timeout=120
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the SLURM test cluster did not start: {reason}")
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in result.stdout.splitlines()
        if line.startswith("export ")
    )
    return SlurmCluster(folder=folder, conf=Path(exports["SLURM_CONF"]), start_s=elapsed)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> SlurmCluster:
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    if missing:
        pytest.skip(
            f"no SLURM test cluster: {', '.join(missing)} not on PATH "
            "(apt-get install -y slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        pytest.skip("no SLURM test cluster: start_cluster.sh runs the daemons as root")
    cluster = _start(tmp_path_factory.mktemp("slurm-cluster"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(cluster.conf))
        try:
            yield cluster
        finally:
            subprocess.run(["bash", str(STOP), str(cluster.folder)], timeout=120, check=False)
