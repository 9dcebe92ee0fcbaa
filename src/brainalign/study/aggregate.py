"""Every run's scores of a study in one long table, with the runs' factor levels as columns.

Sources, per completed run of the study table:

- training cells: ``<run>/chronology.parquet`` (probed during training) and
  ``<run>/probe_exports/chronology.parquet`` (its exports probed after training), with their
  bootstrap resamples and ROI tables;
- probe cells and language cells: ``<run>/probe/scores.parquet`` (one checkpoint:
  ``train_fraction`` 1, source ``probe``).

The result keeps the long format of the probe (``subject, modality, feature_kind, layer,
depth, group, time, metric, value[, ci_low, ci_high]``) plus ``run``, ``source`` (training,
exports or probe), ``step``, ``train_fraction`` and one column per factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from brainalign.probe.chronology import CHRONOLOGY_FILE, ROI_FOLDER, curves, replicates_file
from brainalign.study.job_status import COMPLETED
from brainalign.study.table import NUMERIC_COLUMNS, read_table

__all__ = ["StudyResults", "collect"]

_META = {"run", "kind", "config_hash", "status", "job_id", "submitted", "start", "end"}
_META |= {"error", "attempts", "probe_status", "run_dir", *NUMERIC_COLUMNS}


@dataclass
class StudyResults:
    """What a report is made from.

    Attributes
    ----------
    runs : DataFrame
        The study table.
    factors : list of str
        Factor columns (``seed`` included when the study has seeds).
    scores : DataFrame
        The long table over runs x checkpoints x subjects x metrics.
    curves : DataFrame
        Chronology curves (``brainalign.probe.chronology.curves``) of every run and source,
        with the factor columns.
    replicates : dict of run key to DataFrame
        Bootstrap resamples of the curves per checkpoint (when the probes had a bootstrap).
    rois : dict of subject to DataFrame
        ROI tables (centroids, distance from V1, properties).
    """

    runs: pd.DataFrame
    factors: list[str]
    scores: pd.DataFrame
    curves: pd.DataFrame
    replicates: dict[str, pd.DataFrame] = field(default_factory=dict)
    rois: dict[str, pd.DataFrame] = field(default_factory=dict)


def run_key(run: str, source: str) -> str:
    """The name a run's curves go by: ``<run>`` (training, probe) or ``<run>[exports]``."""
    return run if source in ("training", "probe") else f"{run}[{source}]"


def collect(study_dir: Path) -> StudyResults:
    """Gather every completed run's tables (a clear error when there is nothing to report)."""
    runs = read_table(study_dir)
    factors = [column for column in runs.columns if column not in _META]
    parts, curve_parts, replicates, rois = [], [], {}, {}
    for row in runs.itertuples(index=False):
        if row.status != COMPLETED:
            continue
        levels = {factor: getattr(row, factor) for factor in factors}
        for source, table, resamples, roi_folder in _sources(Path(row.run_dir), row.kind):
            key = run_key(row.run, source)
            table = table.assign(run=row.run, source=source, **levels)
            parts.append(table)
            curve_parts.append(curves(table, key).assign(run=row.run, source=source, **levels))
            if resamples is not None:
                replicates[key] = resamples
            for csv in sorted(roi_folder.glob("*.csv")):
                rois.setdefault(csv.stem, pd.read_csv(csv))
    if not parts:
        states = runs["status"].value_counts().to_dict()
        raise ValueError(
            f"{study_dir}: no completed run to report yet ({states}); run `brainalign study "
            "run` until runs complete"
        )
    scores = pd.concat(parts, ignore_index=True)
    return StudyResults(
        runs=runs,
        factors=factors,
        scores=scores,
        curves=pd.concat(curve_parts, ignore_index=True),
        replicates=replicates,
        rois=rois,
    )


def _sources(run_dir: Path, kind: str):
    """(source, table, resamples or None, ROI folder) of one run."""
    if kind in ("probe", "language"):
        scores = run_dir / "probe" / "scores.parquet"
        if scores.is_file():
            table = pd.read_parquet(scores)
            table = _with_checkpoint(table, step=0, fraction=1.0)
            resamples = run_dir / "probe" / "replicates.parquet"
            extra = None
            if resamples.is_file():
                extra = _with_checkpoint(pd.read_parquet(resamples), step=0, fraction=1.0)
            yield "probe", table, extra, run_dir / "probe" / ROI_FOLDER
        return
    for source, folder in (("training", run_dir), ("exports", run_dir / "probe_exports")):
        chronology = folder / CHRONOLOGY_FILE
        if not chronology.is_file():
            continue
        table = pd.read_parquet(chronology)
        resamples = folder / replicates_file()
        extra = pd.read_parquet(resamples) if resamples.is_file() else None
        yield source, table, extra, folder / ROI_FOLDER


def _with_checkpoint(table: pd.DataFrame, *, step: int, fraction: float) -> pd.DataFrame:
    table = table.copy()
    table["step"] = table.get("step", step)
    table["train_fraction"] = table.get("train_fraction", fraction)
    if "status" not in table:
        table["status"] = "ok"
    return table
