"""THINGS-MEG loader on a miniature BIDS folder written with mne-bids.

MNE cannot write CTF ``.ds`` runs, so each run is a tiny ``mne.io.RawArray`` saved as FIF and
written with ``mne_bids.write_raw_bids`` (BIDS keeps the ``.fif``); the loader finds ``.ds`` and
``.fif`` runs alike through mne-bids. Planted signals: channel MLC11 carries
``(trial + 1) * 1e-12`` at the trigger onset, MLC12 ``(trial + 1) * 2e-12`` 150 ms later, where
the events.tsv onsets are put (the lag one public loader reports).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import mne
import mne_bids
import numpy as np
import pandas as pd
import pytest

from brainalign.probe.datasets import ThingsMegOptions, load_things_meg
from brainalign.probe.datasets import things_meg as things_meg_module
from brainalign.probe.formats import load_brain
from brainalign.probe.meg import MEGPreparation

pytestmark = pytest.mark.filterwarnings("ignore:.*repeats are averaged but not kept")

SFREQ = 100.0
LAG = 15  # samples (150 ms) between the trigger and the events.tsv onset
CHANNELS = ["MLC11", "MLC12", "MRO11", "BG1", "UPPT001"]
TYPES = ["mag", "mag", "mag", "ref_meg", "stim"]
# (session, run, trial_type, image_path) in recording order
TRIALS = [
    (1, 1, "exp", "images_meg/aardvark/aardvark_01b.jpg"),
    (1, 1, "test", "images_test_meg/tiger_01b.jpg"),
    (1, 1, "catch", "images_catch_meg/catch_01.jpg"),
    (1, 1, "exp", "images_meg/bee/bee_02s.jpg"),
    (1, 1, "test", "images_test_meg/umbrella_03s.jpg"),
    (2, 1, "test", "images_test_meg/tiger_01b.jpg"),
    (2, 1, "exp", "images_meg/cat/cat_04n.jpg"),
    (2, 1, "test", "images_test_meg/umbrella_03s.jpg"),
    (2, 1, "catch", "images_catch_meg/catch_02.jpg"),
    (2, 1, "exp", "images_meg/dog/dog_05n.jpg"),
]
ONSET_SAMPLES = [200, 300, 400, 500, 600]  # per run (2..6 s); recordings last 12 s
N_SAMPLES = 1200
EXACT = "l_freq=none&h_freq=none&raw_resample_hz=none&resample_hz=none&zscore=false"


def trials_of(stem: str) -> list[int]:
    return [t for t, row in enumerate(TRIALS) if Path(row[3]).stem == stem]


def write_run(root: Path, scratch: Path, subject: str, session: int, trials: list[int]) -> None:
    data = np.zeros((len(CHANNELS), N_SAMPLES))
    data[2] = np.sin(np.arange(N_SAMPLES) / 7.0) * 1e-13  # MRO11: a slow background
    for onset, trial in zip(ONSET_SAMPLES, trials):
        data[0, onset] = (trial + 1) * 1e-12
        data[1, onset + LAG] = (trial + 1) * 2e-12
        data[4, onset : onset + 3] = 64
    data[4, 1100:1103] = 32  # the end-of-run trigger
    info = mne.create_info(CHANNELS, SFREQ, TYPES)
    raw_path = scratch / f"{subject}_{session}_raw.fif"
    mne.io.RawArray(data, info, verbose="error").save(raw_path, overwrite=True, verbose="error")
    raw = mne.io.read_raw_fif(raw_path, verbose="error")
    image_numbers = [1000 + trial for trial in trials]
    events = np.column_stack(
        [np.array(ONSET_SAMPLES) + LAG, np.zeros(len(trials), int), image_numbers]
    )
    bids_path = mne_bids.BIDSPath(
        subject=subject, session=f"{session:02d}", task="main", run="01", datatype="meg", root=root
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne_bids.write_raw_bids(
            raw,
            bids_path,
            events=events,
            event_id={f"image{n}": n for n in image_numbers},
            overwrite=True,
            verbose="error",
        )


def write_attributes(root: Path, number: int) -> None:
    table = pd.DataFrame(TRIALS, columns=["session_nr", "run_nr", "trial_type", "image_path"])
    table["things_image_nr"] = 1000 + np.arange(len(TRIALS))
    table["image_on"] = 0.0
    (root / "sourcedata").mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "sourcedata" / f"sample_attributes_P{number}.csv", index=False)


@pytest.fixture(scope="module")
def bids_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds004212")
    scratch = tmp_path_factory.mktemp("scratch")
    write_run(root, scratch, "BIGMEG1", 1, [0, 1, 2, 3, 4])
    write_run(root, scratch, "BIGMEG1", 2, [5, 6, 7, 8, 9])
    write_attributes(root, 1)
    return root


@pytest.fixture
def bids_root(bids_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ds004212"
    shutil.copytree(bids_template, root)
    return root


def write_epochs(path: Path, channels: list[str], trials: list[int], offset: float = 0.0) -> None:
    """Authors'-style epochs: -0.1..0.3 s at 100 Hz with the sample attributes as metadata."""
    times = np.arange(-10, 31) / SFREQ
    data = np.zeros((len(trials), len(channels), times.size))
    for row, trial in enumerate(trials):
        data[row, :, 10] = (trial + 1) * 1e-12 + offset + np.arange(len(channels)) * 1e-14
    metadata = pd.DataFrame(
        [TRIALS[t] for t in trials], columns=["session_nr", "run_nr", "trial_type", "image_path"]
    )
    info = mne.create_info(channels, SFREQ, "mag")
    epochs = mne.EpochsArray(data, info, tmin=-0.1, metadata=metadata, verbose="error")
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs.save(path, overwrite=True, verbose="error")


# ---------------------------------------------------------------------- raw runs
def test_trigger_onsets_exact_values_catch_dropped_and_repeats_averaged(bids_root):
    brain, stimuli = load_brain(
        f"things-meg:{bids_root}?subject=1&onsets=trigger&tmin=-0.2&tmax=0.5&{EXACT}"
    )
    assert stimuli is None
    assert brain.subject == "BIGMEG1"
    assert brain.stimulus_ids == [
        "aardvark_01b", "bee_02s", "cat_04n", "dog_05n", "tiger_01b", "umbrella_03s"
    ]  # fmt: skip
    assert brain.targets["channel"].tolist() == ["MLC11", "MLC12", "MRO11"]  # no ref, no stim
    np.testing.assert_allclose(brain.times, np.arange(-20, 51) / SFREQ)
    zero = 20
    for row, stimulus_id in enumerate(brain.stimulus_ids):
        trials = trials_of(stimulus_id)
        expected = np.mean([(t + 1) * 1e-12 for t in trials])
        assert brain.data[row, 0, zero] == pytest.approx(expected, rel=1e-5)
        lagged = np.mean([(t + 1) * 2e-12 for t in trials])
        assert brain.data[row, 1, zero + LAG] == pytest.approx(lagged, rel=1e-5)
    tiger = brain.stimulus_ids.index("tiger_01b")
    assert brain.data[tiger, 0, zero] == pytest.approx((2e-12 + 6e-12) / 2, rel=1e-5)
    assert brain.repeats is None  # 1 or 2 trials per image


def test_events_tsv_onsets_are_150ms_later(bids_root):
    brain, _ = load_brain(
        f"things-meg:{bids_root}?subject=1&onsets=events&tmin=-0.2&tmax=0.5&{EXACT}"
    )
    zero = 20
    bee = brain.stimulus_ids.index("bee_02s")  # trial 3
    assert brain.data[bee, 1, zero] == pytest.approx(4 * 2e-12, rel=1e-5)
    assert brain.data[bee, 0, zero - LAG] == pytest.approx(4 * 1e-12, rel=1e-5)
    assert brain.data[bee, 0, zero] == 0.0


def test_test_split_keeps_repeats(bids_root):
    brain, _ = load_things_meg(
        bids_root,
        ThingsMegOptions(
            subject="BIGMEG1", onsets="trigger", split="test", tmin=-0.1, tmax=0.2,
            l_freq=None, h_freq=None, raw_resample_hz=None, resample_hz=None, zscore=False,
        ),
    )  # fmt: skip
    assert brain.stimulus_ids == ["tiger_01b", "umbrella_03s"]
    assert brain.repeats.shape == (2, 2, 3, 31)
    np.testing.assert_allclose(brain.repeats[:, 0, 0, 10], [2e-12, 6e-12], rtol=1e-5)
    np.testing.assert_allclose(brain.repeats[:, 1, 0, 10], [5e-12, 8e-12], rtol=1e-5)


def test_study_preprocessing_defaults_shape_and_zscore(bids_root):
    brain, _ = load_brain(
        f"things-meg:{bids_root}?subject=1&onsets=trigger&split=test&raw_resample_hz=50"
    )
    # band-pass 0.1-20 Hz, epochs -0.5..3 s, 30 Hz
    assert brain.times[0] == pytest.approx(-0.5) and brain.times[-1] == pytest.approx(3.0)
    assert brain.times.size == 106
    single = brain.repeats.reshape(-1, 3, 106)  # the 4 test trials, z-scored across trials
    np.testing.assert_allclose(single.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(single.std(axis=0), 1.0, atol=1e-4)


def test_caller_preparation_and_spec_overrides(bids_root):
    location = f"things-meg:{bids_root}?subject=1&onsets=trigger&raw_resample_hz=50"
    preparation = MEGPreparation(resample_hz=25.0, zscore=False, picks="mag")
    brain, _ = load_brain(location, meg_preparation=preparation)
    assert np.diff(brain.times)[0] == pytest.approx(1 / 25)
    brain, _ = load_brain(f"{location}&resample_hz=10", meg_preparation=preparation)
    assert np.diff(brain.times)[0] == pytest.approx(1 / 10)
    assert np.abs(brain.data).max() < 1e-10  # zscore=false kept from the caller: tesla units


def test_images_found_by_relative_path(bids_root, tmp_path):
    from PIL import Image

    images = tmp_path / "things_images"
    for _, _, _, relative in TRIALS:
        path = images / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    brain, stimuli = load_brain(
        f"things-meg:{bids_root}?subject=1&onsets=trigger&images={images}&{EXACT}&tmax=0.5"
    )
    assert stimuli.ids == brain.stimulus_ids
    assert stimuli.image_paths[0] == images / "images_meg/aardvark/aardvark_01b.jpg"


# ---------------------------------------------------------------------- epochs files
def test_authors_epochs_file(tmp_path):
    path = tmp_path / "preprocessed_P1-epo.fif"
    write_epochs(path, ["MLC11", "MLC12"], list(range(10)))
    brain, _ = load_brain(f"things-meg:{path}?resample_hz=none&zscore=false")
    assert brain.subject == "BIGMEG1"
    assert "catch_01" not in brain.stimulus_ids and len(brain.stimulus_ids) == 6
    tiger = brain.stimulus_ids.index("tiger_01b")
    assert brain.data[tiger, 1, 10] == pytest.approx((2e-12 + 6e-12) / 2 + 1e-14, rel=1e-5)
    np.testing.assert_allclose(brain.times, np.arange(-10, 31) / SFREQ)


def test_grand_average_over_shared_stimuli_and_channels(tmp_path):
    folder = tmp_path / "derivatives" / "preprocessed"
    write_epochs(folder / "preprocessed_P1-epo.fif", ["MLC11", "MLC12", "MRO11"], list(range(10)))
    write_epochs(folder / "preprocessed_P2-epo.fif", ["MLC12", "MLC11"], [0, 1, 3, 5], offset=1e-12)
    brain, _ = load_brain(
        f"things-meg:{tmp_path}?subject=average&subjects=1,2&source=epochs"
        "&resample_hz=none&zscore=false"
    )
    assert brain.subject == "average"
    assert brain.stimulus_ids == ["aardvark_01b", "bee_02s", "tiger_01b"]
    assert brain.targets["channel"].tolist() == ["MLC11", "MLC12"]
    # tiger: subject 1 trials 1, 5 -> mean 4e-12 on MLC11; subject 2 trials 1, 5 -> 4e-12 + 1e-12
    # (subject 2's MLC11 is its second channel: + 1e-14)
    expected = ((2e-12 + 6e-12) / 2 + (2e-12 + 6e-12) / 2 + 1e-12 + 1e-14) / 2
    assert brain.data[2, 0, 10] == pytest.approx(expected, rel=1e-5)
    assert brain.info["ch_names"] == ["MLC11", "MLC12"]


# ---------------------------------------------------------------------- bad input
@pytest.fixture
def no_raw_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("raw data were read before the input was checked")

    monkeypatch.setattr(things_meg_module, "_epoch_run", refuse)


def test_onset_source_is_required(bids_root, no_raw_reading):
    with pytest.raises(ValueError, match="explicit onset source: add onsets=trigger"):
        load_brain(f"things-meg:{bids_root}?subject=1")
    with pytest.raises(ValueError, match="'onsets' must be one of"):
        load_brain(f"things-meg:{bids_root}?subject=1&onsets=photodiode")


def test_bids_folder_without_events(bids_root, no_raw_reading):
    for path in bids_root.rglob("*_events.tsv"):
        path.unlink()
    with pytest.raises(
        FileNotFoundError, match=r"looked for sub-BIGMEG1_ses-01_task-main_run-01_events.tsv"
    ):
        load_brain(f"things-meg:{bids_root}?subject=1&onsets=events")


def test_missing_trigger_channel(bids_root):
    with pytest.raises(ValueError, match="no trigger channel 'STI101'.*onsets=events"):
        load_brain(f"things-meg:{bids_root}?subject=1&onsets=trigger&trigger_channel=STI101")


def test_subjects_sessions_and_trial_table(bids_root, no_raw_reading):
    with pytest.raises(
        FileNotFoundError, match=r"sub-BIGMEG3.*subjects present: \['sub-BIGMEG1'\]"
    ):
        load_brain(f"things-meg:{bids_root}?subject=3&onsets=trigger")
    with pytest.raises(ValueError, match="subject must be 1..4"):
        load_brain(f"things-meg:{bids_root}?subject=7&onsets=trigger")
    with pytest.raises(ValueError, match=r"no session\(s\) \[5\].*sessions found: \[1, 2\]"):
        load_brain(f"things-meg:{bids_root}?subject=1&onsets=trigger&sessions=5")
    table = bids_root / "sourcedata" / "sample_attributes_P1.csv"
    pd.read_csv(table).query("session_nr == 1").to_csv(table, index=False)
    with pytest.raises(ValueError, match="list no trial for session 2 run 1"):
        load_brain(f"things-meg:{bids_root}?subject=1&onsets=trigger")
    table.unlink()
    with pytest.raises(
        FileNotFoundError, match=r"looked for sample_attributes_P1.csv in .*sourcedata"
    ):
        load_brain(f"things-meg:{bids_root}?subject=1&onsets=trigger")


def test_onsets_and_trial_table_disagree(bids_root):
    table = bids_root / "sourcedata" / "sample_attributes_P1.csv"
    attributes = pd.read_csv(table)
    pd.concat([attributes.iloc[:5], attributes.iloc[[4]], attributes.iloc[5:]]).to_csv(
        table, index=False
    )
    with pytest.raises(ValueError, match="session 01 run 01: 5 onsets .* list 6 trials"):
        load_brain(f"things-meg:{bids_root}?subject=1&onsets=trigger")


def test_epochs_without_metadata(tmp_path):
    path = tmp_path / "preprocessed_P1-epo.fif"
    info = mne.create_info(["MLC11"], SFREQ, "mag")
    mne.EpochsArray(np.zeros((2, 1, 5)), info, verbose="error").save(path, verbose="error")
    with pytest.raises(ValueError, match=r"needs \['trial_type', 'image_path'\]"):
        load_brain(f"things-meg:{path}")


def test_runs_with_different_bad_channels_keep_the_shared_ones(bids_root):
    bids_path = mne_bids.BIDSPath(
        subject="BIGMEG1", session="02", task="main", run="01", datatype="meg", root=bids_root
    )
    mne_bids.mark_channels(bids_path, ch_names=["MLC12"], status="bad", verbose="error")
    with pytest.warns(UserWarning, match=r"dropping \['MLC12'\]"):
        brain, _ = load_brain(
            f"things-meg:{bids_root}?subject=1&onsets=trigger&tmin=-0.2&tmax=0.5&{EXACT}"
        )
    assert brain.targets["channel"].tolist() == ["MLC11", "MRO11"]
    assert brain.info["ch_names"] == ["MLC11", "MRO11"]
    tiger = brain.stimulus_ids.index("tiger_01b")
    assert brain.data[tiger, 0, 20] == pytest.approx(4e-12, rel=1e-5)
