"""Helpers shared by the end-to-end tests: run `brainalign fit` and read TensorBoard events."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "experiments" / "smoke.yaml"
BRAINALIGN = Path(sys.executable).parent / "brainalign"


def run_fit(cwd: Path, *extra: str, overrides: dict | None = None, check: bool = True):
    """`brainalign fit --config smoke.yaml --config <overrides>` in ``cwd`` (a subprocess)."""
    config = cwd / "override.yaml"
    config.write_text(yaml.safe_dump(overrides or {}))
    # this checkout's sources first (the venv's editable install may point at another checkout)
    path = os.pathsep.join([str(REPO / "src"), str(REPO / "tests" / "support")])
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(BRAINALIGN), "fit", "--config", str(SMOKE), "--config", str(config), *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"fit failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def scalar_tags(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the TensorBoard event files in ``log_dir`` with (step, value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
