"""The chronology of alignment: score curves over training and when each one rises.

The chronology table is the long score table of :mod:`brainalign.probe.pipeline` with a row set
per probed checkpoint (``step``, ``train_fraction``, ``status`` columns added). From it:

- :func:`curves`: one value per (curve, step): ``encoding``, ``spatial_score``,
  ``temporal_score``, ``roi/<name>`` (best layer's R in that ROI) and ``window/<label>`` (best
  layer's R in that MEG window); for each other metric probed (``rsa``, ``cka``, ``cka_cv``)
  the same curves prefixed by its name (``rsa`` for its best layer's score, ``rsa/spatial_score``,
  ``rsa/temporal_score``, ``rsa/roi/V1``, ``rsa/window/80-130ms``); with variance
  partitioning, each unique and shared variance over all targets, per ROI and per MEG window
  (:func:`~brainalign.probe.metric_names.partition_curve`: ``unique_variance/gradient/layer_3``,
  ``shared_variance/activation+gradient/layer_3/roi/V1``...);
- :func:`half_time`: the training fraction where a curve first reaches 50% of its final value
  (Study A's definition), or 50% of its rise from the first probe (``definition="rise"``),
  interpolating linearly between probes; NaN when it is never reached or undefined;
- :func:`log_fit`: ``value = intercept + slope * log10(fraction)`` per curve;
- :func:`analyse`: half times of every curve of every run, their correlation with ROI distance
  from V1 and with per-ROI property columns.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from brainalign.probe.config import METRICS
from brainalign.probe.metric_names import PARTITION_REGIONS, MetricNames, partition_curve
from brainalign.utils.atomic import atomic_path

HalfTimeDefinition = Literal["final", "rise"]
#: The curves of the three encoding scores.
SCORE_CURVES: tuple[str, ...] = ("encoding", "spatial_score", "temporal_score")
_SCORE_BASES = ("", "spatial_score", "temporal_score")
CURVE_KEYS = ["run", "subject", "modality", "feature_kind", "curve"]
CHRONOLOGY_FILE = "chronology.parquet"
DEFAULT_PROBE_NAME = "brain"


def chronology_file(name: str = DEFAULT_PROBE_NAME) -> str:
    """``chronology.parquet`` for the default probe, ``chronology_<name>.parquet`` else."""
    return CHRONOLOGY_FILE if name == DEFAULT_PROBE_NAME else f"chronology_{name}.parquet"


def replicates_file(chronology: str = CHRONOLOGY_FILE) -> str:
    """Where a chronology's bootstrap resamples go: ``chronology_replicates[_<name>].parquet``."""
    return chronology.replace("chronology", "chronology_replicates", 1)


# ---------------------------------------------------------------------- the file
def read_chronology(path: str | Path) -> pd.DataFrame:
    """Read ``chronology.parquet`` (a clear error when it is missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: train with BrainProbeCallback, or give the run's exports "
            "and --brain to probe them offline"
        )
    return pd.read_parquet(path)


def append_chronology(path: str | Path, rows: pd.DataFrame) -> None:
    """Add ``rows`` to the chronology file atomically, replacing rows of the same steps.

    A step probed again (after a resume from an earlier checkpoint) keeps one row set.
    """
    path = Path(path)
    if path.is_file():
        existing = pd.read_parquet(path)
        existing = existing[~existing["step"].isin(rows["step"].unique())]
        rows = pd.concat([existing, rows], ignore_index=True) if len(existing) else rows
    rows = rows.sort_values("step", kind="stable").reset_index(drop=True)
    with atomic_path(path) as temporary:
        rows.to_parquet(temporary, index=False)


def truncate_chronology(path: str | Path, last_step: int) -> None:
    """Drop rows of steps after ``last_step`` (a resumed run redoes them)."""
    path = Path(path)
    if not path.is_file():
        return
    rows = pd.read_parquet(path)
    kept = rows[rows["step"] <= last_step]
    if len(kept) != len(rows):
        with atomic_path(path) as temporary:
            kept.to_parquet(temporary, index=False)


# ---------------------------------------------------------------------- curves
def metric_score_curves(names: Sequence[str] | pd.Series) -> list[str]:
    """The score curves of metrics other than encoding among ``names`` (``rsa``,
    ``rsa/spatial_score``, ``rsa/temporal_score``...), in order of first appearance."""
    wanted = {
        MetricNames(metric).curve(base)
        for metric in METRICS
        if metric != "encoding"
        for base in _SCORE_BASES
    }
    return [name for name in dict.fromkeys(names) if name in wanted]


def _best_layer_curves(ok: pd.DataFrame, keys: list[str], names: MetricNames) -> pd.DataFrame:
    """Per ROI and MEG window: the best layer's value of one metric (``[m/]roi/V1``...)."""
    layer_rows = ok[(ok["layer"] >= 0) & (ok["metric"] == names.layer) & ok["time"].isna()]
    layer_rows = layer_rows[layer_rows["group"] != "all"]
    best = layer_rows.groupby([*keys, "group"], as_index=False)["value"].max()
    is_window = best["group"].str.endswith("ms")
    prefix = names.curve("x")[:-1]  # "" for encoding, "rsa/" for rsa
    best["curve"] = prefix + np.where(is_window, "window/" + best["group"], "roi/" + best["group"])
    return best.drop(columns="group")


def partition_curve_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The variance-partitioning rows followed over training, with their ``curve`` name.

    Unique and shared variance over all targets, per ROI and per MEG window (not per time
    sample), named by :func:`~brainalign.probe.metric_names.partition_curve`; empty when the
    table has no partition rows. Used by the chronology and the callback's TensorBoard tags.
    """
    if "space" not in table.columns:
        return table.iloc[:0].assign(curve=pd.Series(dtype=str))
    rows = table[table["metric"].isin(PARTITION_REGIONS) & (table["group"] != "time")]
    names = [
        partition_curve(metric, space, int(layer), group)
        for metric, space, layer, group in zip(
            rows["metric"], rows["space"], rows["layer"], rows["group"]
        )
    ]
    return rows.assign(curve=names)


def curves(table: pd.DataFrame, run: str = "run") -> pd.DataFrame:
    """One value per curve and probed step.

    Parameters
    ----------
    table : DataFrame
        A chronology table (failed probes are skipped).
    run : str
        Name of the run, copied into the ``run`` column.

    Returns
    -------
    DataFrame with columns run, subject, modality, feature_kind, curve, step, train_fraction,
    value
    """
    ok = table[table.get("status", "ok") == "ok"] if "status" in table else table
    keys = ["subject", "modality", "feature_kind", "step", "train_fraction"]
    parts = []
    summary = ok[(ok["layer"] < 0) & (ok["group"] == "all")]
    present = set(ok.loc[ok["layer"] >= 0, "metric"])
    for metric in METRICS:
        names = MetricNames(metric)
        if not names.is_encoding and names.layer not in present:
            continue
        for base in _SCORE_BASES:
            rows = summary[summary["metric"] == (names.of(base) if base else names.score)]
            parts.append(rows[[*keys, "value"]].assign(curve=names.curve(base)))
        parts.append(_best_layer_curves(ok, keys, names))
    partitions = partition_curve_rows(ok)
    if not partitions.empty:
        parts.append(partitions[[*keys, "value", "curve"]])
    result = pd.concat(parts, ignore_index=True).assign(run=run)
    result = result.dropna(subset=["value"])
    return result[[*CURVE_KEYS, "step", "train_fraction", "value"]].sort_values(
        [*CURVE_KEYS, "step"], kind="stable", ignore_index=True
    )


def half_time(
    fractions: Sequence[float], values: Sequence[float], definition: HalfTimeDefinition = "final"
) -> float:
    """Training fraction at which a curve first reaches half of its final value (or rise).

    Parameters
    ----------
    fractions : sequence of float
        Training fractions of the probes, strictly increasing.
    values : sequence of float
        The curve at those fractions.
    definition : {"final", "rise"}
        ``final``: threshold ``0.5 * final`` (Study A; needs a positive final value).
        ``rise``: threshold ``first + 0.5 * (final - first)`` (needs final > first), for curves
        that already score well untrained.

    Returns
    -------
    float
        Linear interpolation between the last probe below the threshold and the first at or
        above it; the first fraction if the first probe is already above; NaN when the
        threshold is undefined or never reached.

    Raises
    ------
    ValueError
        If the fractions are not strictly increasing, or for an unknown ``definition``.
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("fractions and values must be 1-d arrays of the same length")
    if not np.all(np.isfinite(x)) or np.any(np.diff(x) <= 0):
        raise ValueError(
            "fractions must be finite and strictly increasing (one probe per fraction); "
            f"got {x.tolist()}"
        )
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) == 0:
        return math.nan
    final, first = y[-1], y[0]
    if definition == "final":
        if final <= 0:
            return math.nan
        threshold = 0.5 * final
    elif definition == "rise":
        if final <= first:
            return math.nan
        threshold = first + 0.5 * (final - first)
    else:
        raise ValueError(f"definition must be 'final' or 'rise', got {definition!r}")
    above = np.flatnonzero(y >= threshold)
    if len(above) == 0:
        return math.nan
    index = int(above[0])
    if index == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[index - 1], x[index], y[index - 1], y[index]
    return float(x0 + (threshold - y0) * (x1 - x0) / (y1 - y0))


def log_fit(fractions: Sequence[float], values: Sequence[float]) -> dict[str, float]:
    """Least-squares fit ``value = intercept + slope * log10(fraction)`` over fractions > 0."""
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    keep = (x > 0) & np.isfinite(y)
    if keep.sum() < 2:
        return {"intercept": math.nan, "slope": math.nan, "r2": math.nan}
    log_x, y = np.log10(x[keep]), y[keep]
    slope, intercept = np.polyfit(log_x, y, 1)
    residual = y - (intercept + slope * log_x)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - np.sum(residual**2) / total if total > 0 else math.nan
    return {"intercept": float(intercept), "slope": float(slope), "r2": float(r2)}


def half_times(curve_table: pd.DataFrame) -> pd.DataFrame:
    """Half times (both definitions), first/final values and log fit of every curve.

    Returns
    -------
    DataFrame with columns run, subject, modality, feature_kind, curve, n_probes,
    first_value, final_value, half_time, half_time_rise, reached, reached_rise,
    log_intercept, log_slope, log_r2
    """
    records = []
    for key, rows in curve_table.groupby(CURVE_KEYS, sort=False):
        rows = rows.sort_values("train_fraction")
        fractions, values = rows["train_fraction"].to_numpy(), rows["value"].to_numpy()
        final = half_time(fractions, values, "final")
        rise = half_time(fractions, values, "rise")
        fit = log_fit(fractions, values)
        records.append(
            {
                **dict(zip(CURVE_KEYS, key)),
                "n_probes": len(rows),
                "first_value": float(values[0]),
                "final_value": float(values[-1]),
                "half_time": final,
                "half_time_rise": rise,
                "reached": bool(np.isfinite(final)),
                "reached_rise": bool(np.isfinite(rise)),
                "log_intercept": fit["intercept"],
                "log_slope": fit["slope"],
                "log_r2": fit["r2"],
            }
        )
    return pd.DataFrame.from_records(records)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.std(x[keep]) == 0 or np.std(y[keep]) == 0:
        return math.nan
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


def roi_correlations(
    times: pd.DataFrame, rois: pd.DataFrame, *, column: str = "half_time"
) -> dict[str, float]:
    """Pearson r of ROI half times with distance from V1 and with each property column.

    Parameters
    ----------
    times : DataFrame
        :func:`half_times` rows of one run/subject/feature kind.
    rois : DataFrame
        ``roi`` plus ``distance_from_v1`` and any numeric property columns.
    """
    roi_times = times[times["curve"].str.startswith("roi/")].assign(
        roi=lambda frame: frame["curve"].str.removeprefix("roi/")
    )
    merged = roi_times.merge(rois, on="roi", how="inner")
    result = {}
    skip = {"roi", "x", "y", "z", "hemi"}
    for name in rois.columns:
        if name in skip or not pd.api.types.is_numeric_dtype(rois[name]):
            continue
        result[name] = _pearson(merged[column].to_numpy(float), merged[name].to_numpy(float))
    return result


def half_time_intervals(replicates: dict[str, pd.DataFrame], level: float = 0.95) -> pd.DataFrame:
    """Bootstrap intervals of every half time, from the curves' resamples at each checkpoint.

    Parameters
    ----------
    replicates : dict of run name to DataFrame
        Rows subject, modality, feature_kind, curve, replicate, value, train_fraction (the
        ``replicates`` of a probe per checkpoint, as the training callback writes them). The
        same resamples at every checkpoint make each resample a curve over training.
    level : float
        Coverage of the percentile intervals.

    Returns
    -------
    DataFrame with columns run, subject, modality, feature_kind, curve, half_time_ci_low,
    half_time_ci_high, half_time_rise_ci_low, half_time_rise_ci_high, n_resamples and
    half_time_defined (the share of resamples whose curve reaches half its final value: the
    interval describes those)
    """
    from brainalign.probe.bootstrap import percentile_interval
    from brainalign.probe.bootstrap_scores import bootstrap_half_time

    records = []
    keys = ["subject", "modality", "feature_kind", "curve"]
    for run, table in replicates.items():
        for key, rows in table.groupby(keys, sort=False):
            grid = rows.pivot_table(
                index="replicate", columns="train_fraction", values="value", aggfunc="first"
            )  # (n_resamples, n_checkpoints)
            if grid.shape[1] < 2:
                continue
            record = {"run": run, **dict(zip(keys, key)), "n_resamples": int(grid.shape[0])}
            fractions = grid.columns.to_numpy(dtype=np.float64)
            for definition, name in (("final", "half_time"), ("rise", "half_time_rise")):
                boot = bootstrap_half_time(grid.to_numpy(), fractions, definition)
                interval = percentile_interval(boot, level)
                record[f"{name}_ci_low"] = float(interval.low)
                record[f"{name}_ci_high"] = float(interval.high)
                if definition == "final":
                    record["half_time_defined"] = float(np.isfinite(boot).mean())
            records.append(record)
    columns = [*CURVE_KEYS, "half_time_ci_low", "half_time_ci_high"]
    columns += ["half_time_rise_ci_low", "half_time_rise_ci_high", "n_resamples"]
    columns += ["half_time_defined"]
    return pd.DataFrame.from_records(records, columns=columns)


def analyse(
    tables: dict[str, pd.DataFrame],
    rois: dict[str, pd.DataFrame] | None = None,
    *,
    replicates: dict[str, pd.DataFrame] | None = None,
    level: float = 0.95,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Half times and correlations for several runs.

    Parameters
    ----------
    tables : dict of run name to chronology table
    rois : dict of subject to ROI table (``roi``, ``distance_from_v1``, properties), optional
    replicates : dict of run name to the curves' bootstrap resamples, optional
        Adds the half times' intervals (:func:`half_time_intervals`) as columns.
    level : float

    Returns
    -------
    half_time_table : DataFrame (see :func:`half_times`)
    summary : dict
        Per run and subject: first/last spatial and temporal scores, half times of the three
        scores, ROI correlations for both half-time definitions.
    curve_table : DataFrame (see :func:`curves`)
    """
    curve_table = pd.concat(
        [curves(table, run) for run, table in tables.items()], ignore_index=True
    )
    times = half_times(curve_table)
    if replicates:
        intervals = half_time_intervals(replicates, level)
        times = times.merge(intervals, on=CURVE_KEYS, how="left")
    summary: dict[str, Any] = {}
    for (run, subject, modality, kind), rows in times.groupby(
        ["run", "subject", "modality", "feature_kind"], sort=False
    ):
        entry = summary.setdefault(run, {}).setdefault(f"{subject}/{modality}/{kind}", {})
        by_curve = rows.set_index("curve")
        for curve in [*SCORE_CURVES, *metric_score_curves(rows["curve"])]:
            if curve in by_curve.index:
                entry[curve] = {
                    "first": float(by_curve.loc[curve, "first_value"]),
                    "last": float(by_curve.loc[curve, "final_value"]),
                    "half_time": _none_if_nan(by_curve.loc[curve, "half_time"]),
                    "half_time_rise": _none_if_nan(by_curve.loc[curve, "half_time_rise"]),
                }
        roi_rows = rows[rows["curve"].str.startswith("roi/")]
        if len(roi_rows):
            entry["roi_half_time"] = {
                curve.removeprefix("roi/"): _none_if_nan(value)
                for curve, value in zip(roi_rows["curve"], roi_rows["half_time"])
            }
            entry["roi_half_time_rise"] = {
                curve.removeprefix("roi/"): _none_if_nan(value)
                for curve, value in zip(roi_rows["curve"], roi_rows["half_time_rise"])
            }
            if rois and subject in rois:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    entry["roi_half_time_correlations"] = {
                        key: _none_if_nan(value)
                        for key, value in roi_correlations(rows, rois[subject]).items()
                    }
                    entry["roi_half_time_rise_correlations"] = {
                        key: _none_if_nan(value)
                        for key, value in roi_correlations(
                            rows, rois[subject], column="half_time_rise"
                        ).items()
                    }
    return times, summary, curve_table


def _none_if_nan(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


ROI_FOLDER = "brain_rois"


def write_roi_tables(targets: Sequence[Any], run_dir: str | Path) -> None:
    """``<run>/brain_rois/<subject>.csv``: ROI centroids, distance from V1, properties.

    ``brainalign chronology`` and study reports read them to correlate ROI half times with
    distance and properties without reloading the brain data. ``targets`` are the probe's
    :class:`~brainalign.probe.run.ProbeTarget` objects.
    """
    from brainalign.probe.rois import distance_from_v1

    for target in targets:
        rois = target.brain.rois
        if target.brain.modality != "fmri" or rois is None or rois.empty:
            continue
        table = rois.copy()
        if "V1" in set(table["roi"].astype(str)):
            table["distance_from_v1"] = table["roi"].map(distance_from_v1(table))
        with atomic_path(Path(run_dir) / ROI_FOLDER / f"{target.brain.subject}.csv") as temporary:
            table.to_csv(temporary, index=False)
