"""THINGS-fMRI loader on a miniature betas_csv folder.

The response file is a pandas HDF5 frame in the "fixed" format. PyTables (which
``DataFrame.to_hdf`` needs) is not installed here, so :func:`write_fixed_frame` writes the same
layout with h5py: a group with ``pandas_type='frame'``, ``axis0`` (column labels), ``axis1``
(row index) and ``block{i}_items`` / ``block{i}_values`` (stored transposed, rows first, with
the ``transposed`` attribute), as ``pandas.io.pytables.BlockManagerFixed.write`` lays it out.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brainalign.probe.datasets import ThingsFmriOptions, load_things_fmri
from brainalign.probe.datasets.things_fmri import detect_roi_columns, read_pandas_fixed_frame
from brainalign.probe.formats import load_brain

pytestmark = pytest.mark.filterwarnings("ignore:.*repeats are averaged but not kept")

N_VOXELS = 10
VOXEL_IDS = np.arange(N_VOXELS) * 3 + 100
# trial table: 4 train images once, 2 test images x 3 repeats, 1 catch trial
TRIALS = [
    # session, stimulus, concept, trial_type
    (1, "dog_01b.jpg", "dog", "train"),
    (1, "cat_02s.jpg", "cat", "train"),
    (1, "aardvark_01b.jpg", "aardvark", "test"),
    (1, "zebra_03n.jpg", "zebra", "test"),
    (1, "catch_07.jpg", "catch", "catch"),
    (1, "aardvark_01b.jpg", "aardvark", "test"),
    (2, "owl_05s.jpg", "owl", "train"),
    (2, "zebra_03n.jpg", "zebra", "test"),
    (2, "bee_09n.jpg", "bee", "train"),
    (2, "aardvark_01b.jpg", "aardvark", "test"),
    (2, "zebra_03n.jpg", "zebra", "test"),
]


def beta(voxel: int, trial: int) -> float:
    return 1000.0 * voxel + trial + 0.5


def write_fixed_frame(
    path: Path, key: str, trial_values: np.ndarray, voxel_ids: np.ndarray
) -> None:
    """A (n_voxels, 1 + n_trials) frame: voxel_id then trial columns 0..n_trials-1."""
    n_voxels, n_trials = trial_values.shape
    with h5py.File(path, "w") as handle:
        group = handle.create_group(key)
        group.attrs["pandas_type"] = np.bytes_("frame")
        group.attrs["pandas_version"] = np.bytes_("0.15.2")
        group.attrs["ndim"] = 2
        group.attrs["nblocks"] = 2
        group.attrs["axis0_variety"] = np.bytes_("regular")
        group.attrs["axis1_variety"] = np.bytes_("regular")
        labels = np.array([b"voxel_id", *[str(t).encode() for t in range(n_trials)]])
        group.create_dataset("axis0", data=labels)
        group.create_dataset("axis1", data=np.arange(n_voxels, dtype=np.int64))
        # block 0: float trials (stored transposed: rows first), block 1: int voxel ids
        group.create_dataset("block0_items", data=labels[1:])
        values = group.create_dataset("block0_values", data=trial_values.astype(np.float32))
        values.attrs["transposed"] = 1
        group.create_dataset("block1_items", data=labels[:1])
        ids = group.create_dataset("block1_values", data=voxel_ids.reshape(-1, 1))
        ids.attrs["transposed"] = 1


def build(root: Path, *, subject: int = 1, with_images: bool = True) -> Path:
    folder = root / "betas_csv"
    folder.mkdir(parents=True)
    prefix = f"sub-{subject:02d}"
    voxels = pd.DataFrame(
        {
            "voxel_id": VOXEL_IDS,
            "subject_id": subject,
            "voxel_x": np.arange(N_VOXELS) + 10,
            "voxel_y": np.arange(N_VOXELS) * 2,
            "voxel_z": np.full(N_VOXELS, 7),
            "nc_singletrial": np.linspace(1, 10, N_VOXELS),
            "nc_testset": np.linspace(20, 65, N_VOXELS),
            "splithalf_corrected": np.zeros(N_VOXELS),
            "prf-eccentricity": np.ones(N_VOXELS),  # 0/1-valued but not an ROI
            "V1": [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            "hV4": [0, 0, 1, 1, 0, 0, 0, 0, 0, 0],
            "glasser-V1": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0],
            "glasser-FFC": [0, 0, 0, 1, 0, 0, 1, 1, 0, 0],
        }
    )
    voxels.to_csv(folder / f"{prefix}_VoxelMetadata.csv", index=False)
    trials = pd.DataFrame(TRIALS, columns=["session", "stimulus", "concept", "trial_type"])
    trials.insert(0, "subject_id", subject)
    trials["run"] = 1
    trials.to_csv(folder / f"{prefix}_StimulusMetadata.csv", index=False)
    planted = np.array([[beta(v, t) for t in range(len(TRIALS))] for v in range(N_VOXELS)])
    write_fixed_frame(folder / f"{prefix}_ResponseData.h5", "ResponseData", planted, VOXEL_IDS)
    if with_images:
        for _, stimulus, concept, _ in TRIALS:
            path = root / "images" / concept / stimulus
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((3, 3, 3), len(concept), np.uint8)).save(path)
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build(tmp_path)


def trials_of(stem: str) -> list[int]:
    return [t for t, (_, stimulus, _, kind) in enumerate(TRIALS) if stimulus.startswith(stem + ".")]


def test_fixed_frame_reader_matches_a_loop(root):
    path = root / "betas_csv/sub-01_ResponseData.h5"
    rows = np.array([1, 4, 5, 9])
    values = read_pandas_fixed_frame(path, ["3", "voxel_id", "0"], rows, chunk_rows=3)
    expected = [[beta(v, 3), VOXEL_IDS[v], beta(v, 0)] for v in rows]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_all_split_values_ids_and_catch_removed(root):
    brain, stimuli = load_brain(f"things-fmri:{root}?subject=1")
    assert brain.stimulus_ids == sorted(
        ["aardvark_01b", "bee_09n", "cat_02s", "dog_01b", "owl_05s", "zebra_03n"]
    )  # catch_07 dropped
    # default ROI columns in file order: V1, hV4, glasser-V1, glasser-FFC; voxels 8, 9 in none
    assert brain.targets["roi"].tolist() == [
        "V1", "V1", "hV4", "hV4", "glasser-V1", "glasser-FFC", "glasser-FFC"
    ]  # fmt: skip
    assert brain.targets["voxel_id"].tolist() == VOXEL_IDS[[0, 1, 2, 3, 5, 6, 7]].tolist()
    for r, stimulus_id in enumerate(brain.stimulus_ids):
        for c, voxel in enumerate([0, 1, 2, 3, 5, 6, 7]):
            expected = np.mean([beta(voxel, t) for t in trials_of(stimulus_id)])
            assert brain.data[r, c] == pytest.approx(expected, rel=1e-6)
    zebra = brain.stimulus_ids.index("zebra_03n")
    assert brain.data[zebra, 5] == pytest.approx(np.mean([beta(6, t) for t in (3, 7, 10)]))
    assert brain.repeats is None and brain.noise_ceiling is None
    assert stimuli.ids == brain.stimulus_ids
    assert stimuli.image_paths[0].parts[-2:] == ("aardvark", "aardvark_01b.jpg")


def test_test_split_repeats_and_noise_ceiling(root):
    brain, _ = load_things_fmri(root, ThingsFmriOptions(subject=1, split="test", rois=("hV4",)))
    assert brain.stimulus_ids == ["aardvark_01b", "zebra_03n"]
    assert brain.repeats.shape == (3, 2, 2)
    np.testing.assert_allclose(brain.repeats[:, 0, 1], [beta(3, t) for t in (2, 5, 9)])
    np.testing.assert_allclose(brain.repeats[:, 1, 0], [beta(2, t) for t in (3, 7, 10)])
    np.testing.assert_allclose(brain.noise_ceiling, np.linspace(20, 65, N_VOXELS)[[2, 3]])
    train, _ = load_things_fmri(root, ThingsFmriOptions(subject=1, split="train", rois=("V1",)))
    assert train.stimulus_ids == ["bee_09n", "cat_02s", "dog_01b", "owl_05s"]
    np.testing.assert_allclose(train.noise_ceiling, [1.0, 2.0])


def test_roi_priority_coordinates_and_detection(root):
    brain, _ = load_brain(f"things-fmri:{root}?subject=1&rois=glasser-FFC,V1&voxel_size_mm=2.5")
    assert brain.targets["roi"].tolist() == [
        "V1",
        "V1",
        "glasser-FFC",
        "glasser-FFC",
        "glasser-FFC",
    ]
    assert brain.targets["voxel_x"].tolist() == [10, 11, 13, 16, 17]
    np.testing.assert_allclose(brain.targets["x"], np.array([10, 11, 13, 16, 17]) * 2.5)
    np.testing.assert_allclose(brain.targets["y"], np.array([0, 2, 6, 12, 14]) * 2.5)
    voxels = pd.read_csv(root / "betas_csv/sub-01_VoxelMetadata.csv")
    assert detect_roi_columns(voxels) == ["V1", "hV4", "glasser-V1", "glasser-FFC"]


def test_zscore_sessions(root):
    brain, _ = load_brain(f"things-fmri:{root}?subject=1&rois=V1&zscore_sessions=true")
    usable = [t for t, row in enumerate(TRIALS) if row[3] != "catch"]
    raw = np.array([beta(1, t) for t in usable])
    sessions = np.array([TRIALS[t][0] for t in usable])
    z = np.empty_like(raw)
    for s in (1, 2):
        z[sessions == s] = (raw[sessions == s] - raw[sessions == s].mean()) / raw[
            sessions == s
        ].std()
    by_trial = dict(zip(usable, z))
    row = brain.stimulus_ids.index("aardvark_01b")
    assert brain.data[row, 1] == pytest.approx(np.mean([by_trial[t] for t in (2, 5, 9)]), abs=1e-5)


# ---------------------------------------------------------------------- bad input
def test_missing_files_and_subjects(root):
    with pytest.raises(
        FileNotFoundError, match=r"looked for sub-02_ResponseData.h5 in .*betas_csv"
    ):
        load_brain(f"things-fmri:{root}?subject=2")
    with pytest.raises(ValueError, match="subject must be 1..3; got 4"):
        load_brain(f"things-fmri:{root}?subject=4")
    (root / "betas_csv/sub-01_VoxelMetadata.csv").unlink()
    with pytest.raises(FileNotFoundError, match="sub-01_VoxelMetadata.csv"):
        load_brain(f"things-fmri:{root}?subject=1")


def test_trial_count_and_voxel_mismatch(root):
    table = root / "betas_csv/sub-01_StimulusMetadata.csv"
    trials = pd.read_csv(table)
    trials.iloc[:-1].to_csv(table, index=False)
    with pytest.raises(ValueError, match="11 trial columns but .* lists 10 trials"):
        load_brain(f"things-fmri:{root}?subject=1")
    trials.to_csv(table, index=False)
    voxels_path = root / "betas_csv/sub-01_VoxelMetadata.csv"
    voxels = pd.read_csv(voxels_path)
    voxels.assign(voxel_id=voxels["voxel_id"][::-1].to_numpy()).to_csv(voxels_path, index=False)
    with pytest.raises(ValueError, match="voxel_id differs"):
        load_brain(f"things-fmri:{root}?subject=1")
    voxels.iloc[:-1].to_csv(voxels_path, index=False)
    with pytest.raises(ValueError, match="10 voxel rows but .* has 9"):
        load_brain(f"things-fmri:{root}?subject=1")


def test_unknown_roi_and_table_format(root):
    with pytest.raises(ValueError, match=r"ROI columns \['V7'\] not in .*ROI columns: \['V1'"):
        load_brain(f"things-fmri:{root}?subject=1&rois=V7")
    with pytest.raises(ValueError, match="split' must be one of"):
        load_brain(f"things-fmri:{root}?subject=1&split=validation")
    path = root / "betas_csv/sub-01_ResponseData.h5"
    with h5py.File(path, "a") as handle:
        handle["ResponseData"].attrs["pandas_type"] = np.bytes_("frame_table")
    with pytest.raises(ValueError, match="'frame_table' format"):
        load_brain(f"things-fmri:{root}?subject=1")


def test_missing_images_named(tmp_path):
    build(tmp_path, with_images=False)
    (tmp_path / "pictures").mkdir()
    with pytest.raises(FileNotFoundError, match="no image file under .*'aardvark_01b'"):
        load_brain(f"things-fmri:{tmp_path}?subject=1&images={tmp_path / 'pictures'}")
    brain, stimuli = load_brain(f"things-fmri:{tmp_path}?subject=1")
    assert stimuli is None and brain.n_stimuli == 6


def test_noise_ceilings_are_declared_percent_and_voxels_index_a_grid(root):
    brain, _ = load_things_fmri(root, ThingsFmriOptions(subject=1, split="test", rois=("hV4",)))
    assert brain.noise_ceiling_unit == "percent"
    np.testing.assert_allclose(brain.noise_ceiling_fraction(), brain.noise_ceiling / 100)
    np.testing.assert_array_equal(brain.affine, np.diag([2.0, 2.0, 2.0, 1.0]))  # voxel_size_mm
    xyz = brain.targets[["x", "y", "z"]].to_numpy()
    ijk = brain.voxel_indices()
    np.testing.assert_allclose(np.c_[ijk, np.ones(len(ijk))] @ brain.affine.T[:, :3], xyz)
