"""Chronology analysis: half times, log fits, curves from the long table, ROI correlations, file."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from brainalign.probe.chronology import (
    analyse,
    append_chronology,
    curves,
    half_time,
    half_times,
    log_fit,
    read_chronology,
    truncate_chronology,
)

COLUMNS = ["subject", "modality", "feature_kind", "layer", "depth", "group", "time", "metric"]


# ---------------------------------------------------------------------- half_time
def test_half_time_interpolates_between_the_probes_around_the_threshold():
    # final 0.8 -> threshold 0.4, crossed between 0.2 (0.2) and 0.5 (0.6): 0.2 + 0.3 * 0.5
    assert half_time([0.0, 0.2, 0.5, 1.0], [0.0, 0.2, 0.6, 0.8]) == pytest.approx(0.35)


def test_half_time_lands_on_a_probe_that_equals_the_threshold():
    assert half_time([0.0, 0.25, 1.0], [0.1, 0.5, 1.0]) == pytest.approx(0.25)


def test_half_time_is_the_first_fraction_when_the_first_probe_is_already_above():
    assert half_time([0.1, 0.5, 1.0], [0.6, 0.7, 1.0]) == pytest.approx(0.1)


def test_half_time_uses_the_first_crossing_even_if_the_curve_dips_later():
    # threshold 0.5: first reached at 0.3 (interpolated 0.2 -> 0.4), the dip below is ignored
    value = half_time([0.0, 0.2, 0.4, 0.6, 1.0], [0.0, 0.4, 0.6, 0.1, 1.0])
    assert value == pytest.approx(0.2 + 0.2 * (0.5 - 0.4) / (0.6 - 0.4))


def test_half_time_not_reached_is_nan():
    # the last probe is the final value, so only a final <= 0 can be "never reached" in
    # the final definition; with the rise definition a falling curve never rises
    assert math.isnan(half_time([0.0, 0.5, 1.0], [0.5, 0.3, 0.2], definition="rise"))


@pytest.mark.parametrize("final", [0.0, -0.2])
def test_half_time_with_a_final_value_at_or_below_zero_is_nan(final):
    assert math.isnan(half_time([0.0, 0.5, 1.0], [-0.1, 0.3, final]))


def test_half_time_rise_definition_measures_half_the_gain_since_the_first_probe():
    fractions, values = [0.0, 0.5, 1.0], [0.4, 0.5, 0.8]
    # final definition: threshold 0.4 is already met at the first probe
    assert half_time(fractions, values, definition="final") == pytest.approx(0.0)
    # rise: threshold 0.4 + 0.5 * 0.4 = 0.6, between 0.5 (0.5) and 1.0 (0.8)
    assert half_time(fractions, values, definition="rise") == pytest.approx(0.5 + 0.5 / 3)


def test_half_time_rise_without_a_gain_is_nan():
    assert math.isnan(half_time([0.0, 1.0], [0.5, 0.5], definition="rise"))


def test_half_time_skips_missing_values():
    # the NaN probe (a failed probe) is dropped; interpolation runs from 0.2 to 1.0
    value = half_time([0.0, 0.2, 0.5, 1.0], [0.0, 0.2, math.nan, 1.0])
    assert value == pytest.approx(0.2 + 0.8 * (0.5 - 0.2) / (1.0 - 0.2))
    assert math.isnan(half_time([0.0, 1.0], [math.nan, math.nan]))


@pytest.mark.parametrize("fractions", [[0.0, 1.0, 0.5], [0.0, 0.5, 0.5], [0.0, math.nan, 1.0]])
def test_half_time_rejects_fractions_that_do_not_strictly_increase(fractions):
    with pytest.raises(ValueError, match="strictly increasing"):
        half_time(fractions, [0.0, 0.5, 1.0])


def test_half_time_rejects_bad_shapes_and_definitions():
    with pytest.raises(ValueError, match="same length"):
        half_time([0.0, 1.0], [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="definition"):
        half_time([0.0, 1.0], [0.0, 1.0], definition="median")


# ---------------------------------------------------------------------- log_fit
def test_log_fit_recovers_a_planted_line_in_log_fraction():
    fractions = np.array([0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0])  # 0 cannot be on a log axis
    values = 0.3 + 0.07 * np.log10(np.where(fractions > 0, fractions, 1.0))
    values[0] = 99.0  # must be ignored
    fit = log_fit(fractions, values)
    assert fit["intercept"] == pytest.approx(0.3)
    assert fit["slope"] == pytest.approx(0.07)
    assert fit["r2"] == pytest.approx(1.0)


def test_log_fit_with_noise_matches_a_least_squares_reference():
    rng = np.random.default_rng(0)
    fractions = np.logspace(-3, 0, 12)
    values = -0.1 + 0.05 * np.log10(fractions) + rng.normal(0, 0.01, 12)
    design = np.column_stack([np.ones(12), np.log10(fractions)])
    (intercept, slope), *_ = np.linalg.lstsq(design, values, rcond=None)
    fit = log_fit(fractions, values)
    assert fit["intercept"] == pytest.approx(intercept)
    assert fit["slope"] == pytest.approx(slope)
    assert 0.5 < fit["r2"] < 1.0


def test_log_fit_needs_two_positive_fractions():
    fit = log_fit([0.0, 1.0], [0.1, 0.2])
    assert all(math.isnan(value) for value in fit.values())


# ---------------------------------------------------------------------- curves
STEPS = {0: 0.0, 10: 1.0}
ROIS = ["V1", "FFC"]
WINDOWS = ["80-130ms", "130-180ms"]


# planted R of (layer 0, layer 1) per group at step 0; the best layer differs between groups
LAYER_R = {
    "V1": (0.30, 0.10),
    "FFC": (0.05, 0.20),
    "80-130ms": (0.15, 0.12),
    "130-180ms": (0.02, 0.09),
    "all": (0.90, 0.90),
}


def _r(step: int, layer: int, group: str) -> float:
    """Planted R of a layer in a group; every group gains 0.01 per step."""
    return LAYER_R[group][layer] + 0.01 * step


def _chronology_table() -> pd.DataFrame:
    """Two steps, two layers; fMRI (two ROIs) and MEG (two windows + time samples)."""
    records = []

    def add(step, modality, layer, group, metric, value, time=math.nan, status="ok"):
        subject = "s1" if modality else ""
        depth = math.nan if layer < 0 else float(layer)
        fraction = STEPS.get(step, 2.0)
        row = (subject, modality, "activation", layer, depth, group, time, metric, value)
        records.append((*row, step, fraction, status))

    for step in STEPS:
        for layer in (0, 1):
            for roi in ROIS:
                add(step, "fmri", layer, roi, "r", _r(step, layer, roi))
                add(step, "fmri", layer, roi, "r_normalised", 5.0)  # not an R: ignored
            add(step, "fmri", layer, "all", "r", _r(step, layer, "all"))  # not a ROI
            for window in WINDOWS:
                add(step, "meg", layer, window, "r", _r(step, layer, window))
            for time in (0.1, 0.2):  # per-sample rows are not windows
                add(step, "meg", layer, "time", "r", 7.0, time=time)
            add(step, "meg", layer, "all", "r", _r(step, layer, "all"))
        add(step, "fmri", -1, "V1", "best_depth", 1.0)
        add(step, "fmri", -1, "all", "encoding_score", 0.1 + step / 100)
        add(step, "fmri", -1, "all", "spatial_score", 0.2 + step / 100)
        add(step, "meg", -1, "layer_0", "t_max", 0.15)
        add(step, "meg", -1, "all", "encoding_score", 0.3 + step / 100)
        add(step, "meg", -1, "all", "temporal_score", 0.4 + step / 100)
    # a failed probe: the callback's failure row, and a stray score row of that step
    add(20, "", -1, "all", "probe_failed", math.nan, status="failed")
    add(20, "fmri", 0, "V1", "r", 9.0, status="failed")
    add(20, "fmri", -1, "all", "encoding_score", 9.0, status="failed")
    return pd.DataFrame.from_records(
        records, columns=[*COLUMNS, "value", "step", "train_fraction", "status"]
    )


def test_curves_take_the_best_layer_per_roi_and_window_and_the_three_scores():
    result = curves(_chronology_table(), run="a")

    assert set(result["step"]) == set(STEPS)  # the failed step 20 is skipped
    assert set(result["run"]) == {"a"}
    expected = {}
    for step in STEPS:
        for roi in ROIS:
            expected[("fmri", f"roi/{roi}", step)] = max(_r(step, layer, roi) for layer in (0, 1))
        for window in WINDOWS:
            key = ("meg", f"window/{window}", step)
            expected[key] = max(_r(step, layer, window) for layer in (0, 1))
        expected[("fmri", "encoding", step)] = 0.1 + step / 100
        expected[("fmri", "spatial_score", step)] = 0.2 + step / 100
        expected[("meg", "encoding", step)] = 0.3 + step / 100
        expected[("meg", "temporal_score", step)] = 0.4 + step / 100
    got = {(row.modality, row.curve, row.step): row.value for row in result.itertuples(index=False)}
    assert got.keys() == expected.keys()  # no "roi/all", "roi/time" or best_depth curve
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    fractions = result.set_index("step")["train_fraction"]
    assert fractions.loc[10].unique().tolist() == [1.0]
    assert list(result.columns) == [
        "run",
        "subject",
        "modality",
        "feature_kind",
        "curve",
        "step",
        "train_fraction",
        "value",
    ]


def test_curves_without_a_status_column_keep_every_row():
    table = _chronology_table()
    table = table[table["status"] == "ok"].drop(columns="status")
    assert len(curves(table)) == len(curves(_chronology_table()))


# ---------------------------------------------------------------------- analyse
PLANTED_ROIS = pd.DataFrame(
    {
        "roi": ["V1", "V2", "V3", "hV4", "LO2", "FFC"],
        "x": [-8.0, -12.0, -22.0, -30.0, -42.0, -40.0],
        "y": [-90.0, -88.0, -90.0, -78.0, -80.0, -52.0],
        "z": [2.0, 8.0, 6.0, -12.0, 0.0, -18.0],
        "distance_from_v1": [0.0, 8.0, 15.0, 28.0, 36.0, 55.0],
    }
)
FRACTIONS = np.round(np.linspace(0.0, 1.0, 21), 10)


def _planted_half_times() -> pd.Series:
    distance = PLANTED_ROIS.set_index("roi")["distance_from_v1"]
    return 0.1 + 0.35 * distance / distance.max()  # in [0.1, 0.45]


def _planted_table() -> pd.DataFrame:
    """ROI curves ``amplitude * min(f / (2 h), 1)``: half of the final value exactly at f = h."""
    records = []
    amplitudes = dict(zip(PLANTED_ROIS["roi"], [0.5, 0.4, 0.35, 0.3, 0.25, 0.2]))
    base = ("s1", "fmri", "activation")
    for step, fraction in enumerate(FRACTIONS):
        for roi, planted in _planted_half_times().items():
            value = amplitudes[roi] * min(fraction / (2 * planted), 1.0)
            records.append((*base, 0, 0.0, roi, math.nan, "r", value, step, fraction))
        encoding = 0.3 * min(fraction / 0.5, 1.0)  # half time 0.25
        records.append(
            (*base, -1, math.nan, "all", math.nan, "encoding_score", encoding, step, fraction)
        )
    return pd.DataFrame.from_records(records, columns=[*COLUMNS, "value", "step", "train_fraction"])


def test_analyse_recovers_planted_half_times_and_their_correlations():
    rois = PLANTED_ROIS.assign(
        myelin=-PLANTED_ROIS["distance_from_v1"] + np.array([0.5, -0.5, 0.3, -0.3, 0.2, -0.1])
    )
    times, summary, curve_table = analyse({"run1": _planted_table()}, {"s1": rois})

    planted = _planted_half_times()
    roi_times = times[times["curve"].str.startswith("roi/")].set_index("curve")["half_time"]
    for roi, value in planted.items():
        assert roi_times[f"roi/{roi}"] == pytest.approx(value)
    entry = summary["run1"]["s1/fmri/activation"]
    assert entry["encoding"]["half_time"] == pytest.approx(0.25)
    assert entry["encoding"]["first"] == pytest.approx(0.0)
    assert entry["encoding"]["last"] == pytest.approx(0.3)
    assert entry["roi_half_time"] == pytest.approx(planted.to_dict())
    correlations = entry["roi_half_time_correlations"]
    assert set(correlations) == {"distance_from_v1", "myelin"}  # coordinates are skipped
    assert correlations["distance_from_v1"] == pytest.approx(1.0)
    assert correlations["myelin"] < -0.99
    # curves start at 0, so the rise definition gives the same half times
    assert entry["roi_half_time_rise_correlations"]["distance_from_v1"] == pytest.approx(1.0)
    assert set(curve_table["run"]) == {"run1"}
    assert len(curve_table) == len(FRACTIONS) * (len(PLANTED_ROIS) + 1)


def test_analyse_compares_runs_and_reports_unreached_half_times_as_none():
    flat = _planted_table()
    flat["value"] = -0.1  # final value <= 0: never reaches half of it
    times, summary, _ = analyse({"learns": _planted_table(), "flat": flat})
    assert set(times["run"]) == {"learns", "flat"}
    flat_entry = summary["flat"]["s1/fmri/activation"]
    assert flat_entry["encoding"]["half_time"] is None
    assert set(flat_entry["roi_half_time"].values()) == {None}
    assert not times.loc[times["run"] == "flat", "reached"].any()
    assert times.loc[times["run"] == "learns", "reached"].all()
    assert "roi_half_time_correlations" not in flat_entry  # no ROI table given


def test_half_times_table_has_one_row_per_curve_with_first_and_final_values():
    curve_table = curves(_planted_table(), run="r")
    table = half_times(curve_table)
    assert len(table) == len(PLANTED_ROIS) + 1
    v1 = table.set_index("curve").loc["roi/V1"]
    assert v1["n_probes"] == len(FRACTIONS)
    assert v1["first_value"] == pytest.approx(0.0)
    assert v1["final_value"] == pytest.approx(0.5)
    assert bool(v1["reached"]) and bool(v1["reached_rise"])


# ---------------------------------------------------------------------- the file
def _rows(step: int, value: float, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": [step] * n,
            "train_fraction": [step / 10] * n,
            "group": [f"g{i}" for i in range(n)],
            "value": [value] * n,
        }
    )


def test_append_chronology_replaces_the_rows_of_a_reprobed_step(tmp_path):
    path = tmp_path / "chronology.parquet"
    append_chronology(path, _rows(0, 0.0))
    append_chronology(path, _rows(5, 0.5))
    append_chronology(path, _rows(10, 1.0))
    append_chronology(path, _rows(5, 0.7, n=2))  # step 5 probed again after a resume

    table = read_chronology(path)
    assert table["step"].tolist() == [0, 0, 0, 5, 5, 10, 10, 10]  # one row set per step
    assert table.loc[table["step"] == 5, "value"].tolist() == [0.7, 0.7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chronology.parquet"]


def test_append_chronology_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "chronology.parquet"
    append_chronology(path, _rows(0, 0.0))

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        append_chronology(path, _rows(5, 0.5))
    monkeypatch.undo()
    assert read_chronology(path)["step"].tolist() == [0, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chronology.parquet"]


def test_truncate_chronology_drops_later_steps(tmp_path):
    path = tmp_path / "chronology.parquet"
    for step in (0, 5, 10):
        append_chronology(path, _rows(step, step / 10))
    truncate_chronology(path, last_step=5)
    assert read_chronology(path)["step"].tolist() == [0, 0, 0, 5, 5, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chronology.parquet"]


def test_truncate_chronology_without_a_file_does_nothing(tmp_path):
    truncate_chronology(tmp_path / "chronology.parquet", last_step=3)
    assert list(tmp_path.iterdir()) == []


def test_read_chronology_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="chronology.parquet does not exist"):
        read_chronology(tmp_path / "chronology.parquet")


# ---------------------------------------------------------------------- printed summary
@pytest.mark.parametrize("temporal_defined", [True, False])
def test_printed_summary_says_when_the_temporal_score_is_undefined(temporal_defined, capsys):
    from brainalign.commands.chronology import TEMPORAL_UNDEFINED, print_report

    table = _chronology_table()
    if not temporal_defined:  # every layer peaked at the same time at every probe
        table.loc[table["metric"] == "temporal_score", "value"] = math.nan
    times, summary, _ = analyse({"a": table})
    print_report(times, summary)
    meg = capsys.readouterr().out.split("[a] s1/meg/activation")[1]
    temporal = [line for line in meg.splitlines() if "temporal_score" in line]
    assert len(temporal) == 1
    assert (TEMPORAL_UNDEFINED in temporal[0]) is not temporal_defined
    if temporal_defined:
        assert "first +0.400  last +0.500" in temporal[0]
