"""Generic formats: fMRI folder and MEG -epo.fif round trips, load_brain dispatch, errors."""

from __future__ import annotations

import re

import mne
import numpy as np
import pandas as pd
import pytest
from payloads import write_npy_payload
from PIL import Image

from brainalign.probe.brain_data import BrainData
from brainalign.probe.formats import (
    load_brain,
    load_fmri_folder,
    load_meg_epochs,
    register_brain_loader,
    write_fmri_folder,
    write_meg_epochs,
)
from brainalign.probe.meg import MEGPreparation

# 7 stimuli, 8 targets / channels, 9 times: a transposed axis fails.
N_STIMULI, N_TARGETS, N_TIMES, SFREQ = 7, 8, 9, 100.0
IDS = [f"x{i}" for i in range(N_STIMULI)]
ROIS = ["V1", "V1", "V2", "V2", "V2", "LO", "LO", "FFC"]


def planted_responses() -> np.ndarray:
    # value = 10 * stimulus + target / 10: any stimulus/target mix-up changes it
    return (10.0 * np.arange(N_STIMULI)[:, None] + np.arange(N_TARGETS)[None, :] / 10.0).astype(
        np.float32
    )


def write_images(folder, ids, value_of=lambda i: i) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for index, stimulus_id in enumerate(ids):
        image = np.full((5, 6, 3), value_of(index), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{stimulus_id}.png")
        images.append(image)
    return images


def targets_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "roi": ROIS,
            "hemi": ["lh", "rh"] * 4,
            "x": np.arange(N_TARGETS, dtype=float),
            "y": np.zeros(N_TARGETS),
            "z": np.zeros(N_TARGETS),
        }
    )


@pytest.fixture
def handmade_fmri_folder(tmp_path):
    """An fMRI folder written with numpy and pandas directly, images in images/."""
    folder = tmp_path / "subj01"
    folder.mkdir()
    np.save(folder / "responses.npy", planted_responses())
    pd.DataFrame({"stimulus_id": IDS}).to_csv(folder / "stimuli.csv", index=False)
    targets_table().to_csv(folder / "targets.csv", index=False)
    write_images(folder / "images", IDS)
    return folder


# ---------------------------------------------------------------------- fMRI
def test_handmade_fmri_folder_reads_exact_values(handmade_fmri_folder):
    brain, stimuli = load_fmri_folder(handmade_fmri_folder)
    assert brain.modality == "fmri" and brain.subject == "subj01"
    assert brain.stimulus_ids == IDS == stimuli.ids
    assert brain.data.shape == (N_STIMULI, N_TARGETS)
    assert brain.data[IDS.index("x3"), 5] == pytest.approx(30.5)
    assert brain.targets.loc[5, "roi"] == "LO" and brain.targets.loc[1, "hemi"] == "rh"
    assert brain.rois["roi"].tolist() == ["V1", "V2", "LO", "FFC"]
    assert brain.rois.set_index("roi").loc["V2", "x"] == pytest.approx(3.0)  # mean of 2, 3, 4
    assert stimuli.load_array([4])[0, 0, 0, 0] == 4  # image of x4
    assert brain.repeats is None


def test_fmri_folder_round_trip_with_writer(tmp_path):
    repeats = np.stack([planted_responses() - 1.0, planted_responses() + 1.0])
    rois = pd.DataFrame(
        {
            "roi": ["V1", "V2", "LO", "FFC"],
            "x": [0.0, 10, 20, 30],
            "y": 0.0,
            "z": 0.0,
            "myelin": [4.0, 3.0, 2.0, 1.0],
        }
    )
    brain = BrainData(
        modality="fmri",
        subject="s1",
        data=planted_responses(),
        stimulus_ids=IDS,
        targets=targets_table(),
        rois=rois,
        repeats=repeats,
        noise_ceiling=np.linspace(0, 1, N_TARGETS),
    )
    table = pd.DataFrame({"stimulus_id": IDS, "image_path": [f"images/{i}.png" for i in IDS]})
    path = write_fmri_folder(tmp_path / "fmri", brain, table)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    write_images(path / "images", IDS, value_of=lambda i: 100 + i)
    loaded, stimuli = load_fmri_folder(path, subject="s1")
    np.testing.assert_array_equal(loaded.data, brain.data)
    np.testing.assert_array_equal(loaded.repeats, repeats)
    np.testing.assert_allclose(loaded.noise_ceiling, np.linspace(0, 1, N_TARGETS))
    assert loaded.rois.set_index("roi").loc["LO", "myelin"] == 2.0
    assert loaded.rois.set_index("roi").loc["V2", "x"] == 10.0  # rois.csv wins over targets
    assert stimuli.load_array([6])[0, 0, 0, 0] == 106
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_fmri_folder(tmp_path / "fmri", brain, table)
    write_fmri_folder(tmp_path / "fmri", brain, table, overwrite=True)


def test_fmri_writer_checks_ids_against_the_table(tmp_path):
    brain = BrainData(
        modality="fmri",
        subject="s",
        data=planted_responses(),
        stimulus_ids=IDS,
        targets=targets_table(),
    )
    with pytest.raises(ValueError, match="same order"):
        write_fmri_folder(tmp_path / "f", brain, pd.DataFrame({"stimulus_id": IDS[::-1]}))
    assert not (tmp_path / "f").exists()


def test_fmri_rows_mismatch_names_both_files(handmade_fmri_folder):
    np.save(handmade_fmri_folder / "responses.npy", planted_responses()[:6])
    with pytest.raises(ValueError, match=r"6 rows \(stimuli\) but .*stimuli.csv has 7 rows"):
        load_fmri_folder(handmade_fmri_folder)


def test_fmri_targets_mismatch_and_missing_columns(handmade_fmri_folder):
    targets_table().iloc[:7].to_csv(handmade_fmri_folder / "targets.csv", index=False)
    with pytest.raises(ValueError, match=r"8 columns \(targets\) but .*targets.csv has 7 rows"):
        load_fmri_folder(handmade_fmri_folder)
    targets_table().drop(columns=["z"]).to_csv(handmade_fmri_folder / "targets.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['z'\]"):
        load_fmri_folder(handmade_fmri_folder)


def test_fmri_missing_file_says_which_and_where(handmade_fmri_folder):
    (handmade_fmri_folder / "targets.csv").unlink()
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"targets.csv in {handmade_fmri_folder}")
    ):
        load_fmri_folder(handmade_fmri_folder)


def test_fmri_missing_images(handmade_fmri_folder):
    (handmade_fmri_folder / "images" / "x2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"'x2' \(1 of 7\)"):
        load_fmri_folder(handmade_fmri_folder)
    for path in (handmade_fmri_folder / "images").iterdir():
        path.unlink()
    (handmade_fmri_folder / "images").rmdir()
    with pytest.raises(FileNotFoundError, match="image_path"):
        load_fmri_folder(handmade_fmri_folder)


def test_numeric_stimulus_ids_are_read_as_written(handmade_fmri_folder):
    ids = ["0001", "0002", "0003", "0004", "0005", "0006", "0007"]
    pd.DataFrame({"stimulus_id": ids}).to_csv(handmade_fmri_folder / "stimuli.csv", index=False)
    write_images(handmade_fmri_folder / "images", ids)
    brain, _ = load_fmri_folder(handmade_fmri_folder)
    assert brain.stimulus_ids == ids


@pytest.mark.parametrize("name", ["responses.npy", "repeats.npy", "noise_ceiling.npy"])
def test_fmri_arrays_of_pickled_objects_are_refused_and_never_run(handmade_fmri_folder, name):
    marker = handmade_fmri_folder.parent / "marker"
    path = write_npy_payload(handmade_fmri_folder / name, marker)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": holds Python objects"):
        load_brain(str(handmade_fmri_folder))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "problem"),
    [("../x3.png", "leaves the table's folder"), ("/etc/passwd", "is an absolute path")],
)
def test_fmri_image_paths_out_of_the_folder_are_refused(handmade_fmri_folder, value, problem):
    (handmade_fmri_folder.parent / "x3.png").write_bytes(
        (handmade_fmri_folder / "images" / "x3.png").read_bytes()
    )  # the escaping path names a real image: refused all the same
    paths = [f"images/{i}.png" for i in IDS]
    paths[3] = value
    pd.DataFrame({"stimulus_id": IDS, "image_path": paths}).to_csv(
        handmade_fmri_folder / "stimuli.csv", index=False
    )
    with pytest.raises(ValueError) as error:
        load_brain(str(handmade_fmri_folder))
    message = str(error.value)
    assert message.startswith(f"{handmade_fmri_folder / 'stimuli.csv'}, row 4 (stimulus 'x3')")
    assert f"image_path {value!r} {problem}" in message


@pytest.mark.parametrize("with_rois", [False, True])
def test_fmri_non_numeric_coordinate_names_column_and_row(handmade_fmri_folder, with_rois):
    if with_rois:
        pd.DataFrame({"roi": ["V1", "V2", "LO", "FFC"], "x": 0.0, "y": 0.0, "z": 0.0}).to_csv(
            handmade_fmri_folder / "rois.csv", index=False
        )
    targets = targets_table().astype({"y": object})
    targets.loc[5, "y"] = "left"
    targets.to_csv(handmade_fmri_folder / "targets.csv", index=False)
    expected = re.escape(f"{handmade_fmri_folder / 'targets.csv'}: column 'y', row 6 holds 'left'")
    with pytest.raises(ValueError, match=expected):
        load_fmri_folder(handmade_fmri_folder)
    targets.loc[5, "y"] = "inf"
    targets.to_csv(handmade_fmri_folder / "targets.csv", index=False)
    with pytest.raises(ValueError, match="column 'y', row 6 holds"):
        load_fmri_folder(handmade_fmri_folder)
    targets.loc[5, "y"] = None  # an empty cell: coordinate unknown, accepted
    targets.to_csv(handmade_fmri_folder / "targets.csv", index=False)
    brain, _ = load_fmri_folder(handmade_fmri_folder)
    assert np.isnan(brain.targets.loc[5, "y"]) and brain.targets["y"].dtype == np.float64


def test_fmri_infinite_responses_are_dropped_and_counted(handmade_fmri_folder):
    responses = planted_responses()
    responses[2, 6] = np.inf
    responses[4, 1] = np.nan
    np.save(handmade_fmri_folder / "responses.npy", responses)
    brain, _ = load_fmri_folder(handmade_fmri_folder)
    with pytest.warns(
        UserWarning, match=r"dropped 2 of 8 targets \(1 with NaN, 0 constant .*1 with inf"
    ):
        cleaned = brain.drop_bad_targets()
    np.testing.assert_array_equal(cleaned.data, responses[:, [0, 2, 3, 4, 5, 7]])


# ---------------------------------------------------------------------- MEG
def planted_trials() -> tuple[np.ndarray, list[str]]:
    """14 trials: each stimulus twice, in a shuffled order; values known per trial."""
    order = [3, 0, 6, 1, 5, 2, 4, 2, 6, 0, 4, 1, 3, 5]
    first_seen = {}
    trials = np.empty((len(order), N_TARGETS, N_TIMES), dtype=np.float32)
    channel_time = np.arange(N_TARGETS)[:, None] * 0.1 + np.arange(N_TIMES)[None, :] * 0.001
    for trial, stimulus in enumerate(order):
        repeat = first_seen.setdefault(stimulus, trial) != trial
        # repeat 0 is value - 1, repeat 1 is value + 1: the mean is 10 * stimulus + channel_time
        trials[trial] = 10.0 * stimulus + channel_time + (1.0 if repeat else -1.0)
    return trials * 1e-12, [IDS[s] for s in order]


def meg_times() -> np.ndarray:
    return -0.02 + np.arange(N_TIMES) / SFREQ


def test_meg_round_trip_averages_repeats(tmp_path):
    trials, trial_ids = planted_trials()
    channels = [f"MEG{i:03d}" for i in range(N_TARGETS)]
    path = write_meg_epochs(
        tmp_path / "sub-01-epo.fif", trials, meg_times(), channels, SFREQ, trial_ids, fmt="double"
    )
    brain = load_meg_epochs(path, preparation=MEGPreparation(zscore=False))
    assert brain.modality == "meg" and brain.subject == "sub-01"
    assert brain.stimulus_ids == ["x3", "x0", "x6", "x1", "x5", "x2", "x4"]  # first appearance
    assert brain.data.shape == (N_STIMULI, N_TARGETS, N_TIMES)
    np.testing.assert_allclose(brain.times, meg_times(), atol=1e-9)
    assert brain.targets["channel"].tolist() == channels
    row = brain.stimulus_ids.index("x5")
    assert brain.data[row, 2, 4] == pytest.approx((50.0 + 0.2 + 0.004) * 1e-12, rel=1e-6)
    assert brain.repeats.shape == (2, N_STIMULI, N_TARGETS, N_TIMES)
    assert brain.repeats[0, row, 2, 4] == pytest.approx((49.0 + 0.204) * 1e-12, rel=1e-6)
    assert brain.repeats[1, row, 2, 4] == pytest.approx((51.0 + 0.204) * 1e-12, rel=1e-6)
    assert brain.info["sfreq"] == SFREQ


def test_damaged_files_are_named_without_a_library_traceback(tmp_path, handmade_fmri_folder):
    trials, trial_ids = planted_trials()
    channels = [f"MEG{i:03d}" for i in range(N_TARGETS)]
    path = write_meg_epochs(
        tmp_path / "sub-01-epo.fif", trials, meg_times(), channels, SFREQ, trial_ids
    )
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated copy
    with pytest.raises(ValueError, match=r"sub-01-epo\.fif: cannot read an MNE Epochs \.fif file"):
        load_meg_epochs(path)

    responses = handmade_fmri_folder / "responses.npy"
    responses.write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"responses\.npy: cannot read a NumPy \.npy array"):
        load_fmri_folder(handmade_fmri_folder)


def test_meg_zscore_runs_on_trials_before_averaging(tmp_path):
    trials, trial_ids = planted_trials()
    path = write_meg_epochs(
        tmp_path / "a-epo.fif",
        trials,
        meg_times(),
        [f"M{i}" for i in range(N_TARGETS)],
        SFREQ,
        trial_ids,
    )
    brain = load_meg_epochs(path)  # z-scored by default
    np.testing.assert_allclose(brain.repeats.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(brain.repeats.std(axis=(0, 1)), 1.0, atol=1e-4)
    np.testing.assert_allclose(brain.data, brain.repeats.mean(axis=0), atol=1e-6)


def test_meg_written_directly_with_mne_and_dropped_epochs_without_id(tmp_path):
    trials, trial_ids = planted_trials()
    trial_ids[5] = None  # e.g. a catch trial
    info = mne.create_info([f"M{i}" for i in range(N_TARGETS)], SFREQ, "grad")
    metadata = pd.DataFrame({"stimulus_id": trial_ids, "condition": "main"})
    epochs = mne.EpochsArray(trials, info, tmin=-0.02, metadata=metadata, verbose="error")
    epochs.save(tmp_path / "direct-epo.fif", verbose="error")
    with pytest.warns(UserWarning) as record:
        brain = load_meg_epochs(
            tmp_path / "direct-epo.fif", preparation=MEGPreparation(zscore=False)
        )
    messages = [str(warning.message) for warning in record]
    assert any("dropped 1 of 14 epochs without a stimulus_id" in m for m in messages)
    assert any("between 1 and 2 epochs" in m for m in messages)  # x2 lost a repeat
    assert brain.repeats is None
    row = brain.stimulus_ids.index("x2")
    assert brain.data[row, 0, 0] == pytest.approx((20.0 + 1.0) * 1e-12, rel=1e-5)


def test_meg_without_stimulus_id_lists_the_columns(tmp_path):
    trials, _ = planted_trials()
    info = mne.create_info([f"M{i}" for i in range(N_TARGETS)], SFREQ, "mag")
    metadata = pd.DataFrame({"image": ["a"] * 14, "trial": range(14)})
    mne.EpochsArray(trials, info, metadata=metadata, verbose="error").save(
        tmp_path / "bad-epo.fif", verbose="error"
    )
    with pytest.raises(ValueError, match=r"'stimulus_id' column.*present: \['image', 'trial'\]"):
        load_meg_epochs(tmp_path / "bad-epo.fif")
    mne.EpochsArray(trials, info, verbose="error").save(tmp_path / "none-epo.fif", verbose="error")
    with pytest.raises(ValueError, match=r"present: \[\]"):
        load_meg_epochs(tmp_path / "none-epo.fif")


def test_meg_average_repeats_false_requires_single_trials(tmp_path):
    trials, trial_ids = planted_trials()
    names = [f"M{i}" for i in range(N_TARGETS)]
    path = write_meg_epochs(tmp_path / "r-epo.fif", trials, meg_times(), names, SFREQ, trial_ids)
    with pytest.raises(ValueError, match="average_repeats=True"):
        load_meg_epochs(path, preparation=MEGPreparation(average_repeats=False))
    single = write_meg_epochs(
        tmp_path / "s-epo.fif", trials[:7], meg_times(), names, SFREQ, [f"t{i}" for i in range(7)]
    )
    brain = load_meg_epochs(single, preparation=MEGPreparation(average_repeats=False))
    assert brain.data.shape == (7, N_TARGETS, N_TIMES) and brain.repeats is None


def test_meg_writer_checks_its_inputs(tmp_path):
    trials, trial_ids = planted_trials()
    names = [f"M{i}" for i in range(N_TARGETS)]
    with pytest.raises(ValueError, match=r"end in -epo\.fif"):
        write_meg_epochs(tmp_path / "x.fif", trials, meg_times(), names, SFREQ, trial_ids)
    with pytest.raises(ValueError, match="9 time points"):
        write_meg_epochs(tmp_path / "x-epo.fif", trials, meg_times()[:8], names, SFREQ, trial_ids)
    with pytest.raises(ValueError, match="spaced by 1 / sfreq"):
        write_meg_epochs(tmp_path / "x-epo.fif", trials, meg_times(), names, 50.0, trial_ids)
    with pytest.raises(ValueError, match="14 trials but 13"):
        write_meg_epochs(tmp_path / "x-epo.fif", trials, meg_times(), names, SFREQ, trial_ids[1:])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- load_brain
def write_planted_meg(path, image_folder=None):
    """The planted trials as an epochs file; with ``image_path`` = image_folder/<id>.png."""
    trials, trial_ids = planted_trials()
    metadata = None
    if image_folder is not None:
        metadata = pd.DataFrame({"image_path": [f"{image_folder}/{i}.png" for i in trial_ids]})
    channels = [f"M{i}" for i in range(N_TARGETS)]
    return write_meg_epochs(
        path, trials, meg_times(), channels, SFREQ, trial_ids, metadata=metadata
    )


def test_load_brain_dispatches_on_the_path(tmp_path, handmade_fmri_folder):
    brain, stimuli = load_brain(str(handmade_fmri_folder))
    assert brain.modality == "fmri" and stimuli.ids == IDS

    write_images(tmp_path / "meg" / "images", IDS, value_of=lambda i: 50 + i)
    path = write_planted_meg(tmp_path / "meg" / "sub-02-epo.fif", image_folder="images")
    brain, stimuli = load_brain(path, meg_preparation=MEGPreparation(tmin=0.0))
    assert brain.modality == "meg" and brain.times[0] == pytest.approx(0.0)
    assert stimuli.ids == brain.stimulus_ids
    assert stimuli.load_array([0])[0, 0, 0, 0] == 53  # first stimulus is x3

    plain = write_planted_meg(tmp_path / "plain-epo.fif")
    _, no_stimuli = load_brain(plain)
    assert no_stimuli is None


def test_meg_image_paths_out_of_the_file_folder_are_refused(tmp_path):
    write_images(tmp_path / "images", IDS)
    path = write_planted_meg(tmp_path / "meg" / "sub-03-epo.fif", image_folder="../images")
    with pytest.raises(ValueError) as error:
        load_brain(path)
    assert str(error.value).startswith(
        f"{path} (epochs metadata, stimulus 'x3'): image_path '../images/x3.png' leaves"
    )


def test_load_brain_unknown_format_and_missing_path(tmp_path):
    (tmp_path / "data.txt").write_text("?")
    with pytest.raises(ValueError, match=r"unknown brain data format.*responses.npy.*-epo.fif"):
        load_brain(tmp_path / "data.txt")
    with pytest.raises(ValueError, match="unknown brain data format"):
        load_brain(tmp_path)  # a folder without responses.npy
    with pytest.raises(FileNotFoundError, match="brain data not found"):
        load_brain(tmp_path / "missing-epo.fif")


def test_registered_prefix_loaders_receive_the_location(handmade_fmri_folder):
    calls = []

    def fake_loader(location, *, subject, meg_preparation):
        calls.append((location, subject))
        return load_fmri_folder(handmade_fmri_folder, subject=subject)

    register_brain_loader("fake-set", fake_loader)
    brain, _ = load_brain("fake-set:/data/root?x=1", subject="07")
    assert calls == [("/data/root?x=1", "07")]
    assert brain.subject == "07"
    with pytest.raises(ValueError, match="prefix"):
        register_brain_loader("a", fake_loader)
