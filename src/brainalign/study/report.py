"""``brainalign study report DIR``: one long table, the statistics and figures, and report.md.

Writes into ``DIR/report/`` (atomically):

- ``scores.parquet``: every run x checkpoint x subject x metric, with factor columns;
- ``final.csv``: each run's final value of every curve with its 95% bootstrap interval;
- ``half_times.csv``: half times of every curve of every run, with bootstrap intervals;
- ``comparisons.csv``: every pairwise level comparison at matched fractions of training
  (Wilcoxon across subjects, sign flips and paired bootstraps within subject, BH-FDR q values,
  effect sizes);
- ``chance.csv``: permutation chance levels of the spatial and temporal scores;
- ``trends.csv``: each final score against log10 of numeric factors;
- ``figures/``: scores by factor (against a numeric factor's values on a log axis, with the
  trend test's slope and p: model parameters, context length), chronology curves per level,
  ROI half time against distance and ROI properties, level heatmaps;
- ``report.md``: all of it gathered, readable offline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from brainalign.probe.chronology import analyse
from brainalign.study.aggregate import StudyResults, collect, run_key
from brainalign.study.compare import (
    SCORES,
    chance_levels,
    compare_levels,
    numeric_levels,
    preferred_source,
    summarise_final,
    trends,
)
from brainalign.study.figures import (
    curves_by_level,
    half_time_scatter,
    level_heatmap,
    score_by_factor,
    score_by_value,
)
from brainalign.utils.atomic import atomic_directory

__all__ = ["write_report"]


def _study_settings(study_dir: Path) -> dict[str, Any]:
    """The report block of the study file the folder was made from (defaults otherwise)."""
    from brainalign.study.config import ReportConfig

    settings = ReportConfig()
    return {
        "alpha": settings.alpha,
        "n_permutations": settings.n_permutations,
        "seed": settings.seed,
        "factor_values": settings.factor_values,
        **_read_report_block(study_dir),
    }


def _read_report_block(study_dir: Path) -> dict[str, Any]:
    import json

    path = study_dir / "study.json"
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("report") or {})


def write_report(study_dir: Path, *, out: Path | None = None, overwrite: bool = False) -> Path:
    """Gather the study's runs and write the report folder; returns it."""
    study_dir = Path(study_dir)
    out = out or study_dir / "report"
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    started = time.perf_counter()
    results = collect(study_dir)
    settings = _study_settings(study_dir)
    final = summarise_final(results)
    tables = {
        run_key(run, source): rows
        for (run, source), rows in results.scores.groupby(["run", "source"], sort=False)
    }
    times, _, _ = analyse(tables, results.rois, replicates=results.replicates)
    comparisons = compare_levels(
        results,
        alpha=settings["alpha"],
        n_permutations=settings["n_permutations"],
        seed=settings["seed"],
    )
    chance = chance_levels(
        results, n_permutations=settings["n_permutations"], seed=settings["seed"]
    )
    trend_table = trends(results, settings["factor_values"])
    statistics_s = time.perf_counter() - started
    with atomic_directory(out, overwrite=overwrite) as folder:
        results.scores.to_parquet(folder / "scores.parquet", index=False)
        final.to_csv(folder / "final.csv", index=False)
        times.to_csv(folder / "half_times.csv", index=False)
        comparisons.to_csv(folder / "comparisons.csv", index=False)
        chance.to_csv(folder / "chance.csv", index=False)
        trend_table.to_csv(folder / "trends.csv", index=False)
        figures = _figures(
            results,
            final,
            times,
            folder / "figures",
            trend_table=trend_table,
            factor_values=settings["factor_values"],
        )
        (folder / "report.md").write_text(
            _markdown(
                results, final, times, comparisons, chance, trend_table, figures, statistics_s
            )
        )
    return out


def _save(figure: Any, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(Path(path.parent.name) / path.name)


def _trend_titles(trend_table: pd.DataFrame, factor: str, modality: str) -> dict[str, str]:
    """Per curve, the trend test of ``factor`` in words (the first feature kind's)."""
    if trend_table.empty:
        return {}
    rows = trend_table[(trend_table["factor"] == factor) & (trend_table["modality"] == modality)]
    titles = {}
    for row in rows.drop_duplicates("curve").itertuples(index=False):
        titles[row.curve] = (
            f"trend: slope {row.slope:+.3f} per decade, p = {row.slope_p:.2g}\n"
            f"({row.n_subjects} subjects; against {row.against})"
        )
    return titles


def _figures(
    results: StudyResults,
    final: pd.DataFrame,
    times: pd.DataFrame,
    folder: Path,
    *,
    trend_table: pd.DataFrame,
    factor_values: dict[str, dict[str, float]],
) -> list[tuple[str, str]]:
    """Draw every figure; returns (caption, relative path) pairs for report.md."""
    drawn: list[tuple[str, str]] = []
    factors = [f for f in results.factors if f != "seed"]
    curves = preferred_source(results.curves)
    present = [curve for curve in SCORES if curve in set(final["curve"])]
    for index, factor in enumerate(factors):
        other = next((f for f in factors if f != factor), None)
        numeric = numeric_levels(results.runs, factor, factor_values.get(factor))
        for modality, rows in final.groupby("modality", sort=False):
            panels = [curve for curve in present if curve in set(rows["curve"])]
            if not panels:
                continue
            if numeric is None:
                figure = score_by_factor(rows, factor, panels, lines=other)
                caption = f"Final {modality} scores by {factor} (lines: {other or '-'})"
            else:
                figure = score_by_value(
                    rows,
                    factor,
                    numeric.values,
                    panels,
                    label=numeric.label,
                    lines=other,
                    titles=_trend_titles(trend_table, factor, modality),
                )
                caption = (
                    f"Final {modality} scores against {numeric.label} (log axis, factor "
                    f"{factor}; lines: {other or '-'}), with the trend test"
                )
            path = _save(figure, folder / f"scores_by_{factor}_{modality}.png")
            drawn.append((caption, path))
        for curve in present:
            rows = curves[curves["curve"] == curve]
            for modality, part in rows.groupby("modality", sort=False):
                figure = curves_by_level(part, factor, curve)
                path = _save(figure, folder / f"curves_{curve}_{modality}_by_{factor}.png")
                drawn.append((f"{curve} ({modality}) over training, by {factor}", path))
        if index == 0 and len(factors) >= 2:
            for curve in present:
                for modality, rows in final.groupby("modality", sort=False):
                    if curve not in set(rows["curve"]):
                        continue
                    figure = level_heatmap(rows, factors[0], factors[1], curve)
                    path = _save(figure, folder / f"heatmap_{curve}_{modality}.png")
                    drawn.append((f"{curve} ({modality}): {factors[0]} x {factors[1]}", path))
    for (run, subject), rows in times.groupby(["run", "subject"], sort=False):
        rois = results.rois.get(str(subject))
        if rois is None or "distance_from_v1" not in rois:
            continue
        if not rows["curve"].str.startswith("roi/").any() or rows["half_time"].notna().sum() < 3:
            continue
        figure = half_time_scatter(rows, rois, title=f"{run}: {subject}")
        path = _save(figure, folder / f"half_time_vs_rois_{_file_part(run)}_{subject}.png")
        drawn.append((f"ROI half times of {run} ({subject}) against distance and properties", path))
    return drawn


def _file_part(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("._") or "run"


def _markdown(
    results: StudyResults,
    final: pd.DataFrame,
    times: pd.DataFrame,
    comparisons: pd.DataFrame,
    chance: pd.DataFrame,
    trend_table: pd.DataFrame,
    figures: list[tuple[str, str]],
    statistics_s: float,
) -> str:
    runs = results.runs
    lines = [
        "# Study report",
        "",
        f"{len(runs)} runs ({runs['status'].value_counts().to_dict()}); factors: "
        f"{', '.join(results.factors)}. Statistics took {statistics_s:.1f} s.",
        "",
        "## Runs",
        "",
        _table(runs[["run", "kind", *results.factors, "status", *_numbers(runs)]]),
        "",
        "## Final scores (95% bootstrap intervals over stimuli)",
        "",
        _table(
            final[final["curve"].isin(SCORES)][
                [
                    "run",
                    "subject",
                    "modality",
                    "feature_kind",
                    "curve",
                    "train_fraction",
                    "value",
                    "ci_low",
                    "ci_high",
                ]
            ]
        ),
        "",
        "## Half times (fraction of training; 95% bootstrap intervals)",
        "",
    ]
    columns = ["run", "subject", "modality", "curve", "half_time"]
    columns += [
        column
        for column in ("half_time_ci_low", "half_time_ci_high", "half_time_defined")
        if column in times
    ]
    lines += [_table(times[columns]), ""]
    lines += ["## Level comparisons (BH-FDR within each family)", ""]
    if comparisons.empty:
        lines.append("No factor has two levels with completed runs in the same context.")
    else:
        shown = comparisons[comparisons["test"] != "bootstrap"]
        columns = ["factor", "level_a", "level_b", "context", "train_fraction", "modality"]
        columns += ["curve", "test", "subject", "mean_difference", "effect_size", "p_value"]
        columns += ["q_value", "rejected", "n", "note"]
        lines.append(_table(shown[columns].head(60)))
        lines.append("")
        lines.append(
            f"{len(comparisons)} tests in comparisons.csv ({int(comparisons['rejected'].sum())} "
            "rejected at the FDR level); paired bootstraps per curve and subject are there too."
        )
    lines += ["", "## Chance levels (permutations)", ""]
    lines.append(_table(chance) if not chance.empty else "No spatial or temporal score to test.")
    lines += ["", "## Trends against log10 of numeric factors", ""]
    lines.append(_table(trend_table) if not trend_table.empty else "No numeric factor.")
    lines += ["", "## Figures", ""]
    for caption, path in figures:
        lines += [f"### {caption}", "", f"![{caption}]({path})", ""]
    return "\n".join(lines) + "\n"


def _cell(value: Any, digits: int = 3) -> str:
    """One Markdown cell: empty for a missing value, lists (per-subject slopes) as numbers."""
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(f"{float(item):.{digits}g}" for item in value)
    return "" if pd.isna(value) else str(value)


def _numbers(runs: pd.DataFrame) -> list[str]:
    """The numeric run columns that hold something (context_words only in language studies)."""
    columns = [column for column in ("n_parameters", "max_steps") if column in runs]
    if "context_words" in runs and runs["context_words"].notna().any():
        columns.append("context_words")
    return columns


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a Markdown table (no extra dependency: pandas' to_markdown needs one)."""
    if frame.empty:
        return "(none)"
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}g}")
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    body = ["| " + " | ".join(map(_cell, row)) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])
