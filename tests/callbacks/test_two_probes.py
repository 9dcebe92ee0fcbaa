"""Two BrainProbeCallbacks in one `brainalign fit`, killed and resumed (issue 10 bug).

``BrainProbeCallback`` and ``LogSpacedCheckpoint`` defined ``state_dict`` but no ``state_key``,
so a run with two probe callbacks (one per data set, or on different schedules) could not save
and resume its checkpoint. Here one probe follows the fMRI data on a log schedule, the other the
MEG data every 5 steps; the run is killed hard at step 5 (after the MEG probe of step 5, before
the checkpoint of step 6) and resumed from the step-4 checkpoint. Each callback must get its own
state back: no probe step lost (every scheduled step in each chronology) or doubled (no step
probed again by the resumed run that the first run had done and checkpointed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from runs import run_fit

from brainalign.probe.simulate import simulate_subject

FMRI_STEPS = [0, 1, 2, 4, 8]  # log schedule, 4 points over 8 steps, plus step 0
MEG_STEPS = [0, 5, 8]  # every 5 steps, plus the last
ROW_KEYS = ["step", "subject", "modality", "feature_kind", "layer", "group", "time", "metric"]
PROBE = {"encoding": {"n_folds": 3, "backend": "numpy", "alphas": [1.0, 100.0, 10000.0]}}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("subject")
    return simulate_subject(root / "sim", n_stimuli=40, image_size=32, seed=0)


def _probe(spec: str, **init_args) -> dict:
    return {
        "class_path": "brainalign.callbacks.BrainProbeCallback",
        "init_args": {"probe": {**PROBE, "brain": [spec]}, "log_figures": False, **init_args},
    }


def _callbacks(simulated, *extra: dict) -> dict:
    fmri = _probe(str(simulated.fmri_dir), n_probes=4)  # default name: chronology.parquet
    meg = _probe(str(simulated.meg_path), name="meg", schedule="every", every_n_steps=5)
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 2},
    }
    exports = {
        "class_path": "brainalign.callbacks.LogSpacedCheckpoint",
        "init_args": {"n_checkpoints": 4},
    }
    return {"trainer": {"callbacks": [checkpoint, exports, fmri, meg, *extra]}}


def _probe_steps_by_event_file(run_dir: Path, tag: str) -> list[list[int]]:
    """Steps at which ``tag`` was logged, one list per TensorBoard event file (per process)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(run_dir.glob("events.out.tfevents.*"), key=os.path.getmtime):
        found = [
            event.step
            for event in EventFileLoader(str(path)).Load()
            if any(value.tag == tag for value in event.summary.value)
        ]
        steps.append(found)
    return steps


def _done_steps(checkpoint: Path) -> dict[str, list[int]]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["callbacks"]
    return {key: value["done_steps"] for key, value in state.items() if "done_steps" in value}


@pytest.mark.slow
def test_two_probe_callbacks_killed_and_resumed_lose_and_double_no_step(tmp_path, simulated):
    kill = {"class_path": "fit_helpers.KillAtStep", "init_args": {"step": 5}}
    killed = run_fit(tmp_path, overrides=_callbacks(simulated, kill), check=False)
    assert killed.returncode == 17, killed.stderr[-3000:]
    run_dir = tmp_path / "runs" / "smoke"
    fmri_before = pd.read_parquet(run_dir / "chronology.parquet")
    meg_before = pd.read_parquet(run_dir / "chronology_meg.parquet")
    assert sorted(fmri_before["step"].unique()) == [0, 1, 2, 4]
    assert sorted(meg_before["step"].unique()) == [0, 5]  # step 5 probed, never checkpointed
    states = _done_steps(run_dir / "checkpoints" / "last.ckpt")  # saved at step 4
    assert states["BrainProbeCallback[brain]"] == [0, 1, 2, 4]
    assert states["BrainProbeCallback[meg]"] == [0]
    exports = [steps for key, steps in states.items() if key.startswith("LogSpacedCheckpoint")]
    assert exports == [[0, 1, 2, 4]]  # its key holds its settings

    run_fit(tmp_path, "--ckpt_path", "last", overrides=_callbacks(simulated))
    fmri = pd.read_parquet(run_dir / "chronology.parquet")
    meg = pd.read_parquet(run_dir / "chronology_meg.parquet")
    assert sorted(fmri["step"].unique()) == FMRI_STEPS
    assert sorted(meg["step"].unique()) == MEG_STEPS
    assert set(fmri["modality"]) == {"fmri"} and set(meg["modality"]) == {"meg"}
    for table in (fmri, meg):
        assert table.duplicated(ROW_KEYS).sum() == 0
        assert set(table["status"]) == {"ok"}
    # rows of checkpointed steps are the ones the first run wrote
    for before, after, steps in ((fmri_before, fmri, [0, 1, 2, 4]), (meg_before, meg, [0])):
        kept = [table[table["step"].isin(steps)].sort_values(ROW_KEYS) for table in (before, after)]
        pd.testing.assert_frame_equal(*(table.reset_index(drop=True) for table in kept))
    # each process logged each probe once: the resumed one only the steps not yet done
    assert _probe_steps_by_event_file(run_dir, "brain/sim01/fmri/encoding") == [[0, 1, 2, 4], [8]]
    assert _probe_steps_by_event_file(run_dir, "meg/sim01/meg/encoding") == [[0, 5], [5, 8]]
    final = _done_steps(run_dir / "checkpoints" / "last.ckpt")
    assert final["BrainProbeCallback[brain]"] == FMRI_STEPS
    assert final["BrainProbeCallback[meg]"] == MEG_STEPS
    exports = sorted(path.name for path in (run_dir / "exports").iterdir())
    assert exports == [f"step_{step:07d}" for step in (0, 1, 2, 4, 8)]


@pytest.mark.slow
def test_two_probe_callbacks_with_one_name_are_one_clear_error(tmp_path, simulated):
    overrides = _callbacks(simulated)
    overrides["trainer"]["callbacks"][3]["init_args"]["name"] = "brain"
    result = run_fit(tmp_path, overrides=overrides, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert "named 'brain'" in lines[-1] and "init_args.name" in lines[-1], lines[-5:]
