"""BrainData validation, alignment, bad-target dropping, flat views; ROI tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from brainalign.probe.brain_data import BrainData
from brainalign.probe.rois import distance_from_v1, merge_roi_properties, roi_table
from brainalign.probe.stimuli import StimulusSet

# 7 stimuli, 8 targets (fMRI) / 8 channels x 9 times (MEG): a transposed axis fails.
N_STIMULI, N_TARGETS, N_TIMES = 7, 8, 9
IDS = [f"s{i}" for i in range(N_STIMULI)]


def fmri_targets() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "roi": ["V1", "V1", "V1", "LO", "LO", "FFC", "FFC", "FFC"],
            "hemi": ["lh"] * N_TARGETS,
            "x": [0.0, 2.0, 4.0, 30.0, 32.0, 40.0, 40.0, 40.0],
            "y": [0.0, 0.0, 0.0, 40.0, 40.0, 0.0, 3.0, 6.0],
            "z": [0.0, 0.0, 3.0, 0.0, 0.0, 10.0, 10.0, 10.0],
        }
    )


def fmri_brain(data: np.ndarray, **fields) -> BrainData:
    """fMRI data of subject 01 on the stimuli IDS and the targets of fmri_targets()."""
    fields.setdefault("targets", fmri_targets())
    return BrainData(modality="fmri", subject="01", data=data, stimulus_ids=IDS, **fields)


@pytest.fixture
def fmri() -> BrainData:
    data = np.arange(N_STIMULI * N_TARGETS, dtype=np.float64).reshape(N_STIMULI, N_TARGETS)
    data = data + np.random.default_rng(0).normal(size=data.shape)
    return BrainData(
        modality="fmri", subject="01", data=data, stimulus_ids=IDS, targets=fmri_targets()
    )


@pytest.fixture
def meg() -> BrainData:
    data = np.random.default_rng(1).normal(size=(N_STIMULI, N_TARGETS, N_TIMES))
    return BrainData(
        modality="meg",
        subject="01",
        data=data,
        times=np.linspace(-0.1, 0.3, N_TIMES),
        stimulus_ids=IDS,
        targets=pd.DataFrame({"channel": [f"MEG{i}" for i in range(N_TARGETS)]}),
        repeats=np.stack([data, data + 1.0]),
    )


def test_fmri_data_is_float32_and_rois_are_target_centroids(fmri):
    assert fmri.data.dtype == np.float32
    assert fmri.n_stimuli == N_STIMULI and fmri.n_targets == N_TARGETS
    rois = fmri.rois.set_index("roi")
    assert rois.index.tolist() == ["V1", "LO", "FFC"]  # order of first appearance
    np.testing.assert_allclose(rois.loc["V1", ["x", "y", "z"]], [2.0, 0.0, 1.0])
    np.testing.assert_allclose(rois.loc["FFC", ["x", "y", "z"]], [40.0, 3.0, 10.0])
    assert rois["n_targets"].tolist() == [3, 2, 3]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stimulus_ids": IDS[:6]}, "7 rows .* but 6 stimulus ids"),
        ({"targets": fmri_targets().iloc[:7]}, "8 targets .* targets table has 7 rows"),
        ({"data": np.zeros((N_STIMULI, N_TARGETS, 2))}, r"shape \(n_stimuli, n_targets\)"),
        ({"modality": "eeg"}, "modality must be 'fmri' or 'meg'"),
        ({"targets": fmri_targets().drop(columns="roi")}, "needs a 'roi' column"),
        ({"stimulus_ids": ["a", "b", "a", "c", "d", "e", "f"]}, "duplicate stimulus ids: 'a'"),
        ({"repeats": np.zeros((2, N_TARGETS, N_STIMULI))}, "repeats must have shape"),
        ({"noise_ceiling": np.zeros(N_STIMULI)}, "noise_ceiling must have shape"),
        (
            {"rois": pd.DataFrame({"roi": ["V1"], "x": [0.0], "y": [0.0], "z": [0.0]})},
            r"ROIs missing from the ROI table: \['FFC', 'LO'\]",
        ),
    ],
)
def test_fmri_validation_errors(change, message):
    arguments = {
        "modality": "fmri",
        "subject": "01",
        "data": np.zeros((N_STIMULI, N_TARGETS)),
        "stimulus_ids": IDS,
        "targets": fmri_targets(),
    }
    with pytest.raises(ValueError, match=message):
        BrainData(**{**arguments, **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"times": None}, "needs times"),
        ({"times": np.linspace(0, 1, N_TIMES - 1)}, "9 time points"),
        ({"times": np.linspace(1, 0, N_TIMES)}, "increase strictly"),
        (
            {"data": np.zeros((N_STIMULI, N_TIMES, N_TARGETS))},
            r"8 time points but times has shape \(9,\)",
        ),
        ({"targets": pd.DataFrame({"name": list("abcdefgh")})}, "needs a 'channel' column"),
    ],
)
def test_meg_validation_errors(change, message):
    arguments = {
        "modality": "meg",
        "subject": "01",
        "data": np.zeros((N_STIMULI, N_TARGETS, N_TIMES)),
        "times": np.linspace(0, 1, N_TIMES),
        "stimulus_ids": IDS,
        "targets": pd.DataFrame({"channel": list("abcdefgh")}),
    }
    with pytest.raises(ValueError, match=message):
        BrainData(**{**arguments, **change})


def test_align_orders_stimuli_like_the_brain_and_drops_extra_images(fmri):
    images = np.arange(9 * 2 * 2 * 3, dtype=np.uint8).reshape(9, 2, 2, 3)
    image_ids = ["extra1", *IDS[::-1], "extra2"]
    brain, stimuli = fmri.align(StimulusSet.from_array(image_ids, images))
    assert stimuli.ids == brain.stimulus_ids == IDS
    # image of s2 was stored at position 1 + (6 - 2) = 5
    np.testing.assert_array_equal(stimuli.load_array([2])[0], images[5])


def test_align_error_names_the_missing_ids(fmri):
    images = np.zeros((5, 2, 2, 3), np.uint8)
    with pytest.raises(
        ValueError, match=r"stimulus ids missing from images: 's5', 's6' \(2 of 7\)"
    ):
        fmri.align(StimulusSet.from_array(IDS[:5], images))


def test_select_stimuli_reorders_data_and_repeats(meg):
    chosen = meg.select_stimuli(["s4", "s0"])
    np.testing.assert_array_equal(chosen.data, meg.data[[4, 0]])
    np.testing.assert_array_equal(chosen.repeats, meg.repeats[:, [4, 0]])
    with pytest.raises(KeyError, match=r"'zz' \(1 of 1\)"):
        meg.select_stimuli(["zz"])


def test_drop_bad_targets_counts_nan_and_constant_targets(fmri):
    data = fmri.data.copy()
    data[3, 1] = np.nan  # V1 target with a NaN
    data[:, 3] = 5.0  # LO target constant across stimuli
    data[:, 4] = 5.0  # the other LO target: LO disappears
    repeats = np.stack([data, data])
    brain = BrainData(
        modality="fmri",
        subject="01",
        data=data,
        stimulus_ids=IDS,
        targets=fmri_targets(),
        repeats=repeats,
        noise_ceiling=np.arange(N_TARGETS, dtype=float),
    )
    with pytest.warns(UserWarning, match=r"dropped 3 of 8 targets \(1 with NaN, 2 constant"):
        cleaned = brain.drop_bad_targets()
    keep = [0, 2, 5, 6, 7]
    np.testing.assert_array_equal(cleaned.data, data[:, keep])
    np.testing.assert_array_equal(cleaned.repeats, repeats[:, :, keep])
    np.testing.assert_array_equal(cleaned.noise_ceiling, keep)
    assert cleaned.targets["roi"].tolist() == ["V1", "V1", "FFC", "FFC", "FFC"]
    assert cleaned.rois["roi"].tolist() == ["V1", "FFC"]
    assert cleaned.rois["n_targets"].tolist() == [2, 3]


def test_drop_bad_targets_leaves_clean_data_alone_and_fails_when_nothing_is_left(fmri):
    assert fmri.drop_bad_targets() is fmri
    constant = BrainData(
        modality="fmri",
        subject="01",
        data=np.ones((N_STIMULI, N_TARGETS)),
        stimulus_ids=IDS,
        targets=fmri_targets(),
    )
    with pytest.raises(ValueError, match="all 8 targets are NaN or constant"):
        constant.drop_bad_targets()


def test_drop_bad_targets_meg_drops_whole_channels(meg):
    data = meg.data.copy()
    data[2, 5, 4] = np.nan
    data[:, 6, :] = 0.5
    brain = BrainData(
        modality="meg",
        subject="01",
        data=data,
        times=meg.times,
        stimulus_ids=IDS,
        targets=meg.targets,
    )
    with pytest.warns(UserWarning, match=r"dropped 2 of 8 channels \(1 with NaN, 1 constant"):
        cleaned = brain.drop_bad_targets()
    assert cleaned.data.shape == (N_STIMULI, 6, N_TIMES)
    assert cleaned.targets["channel"].tolist() == ["MEG0", "MEG1", "MEG2", "MEG3", "MEG4", "MEG7"]


def test_infinite_responses_count_like_nan_in_data_and_repeats(fmri, meg):
    data = fmri.data.copy()
    data[0, 2] = np.inf  # in the averaged responses
    repeats = np.stack([data, data])
    repeats[1, 5, 7] = -np.inf  # only in one repeat
    data[:, 4] = 1.0  # a constant target
    brain = fmri_brain(data, repeats=repeats)
    with pytest.warns(
        UserWarning, match=r"dropped 3 of 8 targets \(0 with NaN, 1 constant .*2 with inf\)"
    ):
        cleaned = brain.drop_bad_targets()
    np.testing.assert_array_equal(cleaned.data, data[:, [0, 1, 3, 5, 6]])
    assert np.isfinite(cleaned.repeats).all()

    meg_data = meg.data.copy()
    meg_data[3, 2, 8] = np.inf
    meg_brain = dataclasses.replace(meg, data=meg_data, repeats=None)
    with pytest.warns(
        UserWarning, match=r"dropped 1 of 8 channels \(0 with NaN, 0 constant.*1 with inf"
    ):
        assert "MEG2" not in meg_brain.drop_bad_targets().targets["channel"].tolist()
    # a float64 response too large for float32 becomes inf when stored, and is dropped too
    overflow = fmri.data.astype(np.float64)
    overflow[1, 0] = 1e300
    with pytest.warns(RuntimeWarning, match="overflow"):
        brain = fmri_brain(overflow)
    with pytest.warns(UserWarning, match="1 with inf"):
        assert brain.drop_bad_targets().n_targets == N_TARGETS - 1
    everything = np.full((N_STIMULI, N_TARGETS), np.inf)
    with pytest.raises(ValueError, match="all 8 targets are NaN or constant .*infinite"):
        fmri_brain(everything).drop_bad_targets()


def test_non_numeric_target_coordinates_name_column_and_row(fmri):
    targets = fmri_targets().astype({"z": object})
    targets.loc[6, "z"] = "12mm"
    with pytest.raises(ValueError, match=r"the targets table: column 'z', row 7 holds '12mm'"):
        fmri_brain(fmri.data, targets=targets, rois=fmri.rois)  # given centroids: checked too
    targets.loc[6, "z"] = "12.5"  # a number written as text is read as the number
    brain = fmri_brain(fmri.data, targets=targets)
    assert brain.targets["z"].dtype == np.float64 and brain.targets.loc[6, "z"] == 12.5


def test_meg_targets_matrix_is_channel_major_with_an_index(meg):
    matrix = meg.targets_matrix()
    assert matrix.shape == (N_STIMULI, N_TARGETS * N_TIMES)
    index = meg.target_index()
    assert len(index) == N_TARGETS * N_TIMES
    for column in (0, 10, 71):
        channel, time = index.loc[column, ["channel_index", "time_index"]]
        np.testing.assert_array_equal(matrix[:, column], meg.data[:, channel, time])
        assert index.loc[column, "channel"] == f"MEG{channel}"
        assert index.loc[column, "time"] == meg.times[time]
    assert (index.loc[10, ["channel_index", "time_index"]] == [1, 1]).all()
    np.testing.assert_array_equal(meg.unflatten(matrix), meg.data)
    np.testing.assert_allclose(meg.repeats_matrix()[1], matrix + 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="last axis of 72"):
        meg.unflatten(matrix[:, :5])


def test_fmri_targets_matrix_is_the_data(fmri):
    np.testing.assert_array_equal(fmri.targets_matrix(), fmri.data)
    assert fmri.target_index()["roi"].tolist() == fmri_targets()["roi"].tolist()
    assert fmri.repeats_matrix() is None


# ---------------------------------------------------------------------- ROI tables
def test_distance_from_v1_in_mm():
    rois = pd.DataFrame(
        {
            "roi": ["LO", "V1", "FFC"],
            "x": [3.0, 0.0, 1.0],
            "y": [4.0, 0.0, 2.0],
            "z": [0.0, 0.0, 2.0],
        }
    )
    distances = distance_from_v1(rois)
    assert distances.to_dict() == pytest.approx({"LO": 5.0, "V1": 0.0, "FFC": 3.0})
    assert distance_from_v1(rois, reference="LO")["V1"] == pytest.approx(5.0)


def test_distance_from_v1_errors_list_available_rois():
    rois = pd.DataFrame({"roi": ["V1v", "LO"], "x": [0.0, 1.0], "y": [0.0, 1.0], "z": [0.0, 1.0]})
    with pytest.raises(
        ValueError, match=r"'V1' not in the ROI table; available ROIs: \['V1v', 'LO'\]"
    ):
        distance_from_v1(rois)
    no_coordinates = rois.assign(x=[0.0, np.nan])
    with pytest.raises(ValueError, match=r"missing for \['LO'\]"):
        distance_from_v1(no_coordinates, reference="V1v")


def test_roi_properties_merge_warns_about_unknown_rois(tmp_path):
    rois = roi_table(fmri_targets())
    pd.DataFrame({"roi": ["V1", "FFC", "MT", "IFSp"], "myelin": [2.0, 1.0, 9.0, 9.0]}).to_csv(
        tmp_path / "myelin.csv", index=False
    )
    with pytest.warns(UserWarning, match=r"2 ROI name\(s\) not in the ROI table.*\['MT', 'IFSp'\]"):
        merged = roi_table(fmri_targets(), properties=tmp_path / "myelin.csv")
    assert merged["roi"].tolist() == ["V1", "LO", "FFC"]
    np.testing.assert_array_equal(merged["myelin"], [2.0, np.nan, 1.0])
    with pytest.raises(ValueError, match=r"column\(s\) \['x'\] that the ROI table already has"):
        merge_roi_properties(rois, pd.DataFrame({"roi": ["V1"], "x": [1.0]}))
    with pytest.raises(ValueError, match="lacks a 'roi' column"):
        merge_roi_properties(rois, pd.DataFrame({"name": ["V1"], "t": [1.0]}))


def test_roi_table_from_given_centroids_and_targets_without_coordinates():
    centroids = pd.DataFrame({"roi": ["V1", "LO"], "x": [1, 2], "y": [3, 4], "z": [5, 6]})
    assert roi_table(centroids=centroids)["x"].dtype == np.float64
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['x', 'y', 'z'\]"):
        roi_table(pd.DataFrame({"roi": ["V1"]}))
    brain = BrainData(
        modality="fmri",
        subject="01",
        data=np.zeros((N_STIMULI, 2)),
        stimulus_ids=IDS,
        targets=pd.DataFrame({"roi": ["V1", "LO"]}),
    )
    assert brain.rois["roi"].tolist() == ["V1", "LO"]
    assert brain.rois["x"].isna().all()
