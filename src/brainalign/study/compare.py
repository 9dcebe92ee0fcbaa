"""The statistics of a study report: level comparisons, chance levels and trends.

All of them read the chronology curves of :mod:`brainalign.study.aggregate` (one value per run,
subject, curve and checkpoint: ``encoding``, ``spatial_score``, ``temporal_score``,
``roi/<ROI>``, ``window/<label>``) and the curves' bootstrap resamples.

- **Level comparisons** (:func:`compare_levels`): for every factor, every pair of its levels
  and every combination of the other factors' levels (seeds averaged), at every fraction of
  training both runs were probed at (matched fractions), for every curve:
  paired across subjects with the Wilcoxon signed-rank test (effect sizes: mean difference,
  rank-biserial, Cohen's dz; with fewer than 6 subjects its p cannot reach 0.05, which the
  ``note`` says), and within each subject with a sign-flip permutation test across the ROIs
  (fMRI) or MEG windows of the paired best-layer differences, plus a paired bootstrap over
  stimuli (the same resamples for both runs) for each single curve. Benjamini-Hochberg FDR
  over each family: the three scores, the ROIs, the windows, per comparison and fraction.
- **Chance levels** (:func:`chance_levels`): the spatial score against permuted ROI labels,
  the temporal score against permuted layer order, per run, subject and checkpoint.
- **Trends** (:func:`trends`): each final score against log10 of a numeric factor (model
  parameters, training steps, a language cell's context, or ``report.factor_values``), across
  subjects (:func:`numeric_levels` says which factors are numeric). Context length may be 0
  (no context, Study C's first level): its trend is against ``log10(context_words + 1)``, so
  that 0 stays in the test (at 0 on the log axis) and each tenfold longer context is about one
  unit; ``trends.csv`` says so (``against = context_words+1``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from brainalign.study.aggregate import StudyResults, run_key
from brainalign.study.chance import (
    spatial_score_permutation_test,
    temporal_score_permutation_test,
)
from brainalign.study.comparisons import fdr_bh, sign_flip_test, wilcoxon_paired
from brainalign.study.trends import trend_test

__all__ = [
    "NumericLevels",
    "chance_levels",
    "compare_levels",
    "curve_family",
    "numeric_levels",
    "trends",
]

SCORES = ("encoding", "spatial_score", "temporal_score")


def curve_family(curve: str) -> str:
    """``scores``, ``rois`` or ``windows`` (plus a metric prefix such as ``rsa/``)."""
    parts = curve.split("/")
    head = parts[0] if parts[0] not in ("roi", "window") and len(parts) > 1 else ""
    if "roi" in parts:
        return f"{head}/rois" if head else "rois"
    if "window" in parts:
        return f"{head}/windows" if head else "windows"
    return f"{head}/scores" if head else "scores"


def _contexts(results: StudyResults, factor: str) -> list[dict[str, Any]]:
    """Combinations of the other factors' levels (seeds are averaged, not a context)."""
    others = [f for f in results.factors if f not in (factor, "seed")]
    runs = results.runs
    if not others:
        return [{}]
    combos = runs[others].drop_duplicates().to_dict("records")
    return [dict(combo) for combo in combos]


def _select(frame: pd.DataFrame, levels: Mapping[str, Any]) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for name, value in levels.items():
        mask &= (frame[name].astype(str) == str(value)).to_numpy()
    return frame[mask]


def compare_levels(
    results: StudyResults,
    *,
    alpha: float = 0.05,
    n_permutations: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every pairwise level comparison of every factor at matched fractions of training.

    Returns
    -------
    DataFrame
        One row per (factor, level_a, level_b, context, train_fraction, feature_kind,
        modality, curve, test): ``test`` is ``wilcoxon`` (across subjects), ``sign_flip``
        (within a subject, across the family's curves) or ``bootstrap`` (within a subject, one
        curve); ``subject`` is ``all`` for the across-subject test. Columns ``mean_difference``,
        ``effect_size`` (rank-biserial for Wilcoxon, Cohen's dz otherwise), ``cohens_dz``,
        ``p_value``, ``q_value``, ``rejected``, ``n``, ``note``.
    """
    curves = preferred_source(results.curves)
    records: list[dict[str, Any]] = []
    for factor in [f for f in results.factors if f != "seed"]:
        levels = list(dict.fromkeys(results.runs[factor].dropna().astype(str)))
        for level_a, level_b in itertools.combinations(levels, 2):
            for context in _contexts(results, factor):
                a = _select(curves, {**context, factor: level_a})
                b = _select(curves, {**context, factor: level_b})
                if a.empty or b.empty:
                    continue
                base = {
                    "factor": factor,
                    "level_a": level_a,
                    "level_b": level_b,
                    "context": ", ".join(f"{k}={v}" for k, v in context.items()) or "-",
                }
                records += _compare_pair(
                    results, a, b, base, n_permutations=n_permutations, seed=seed
                )
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    family_keys = ["factor", "level_a", "level_b", "context", "train_fraction", "feature_kind"]
    family_keys += ["modality", "test", "subject", "family"]
    table["q_value"] = np.nan
    table["rejected"] = False
    for _, rows in table.groupby(family_keys, dropna=False, sort=False):
        correction = fdr_bh(rows["p_value"].to_numpy(dtype=np.float64), alpha)
        table.loc[rows.index, "q_value"] = correction.q_values
        table.loc[rows.index, "rejected"] = correction.rejected
    return table


def preferred_source(curves: pd.DataFrame) -> pd.DataFrame:
    """Each run's in-training curves, or its export probes' where it was not probed in
    training (a run probed both ways is compared on the probes made during training)."""
    trained = curves.groupby("run")["source"].transform(lambda source: (source == "training").any())
    return curves[(curves["source"] == "training") | ~trained]


def _by_subject(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged value per (fraction, kind, modality, subject, curve)."""
    keys = ["train_fraction", "feature_kind", "modality", "subject", "curve"]
    return frame.groupby(keys, as_index=False)["value"].mean()


def _compare_pair(
    results: StudyResults,
    a: pd.DataFrame,
    b: pd.DataFrame,
    base: dict[str, Any],
    *,
    n_permutations: int,
    seed: int,
) -> list[dict[str, Any]]:
    keys = ["train_fraction", "feature_kind", "modality", "subject", "curve"]
    paired = _by_subject(a).merge(_by_subject(b), on=keys, suffixes=("_a", "_b"))
    paired["train_fraction"] = paired["train_fraction"].round(6)
    records: list[dict[str, Any]] = []
    for (fraction, kind, modality, curve), rows in paired.groupby(
        ["train_fraction", "feature_kind", "modality", "curve"], sort=False
    ):
        values_a = rows["value_a"].to_numpy(dtype=np.float64)
        values_b = rows["value_b"].to_numpy(dtype=np.float64)
        common = {**base, "train_fraction": fraction, "feature_kind": kind, "modality": modality}
        if len(rows) >= 2:
            result = wilcoxon_paired(values_a, values_b)
            records.append(
                {
                    **common,
                    "curve": curve,
                    "family": curve_family(curve),
                    "test": "wilcoxon",
                    "subject": "all",
                    "mean_difference": float(result.mean_difference),
                    "effect_size": float(result.rank_biserial),
                    "cohens_dz": float(result.cohens_dz),
                    "p_value": float(result.p_value),
                    "n": len(rows),
                    "note": result.note,
                }
            )
        for row in rows.itertuples(index=False):
            boot = _paired_bootstrap(results, a, b, row.subject, fraction, kind, modality, curve)
            if boot is not None:
                records.append(
                    {
                        **common,
                        "curve": curve,
                        "family": curve_family(curve),
                        "test": "bootstrap",
                        "subject": row.subject,
                        "mean_difference": float(row.value_a - row.value_b),
                        **boot,
                    }
                )
    # within subject, across the curves of a family (ROIs, windows): sign flips
    for (fraction, kind, modality, subject), rows in paired.groupby(
        ["train_fraction", "feature_kind", "modality", "subject"], sort=False
    ):
        for family, members in rows.groupby(rows["curve"].map(curve_family), sort=False):
            if family.endswith("scores") or len(members) < 3:
                continue
            differences = (members["value_a"] - members["value_b"]).to_numpy(dtype=np.float64)
            result = sign_flip_test(differences, n_permutations=n_permutations, seed=seed)
            records.append(
                {
                    **base,
                    "train_fraction": fraction,
                    "feature_kind": kind,
                    "modality": modality,
                    "curve": f"{family} (mean)",
                    "family": f"{family} (mean)",
                    "test": "sign_flip",
                    "subject": subject,
                    "mean_difference": float(result.mean_difference),
                    "effect_size": float(result.cohens_dz),
                    "cohens_dz": float(result.cohens_dz),
                    "p_value": float(result.p_value),
                    "n": int(result.n_units),
                    "note": "exact" if result.exact else f"{result.n_permutations} sign patterns",
                }
            )
    return records


def _paired_bootstrap(
    results: StudyResults,
    a: pd.DataFrame,
    b: pd.DataFrame,
    subject: str,
    fraction: float,
    kind: str,
    modality: str,
    curve: str,
) -> dict[str, Any] | None:
    """Two-sided paired bootstrap p of one curve's difference, when both runs have resamples.

    Both runs were resampled with the same seed on the same stimuli, so resample ``b`` of
    each holds the same stimuli: the difference of the two is a resample of the difference.
    With seeds, the first seed's runs are used.
    """
    draws = []
    for side in (a, b):
        rows = side[(side["subject"] == subject) & (side["curve"] == curve)]
        if rows.empty:
            return None
        first = rows.iloc[0]
        table = results.replicates.get(run_key(first["run"], first["source"]))
        if table is None:
            return None
        picked = table[
            (table["subject"] == subject)
            & (table["feature_kind"] == kind)
            & (table["modality"] == modality)
            & (table["curve"] == curve)
            & (table["train_fraction"].round(6) == round(float(fraction), 6))
        ].sort_values("replicate")
        if picked.empty:
            return None
        draws.append(picked["value"].to_numpy(dtype=np.float64))
    if len(draws[0]) != len(draws[1]):
        return None
    difference = draws[0] - draws[1]
    difference = difference[np.isfinite(difference)]
    if len(difference) < 20:
        return None
    below = (np.sum(difference <= 0) + 1) / (len(difference) + 1)
    above = (np.sum(difference >= 0) + 1) / (len(difference) + 1)
    spread = float(np.std(difference, ddof=1))
    return {
        "effect_size": float(np.mean(difference) / spread) if spread > 0 else math.nan,
        "cohens_dz": math.nan,
        "p_value": float(min(1.0, 2 * min(below, above))),
        "n": len(difference),
        "note": "paired bootstrap over stimuli",
    }


def chance_levels(
    results: StudyResults, *, n_permutations: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Permutation chance levels of every spatial and temporal score in the study.

    Returns
    -------
    DataFrame
        run, source, subject, modality, feature_kind, step, train_fraction, score, value,
        p_value, null_95 (the null distribution's 95th percentile), n_permutations.
    """
    scores = results.scores
    ok = scores[scores.get("status", "ok") == "ok"] if "status" in scores else scores
    keys = ["run", "source", "subject", "modality", "feature_kind", "step", "train_fraction"]
    records = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key, rows in ok.groupby(keys, sort=False, dropna=False):
            record = dict(zip(keys, key))
            modality = record["modality"]
            if modality == "fmri":
                result = _spatial_chance(results, rows, record["subject"], n_permutations, seed)
                score = "spatial_score"
            else:
                result = _temporal_chance(rows, n_permutations, seed)
                score = "temporal_score"
            if result is not None:
                records.append({**record, "score": score, **result})
    return pd.DataFrame.from_records(records)


def _spatial_chance(
    results: StudyResults, rows: pd.DataFrame, subject: str, n_permutations: int, seed: int
) -> dict[str, Any] | None:
    rois = results.rois.get(str(subject))
    best = rows[(rows["metric"] == "best_depth") & (rows["layer"] < 0)]
    if rois is None or "distance_from_v1" not in rois or len(best) < 3:
        return None
    distance = rois.set_index(rois["roi"].astype(str))["distance_from_v1"]
    best = best[best["group"].astype(str).isin(distance.index)]
    if len(best) < 3:
        return None
    test = spatial_score_permutation_test(
        distance.loc[best["group"].astype(str)].to_numpy(dtype=np.float64),
        best["value"].to_numpy(dtype=np.float64),
        n_permutations=n_permutations,
        seed=seed,
    )
    return _chance_record(test)


def _temporal_chance(rows: pd.DataFrame, n_permutations: int, seed: int) -> dict[str, Any] | None:
    peaks = rows[(rows["metric"] == "t_max") & (rows["layer"] < 0)]
    layer_depth = rows[(rows["metric"] == "r") & (rows["layer"] >= 0)].drop_duplicates("layer")
    depth_of = dict(zip(layer_depth["layer"], layer_depth["depth"]))
    layers = peaks["group"].astype(str).str.removeprefix("layer_").astype(int)
    depths = np.array([depth_of.get(layer, np.nan) for layer in layers], dtype=np.float64)
    if len(peaks) < 3 or not np.isfinite(depths).all():
        return None
    test = temporal_score_permutation_test(
        depths, peaks["value"].to_numpy(dtype=np.float64), n_permutations=n_permutations, seed=seed
    )
    return _chance_record(test)


def _chance_record(test: Any) -> dict[str, Any]:
    return {
        "value": float(test.observed),
        "p_value": float(test.p_value),
        "null_95": float(test.null_95th),
        "n_permutations": int(test.n_permutations),
    }


def trends(results: StudyResults, factor_values: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Each final score against log10 of every numeric factor, across subjects.

    A factor is numeric when ``factor_values`` gives its levels' values, or when its levels
    differ in the runs' model parameters (``n_parameters``), ``max_steps`` or
    ``context_words`` (see :func:`numeric_levels`).
    """
    runs = results.runs
    final = _final_curves(results)
    records = []
    for factor in [f for f in results.factors if f != "seed"]:
        numeric = numeric_levels(runs, factor, factor_values.get(factor))
        if numeric is None:
            continue
        points = final.assign(level_value=final[factor].astype(str).map(numeric.values)).dropna(
            subset=["level_value"]
        )
        for (kind, modality, curve), rows in points.groupby(
            ["feature_kind", "modality", "curve"], sort=False
        ):
            if curve not in SCORES and not curve.endswith(SCORES):
                continue
            if rows["level_value"].nunique() < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                result = trend_test(
                    rows["level_value"].to_numpy(dtype=np.float64),
                    rows["value"].to_numpy(dtype=np.float64),
                    subjects=rows["subject"].astype(str).to_numpy(),
                )
            records.append(
                {
                    "factor": factor,
                    "against": numeric.against,
                    "feature_kind": kind,
                    "modality": modality,
                    "curve": curve,
                    **{key: _plain(value) for key, value in vars(result).items()},
                }
            )
    return pd.DataFrame.from_records(records)


def _plain(value: Any) -> Any:
    """A scalar or a list of plain floats (``subject_slopes``), as a CSV cell reads them."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [round(float(item), 6) for item in value]
    return value


@dataclass(frozen=True)
class NumericLevels:
    """The positive numbers a factor's levels stand for (trends use their log10).

    Attributes
    ----------
    against : str
        What they are, as ``trends.csv`` names it: ``parameters``, ``steps``,
        ``context_words+1`` or ``value`` (``report.factor_values``).
    values : dict of level to float
    label : str
        Axis label of the report's figures.
    """

    against: str
    values: dict[str, float]
    label: str


#: Run-table columns that make a factor numeric: (column, against, offset before log10, label).
_NUMERIC_SOURCES = (
    ("n_parameters", "parameters", 0.0, "parameters"),
    ("max_steps", "steps", 0.0, "training steps"),
    ("context_words", "context_words+1", 1.0, "context words + 1"),
)


def numeric_levels(
    runs: pd.DataFrame, factor: str, given: Mapping[str, float] | None = None
) -> NumericLevels | None:
    """The numbers of ``factor``'s levels, or None when the factor is categorical.

    ``given`` (``report.factor_values``) wins; otherwise the first run-table column of
    ``n_parameters``, ``max_steps``, ``context_words`` that the factor sets: one value in all
    runs of each level, a different one per level, every level known, at least two levels (a
    context factor crossed with a model factor is numeric by context, not by parameters).
    Context lengths get 1 added (a context of 0 words).
    """
    if given:
        values = {str(level): float(value) for level, value in given.items()}
        return NumericLevels("value", values, factor)
    levels = runs[factor].astype(str)
    for column, against, offset, label in _NUMERIC_SOURCES:
        if column not in runs:
            continue
        numbers = pd.to_numeric(runs[column], errors="coerce")
        if (numbers.groupby(levels).nunique() > 1).any():
            continue  # the factor does not set this column
        by_level = numbers.groupby(levels).first()
        if by_level.notna().all() and by_level.nunique() == len(by_level) > 1:
            values = {level: float(value) + offset for level, value in by_level.items()}
            return NumericLevels(against, values, label)
    return None


def _final_curves(results: StudyResults) -> pd.DataFrame:
    """Each run's curves at its last probed fraction (seeds averaged per subject)."""
    curves = preferred_source(results.curves)
    last = curves.groupby(["run", "source"])["train_fraction"].transform("max")
    final = curves[curves["train_fraction"] == last]
    keys = [f for f in results.factors if f != "seed"]
    keys += ["feature_kind", "modality", "subject", "curve"]
    return final.groupby(keys, as_index=False)["value"].mean()


def summarise_final(results: StudyResults, level: float = 0.95) -> pd.DataFrame:
    """Each run's final value of every curve with its bootstrap interval (when resampled)."""
    from brainalign.probe.bootstrap import percentile_interval

    curves = preferred_source(results.curves)
    last = curves.groupby(["run", "source"])["train_fraction"].transform("max")
    final = curves[curves["train_fraction"] == last].copy()
    lows, highs = [], []
    for row in final.itertuples(index=False):
        table = results.replicates.get(run_key(row.run, row.source))
        low = high = math.nan
        if table is not None:
            picked = table[
                (table["subject"] == row.subject)
                & (table["modality"] == row.modality)
                & (table["feature_kind"] == row.feature_kind)
                & (table["curve"] == row.curve)
                & (table["train_fraction"].round(6) == round(float(row.train_fraction), 6))
            ]
            if not picked.empty:
                interval = percentile_interval(picked["value"].to_numpy(), level)
                low, high = float(interval.low), float(interval.high)
        lows.append(low)
        highs.append(high)
    final["ci_low"], final["ci_high"] = lows, highs
    return final.reset_index(drop=True)
