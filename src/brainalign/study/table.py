"""The study table (``<study>/study.parquet``): one row per run, what it is and how it stands.

Columns: ``run``, ``kind`` (fit | probe | language), one column per factor (and ``seed``),
``config_hash``, ``status`` (not started, PENDING, RUNNING, COMPLETED, FAILED, INTERRUPTED,
...), ``job_id``, ``submitted``, ``start``, ``end``, ``error`` (the last failure's one line),
``attempts``, ``probe_status`` (the after-training probe job, when there is one), the numbers
trend tests use: ``n_parameters`` and ``max_steps`` (a training run: from its resolved
``config.yaml``; a language run: the parameters of its model folder, counted from the
safetensors headers) and ``context_words`` (a language run's context), then ``run_dir``.
Statuses come from each run's ``job.json``: the table is a view, rebuilt whenever it is
written, and ``brainalign study status`` prints it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from brainalign.study.job_status import read_job_status
from brainalign.study.runs import RunPlan
from brainalign.utils.atomic import atomic_path

__all__ = [
    "NOT_STARTED",
    "NUMERIC_COLUMNS",
    "TABLE_FILE",
    "build_table",
    "count_safetensors_parameters",
    "read_table",
    "write_table",
]

TABLE_FILE = "study.parquet"
NOT_STARTED = "not started"
_SHOWN = ["run", "kind", "status", "probe_status", "job_id", "start", "end", "error"]
#: Columns holding a number per run for trend tests (not factors).
NUMERIC_COLUMNS = ("n_parameters", "max_steps", "context_words")


def build_table(plans: Sequence[RunPlan], factors: Sequence[str]) -> pd.DataFrame:
    """The table of ``plans`` with each run's current status."""
    rows = []
    for plan in plans:
        status = read_job_status(plan.run_dir) or {}
        probe = read_job_status(plan.run_dir / "probe_exports") or {}
        row: dict[str, Any] = {"run": plan.cell.name, "kind": plan.cell.kind}
        for factor in factors:
            row[factor] = plan.cell.levels.get(factor)
        if "seed" in plan.cell.levels:
            row["seed"] = int(plan.cell.levels["seed"])
        row.update(
            config_hash=plan.config_hash,
            status=status.get("state", NOT_STARTED),
            job_id=status.get("job_id"),
            submitted=status.get("submitted"),
            start=status.get("start"),
            end=status.get("end"),
            error=status.get("error") or probe.get("error"),
            attempts=int(status.get("attempts", 0) or 0),
            probe_status=probe.get("state"),
            **_run_numbers(plan),
            run_dir=str(plan.run_dir),
        )
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _run_numbers(plan: RunPlan) -> dict[str, Any]:
    """``n_parameters``, ``max_steps`` and ``context_words`` of a run (None where unknown)."""
    language = plan.cell.language
    if language is not None:
        return {
            "n_parameters": count_safetensors_parameters(Path(language.model)),
            "max_steps": None,
            "context_words": int(language.context_words),
        }
    return {**_run_size(plan.run_dir), "context_words": None}


def count_safetensors_parameters(folder: Path) -> int | None:
    """Parameters of a Hugging Face model folder, from its safetensors headers.

    Only the headers are read (``safe_open(...).keys()`` and each tensor's shape through
    ``get_slice``): no weight is loaded, whatever the model's size. The files are those of
    ``model.safetensors.index.json`` (a sharded model), else ``model.safetensors``, else every
    ``*.safetensors`` of the folder. Tied weights are saved once by transformers, so the count
    equals the model's ``num_parameters()``.

    Returns
    -------
    int or None
        None when the folder has no safetensors file, or one that cannot be read.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (folder / "model.safetensors").is_file():
            names = ["model.safetensors"]
        else:
            names = sorted(path.name for path in folder.glob("*.safetensors"))
        if not names:
            return None
        total = 0
        for name in names:
            with safe_open(str(folder / name), framework="numpy") as handle:
                for key in handle.keys():
                    total += math.prod(handle.get_slice(key).get_shape())
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        return None
    return int(total)


def _run_size(run_dir: Path) -> dict[str, Any]:
    """``n_parameters`` and ``max_steps`` of a training run, from its resolved config."""
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        return {"n_parameters": None, "max_steps": None}
    import yaml

    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError:
        return {"n_parameters": None, "max_steps": None}
    max_steps = (config.get("trainer") or {}).get("max_steps")
    model = config.get("model") or {}
    return {"n_parameters": _count_parameters(model), "max_steps": max_steps}


def _count_parameters(model: dict[str, Any]) -> int | None:
    """Backbone parameters of a run's model section, counted on the meta device (no memory)."""
    backbone = model.get("backbone")
    if not isinstance(backbone, str):
        return None
    import torch

    from brainalign.models.backbone import create_backbone

    try:
        with torch.device("meta"):
            module = create_backbone(backbone, img_size=model.get("img_size"))
    except (ValueError, TypeError, RuntimeError):
        return None
    return int(sum(parameter.numel() for parameter in module.parameters()))


def write_table(table: pd.DataFrame, study_dir: Path) -> Path:
    """Write the table atomically; returns its path."""
    path = Path(study_dir) / TABLE_FILE
    with atomic_path(path) as temporary:
        table.to_parquet(temporary, index=False)
    return path


def read_table(study_dir: Path) -> pd.DataFrame:
    """The table of a study folder (a clear error when it is not one)."""
    path = Path(study_dir) / TABLE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{study_dir} is not a study folder (no {TABLE_FILE}): run `brainalign study run "
            "STUDY.yaml` first"
        )
    return pd.read_parquet(path)


def format_table(table: pd.DataFrame) -> str:
    """The table as text for the terminal: the columns that say how the study stands."""
    factors = [
        column
        for column in table.columns
        if column not in _SHOWN
        and column not in ("config_hash", "submitted", "attempts", "run_dir")
        and column not in NUMERIC_COLUMNS
    ]
    columns = ["run", "kind", *[f for f in factors if f not in ("run", "kind")], *_SHOWN[2:]]
    shown = table[[column for column in columns if column in table]].copy()
    for column in ("start", "end"):
        if column in shown:
            shown[column] = shown[column].fillna("").astype(str).str.slice(0, 19)
    counts = table["status"].value_counts().to_dict()
    summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        return f"{shown.fillna('').to_string(index=False)}\n{len(table)} runs: {summary}"
