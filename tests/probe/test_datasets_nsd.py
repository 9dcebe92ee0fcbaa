"""NSD loader on a miniature NSD tree written with the real writers (scipy.io.savemat, pandas,
h5py, nibabel): planted values, 1-based design vs 0-based nsdId, /300, axis order, repeats."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from brainalign.probe.datasets import nsd as nsd_module
from brainalign.probe.datasets.nsd import NSDOptions, load_nsd, nsd_trial_images
from brainalign.probe.formats import load_brain

pytestmark = pytest.mark.filterwarnings("ignore:.*repeats are averaged but not kept")

TRIALS = 6  # trials per session in the miniature (750 in NSD)
N_IMAGES = 25  # rows of the miniature imgBrick (73,000 in NSD)
# 1-based nsdIds of subject 1's first 10 images (subjectim row 0)
SUBJECT1_IMAGES_1BASED = np.array([11, 3, 7, 20, 15, 1, 9, 4, 2, 18])
# 1-based positions in the subject's image list, per trial; sessions 1, 2 (and 3, no files)
MASTER = np.array([1, 2, 3, 1, 4, 5, 2, 1, 6, 3, 7, 2, 8, 9, 10, 8, 9, 10])
SHARED_0BASED = {10, 2, 19}  # shared1000 flags in the CSV (0-based nsdIds)
VERTICES = {"lh": 9, "rh": 11}  # unequal on purpose
GRID = (5, 6, 7)  # NIfTI (X, Y, Z); the HDF5 betas are (trials, 7, 6, 5)
SPACING = 1.8
ORIGIN = np.array([-4.0, -10.0, 2.0])
PRF_NAMES = {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v", 7: "hV4"}


def image_of_trial(global_trial: int) -> int:
    """0-based nsdId of a 0-based trial, computed independently of the loader."""
    return int(SUBJECT1_IMAGES_1BASED[MASTER[global_trial] - 1] - 1)


def surface_beta(hemi: str, global_trial: int, vertex: int) -> float:
    return (1000.0 if hemi == "rh" else 0.0) + 10.0 * global_trial + 0.25 * vertex


def volume_beta_int(global_trial: int, i: int, j: int, k: int) -> int:
    return 2 * (global_trial * 1000 + i * 100 + j * 10 + k)


def prf_labels(hemi: str) -> np.ndarray:
    labels = np.zeros(VERTICES[hemi], dtype=np.int32)
    labels[[1, 2]] = 1  # V1v
    labels[3] = 2  # V1d
    labels[5] = 7  # hV4
    labels[0] = -1
    return labels


def nsdgeneral_labels(hemi: str) -> np.ndarray:
    labels = np.zeros(VERTICES[hemi], dtype=np.int32)
    labels[[2, 4, 5, 6]] = 1
    return labels


def write_mgh(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.MGHImage(array, np.eye(4)), str(path))


def build_common(root: Path, *, csv_trial_offset: int = 0) -> None:
    """Design, stimulus table and image brick."""
    experiments = root / "nsddata" / "experiments" / "nsd"
    experiments.mkdir(parents=True)
    subjectim = np.tile(np.arange(1, 11), (8, 1))
    subjectim[0] = SUBJECT1_IMAGES_1BASED
    savemat(
        experiments / "nsd_expdesign.mat",
        {
            "masterordering": MASTER[None, :].astype(np.float64),  # MATLAB doubles, (1, n)
            "subjectim": subjectim.astype(np.float64),
            "sharedix": np.array([[11, 3, 20]], dtype=np.float64),
        },
    )
    table = pd.DataFrame({"nsdId": np.arange(N_IMAGES), "cocoId": np.arange(N_IMAGES) + 500})
    table["shared1000"] = table["nsdId"].isin(SHARED_0BASED)
    reps = np.zeros((N_IMAGES, 3), dtype=np.int64)
    filled = np.zeros(N_IMAGES, dtype=np.int64)
    for trial in range(len(MASTER)):
        image = image_of_trial(trial)
        reps[image, filled[image]] = trial + 1 + csv_trial_offset  # 1-based trial numbers
        filled[image] += 1
    for r in range(3):
        table[f"subject1_rep{r}"] = reps[:, r]
    table.to_csv(experiments / "nsd_stim_info_merged.csv")
    stimuli = root / "nsddata_stimuli" / "stimuli" / "nsd"
    stimuli.mkdir(parents=True)
    brick = np.zeros((N_IMAGES, 4, 5, 3), dtype=np.uint8)
    brick[:] = (np.arange(N_IMAGES, dtype=np.uint8) * 7)[:, None, None, None]
    with h5py.File(stimuli / "nsd_stimuli.hdf5", "w") as handle:
        handle.create_dataset("imgBrick", data=brick)


def build_surface(
    root: Path, *, sessions=(1, 2), with_white: bool = True, random_scale: float | None = None
) -> dict[str, np.ndarray]:
    """Surface betas: :func:`surface_beta`, or with ``random_scale`` float32 normal noise of
    that scale; returns the betas written, per hemisphere (n_vertices, all trials)."""
    betas = root / "nsddata_betas" / "ppdata" / "subj01" / "fsaverage"
    betas = betas / "betas_fithrf_GLMdenoise_RR"
    fsaverage = root / "nsddata" / "freesurfer" / "fsaverage"
    rng = np.random.default_rng(7)
    written = {}
    for hemi, n in VERTICES.items():
        written[hemi] = np.full((n, len(MASTER)), np.nan, dtype=np.float32)
        for session in sessions:
            frames = np.zeros((n, 1, 1, TRIALS), dtype=np.float32)
            for local in range(TRIALS):
                trial = (session - 1) * TRIALS + local
                frames[:, 0, 0, local] = (
                    [surface_beta(hemi, trial, v) for v in range(n)]
                    if random_scale is None
                    else random_scale * rng.standard_normal(n, dtype=np.float32)
                )
                written[hemi][:, trial] = frames[:, 0, 0, local]
            write_mgh(betas / f"{hemi}.betas_session{session:02d}.mgh", frames)
        ncsnr = (0.1 * (np.arange(n) + 1)).astype(np.float32).reshape(n, 1, 1)
        write_mgh(betas / f"{hemi}.ncsnr.mgh", ncsnr)
        write_mgh(
            fsaverage / "label" / f"{hemi}.prf-visualrois.mgz", prf_labels(hemi)[:, None, None]
        )
        write_mgh(
            fsaverage / "label" / f"{hemi}.nsdgeneral.mgz", nsdgeneral_labels(hemi)[:, None, None]
        )
        if with_white:
            (fsaverage / "surf").mkdir(parents=True, exist_ok=True)
            sign = -1.0 if hemi == "lh" else 1.0
            coordinates = np.column_stack(
                [sign * (10.0 + np.arange(n)), -np.arange(n) * 2.0, np.full(n, 5.0)]
            )
            nib.freesurfer.write_geometry(
                str(fsaverage / "surf" / f"{hemi}.white"),
                coordinates,
                np.array([[0, 1, 2]], dtype=np.int32),
            )
    ctab = "\n".join(f"{value} {name}" for value, name in PRF_NAMES.items()) + "\n"
    (fsaverage / "label" / "prf-visualrois.mgz.ctab").write_text(ctab)
    return written


def build_volume(root: Path, *, sessions=(1, 2)) -> np.ndarray:
    betas = root / "nsddata_betas" / "ppdata" / "subj01" / "func1pt8mm"
    betas = betas / "betas_fithrf_GLMdenoise_RR"
    betas.mkdir(parents=True)
    x, y, z = GRID
    for session in sessions:
        block = np.zeros((TRIALS, z, y, x), dtype=np.int16)  # (trials, Z, Y, X)
        for local in range(TRIALS):
            trial = (session - 1) * TRIALS + local
            for i in range(x):
                for j in range(y):
                    for k in range(z):
                        block[local, k, j, i] = volume_beta_int(trial, i, j, k)
        with h5py.File(betas / f"betas_session{session:02d}.hdf5", "w") as handle:
            handle.create_dataset("betas", data=block)
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = ORIGIN
    ncsnr = np.arange(np.prod(GRID), dtype=np.float32).reshape(GRID) / 100.0
    nib.save(nib.Nifti1Image(ncsnr, affine), str(betas / "ncsnr.nii.gz"))
    rois = root / "nsddata" / "ppdata" / "subj01" / "func1pt8mm" / "roi"
    rois.mkdir(parents=True)
    lh = np.zeros(GRID, dtype=np.int16) - 1
    rh = np.zeros(GRID, dtype=np.int16) - 1
    lh[1, 2, 3] = 1  # V1v
    lh[0, 5, 6] = 2  # V1d
    rh[4, 1, 0] = 1  # V1v
    rh[3, 4, 5] = 7  # hV4
    nib.save(nib.Nifti1Image(lh, affine), str(rois / "lh.prf-visualrois.nii.gz"))
    nib.save(nib.Nifti1Image(rh, affine), str(rois / "rh.prf-visualrois.nii.gz"))
    labels = root / "nsddata" / "freesurfer" / "subj01" / "label"
    labels.mkdir(parents=True)
    ctab = "\n".join(f"{value} {name}" for value, name in PRF_NAMES.items()) + "\n"
    (labels / "prf-visualrois.mgz.ctab").write_text(ctab)
    return affine


def trials_of(nsd_id: int, sessions=(1, 2)) -> list[int]:
    return [
        t
        for s in sessions
        for t in range((s - 1) * TRIALS, s * TRIALS)
        if image_of_trial(t) == nsd_id
    ]


@pytest.fixture
def surface_root(tmp_path: Path) -> Path:
    build_common(tmp_path)
    build_surface(tmp_path)
    return tmp_path


@pytest.fixture
def volume_root(tmp_path: Path) -> Path:
    build_common(tmp_path)
    build_volume(tmp_path)
    return tmp_path


def spec(root: Path, query: str) -> str:
    return f"nsd:{root}?subject=1&trials_per_session={TRIALS}&{query}"


# ---------------------------------------------------------------------- design mapping
def test_trial_images_convert_1based_design_to_0based_nsd_ids(surface_root):
    nsd_ids = nsd_trial_images(
        surface_root / "nsddata/experiments/nsd/nsd_expdesign.mat", 1, (2,), TRIALS
    )
    # session 2 trial 0: masterordering[6] = 2 -> subjectim[0, 1] = 3 (1-based) -> nsdId 2
    assert nsd_ids[0] == 2
    assert nsd_ids.tolist() == [image_of_trial(t) for t in range(6, 12)]


# ---------------------------------------------------------------------- surface
def test_surface_betas_average_repeats_with_planted_values(surface_root):
    brain, _ = load_brain(spec(surface_root, "rois=prf-visualrois"))
    expected_images = sorted({image_of_trial(t) for t in range(12)})
    assert brain.stimulus_ids == [f"nsd{i:05d}" for i in expected_images]
    # named image: nsdId 10 (1-based 11, subject image 1) on trials 0, 3 and 7
    assert trials_of(10) == [0, 3, 7]
    row = brain.stimulus_ids.index("nsd00010")
    targets = brain.targets
    column = targets.index[(targets["hemi"] == "rh") & (targets["vertex"] == 5)][0]
    expected = np.mean([surface_beta("rh", t, 5) for t in (0, 3, 7)])
    assert brain.data[row, column] == pytest.approx(expected, rel=1e-6)
    # every value against a straightforward loop
    for r, stimulus_id in enumerate(brain.stimulus_ids):
        trials = trials_of(int(stimulus_id[3:]))
        for c, (hemi, vertex) in enumerate(zip(targets["hemi"], targets["vertex"])):
            reference = np.mean([surface_beta(hemi, t, vertex) for t in trials])
            assert brain.data[r, c] == pytest.approx(reference, rel=1e-6)
    # surface betas are float32 percent signal change: no /300
    assert brain.data.max() > 1000


def test_surface_targets_rois_coordinates_and_noise_ceiling(surface_root):
    with pytest.warns(UserWarning, match="images have 1 to 3 trials"):
        brain, _ = load_brain(spec(surface_root, "rois=prf-visualrois"))
    targets = brain.targets
    lh = targets[targets["hemi"] == "lh"]
    assert lh["vertex"].tolist() == [1, 2, 3, 5]  # label -1 and 0 left out
    assert lh["roi"].tolist() == ["V1v", "V1v", "V1d", "hV4"]
    assert len(targets) == 8 and targets["hemi"].tolist()[4:] == ["rh"] * 4
    # coordinates from the planted white surfaces
    rh_v5 = targets[(targets["hemi"] == "rh") & (targets["vertex"] == 5)].iloc[0]
    assert (rh_v5["x"], rh_v5["y"], rh_v5["z"]) == (15.0, -10.0, 5.0)
    # bilateral centroid mirrors x: V1v = lh vertices 1, 2 and rh vertices 1, 2 -> |x| 11, 12
    v1v = brain.rois.set_index("roi").loc["V1v"]
    assert v1v["x"] == pytest.approx(11.5) and v1v["n_targets"] == 4
    # noise ceiling: counts 3, 3, 2, 1, 1, 1, 1 over the 7 images -> mean(1/k)
    counts = np.array([len(trials_of(int(i[3:]))) for i in brain.stimulus_ids])
    assert sorted(counts.tolist()) == [1, 1, 1, 1, 2, 3, 3]
    ncsnr = 0.1 * (targets["vertex"].to_numpy() + 1)
    expected = 100 * ncsnr**2 / (ncsnr**2 + np.mean(1 / counts))
    np.testing.assert_allclose(brain.noise_ceiling, expected, rtol=1e-5)
    assert brain.repeats is None  # unequal counts


def test_min_repeats_keeps_repeats_and_uses_nsd_ceiling(surface_root):
    from brainalign.probe.scores import noise_ceiling_from_ncsnr

    brain, _ = load_brain(spec(surface_root, "rois=nsdgeneral&min_repeats=3"))
    assert brain.stimulus_ids == ["nsd00002", "nsd00010"]
    assert brain.repeats.shape == (3, 2, len(brain.targets))
    column = brain.targets.index[(brain.targets["hemi"] == "lh")].tolist()[1]
    vertex = brain.targets.loc[column, "vertex"]
    for repeat, trial in enumerate(trials_of(2)):
        assert brain.repeats[repeat, 0, column] == pytest.approx(surface_beta("lh", trial, vertex))
    np.testing.assert_allclose(brain.repeats.mean(axis=0), brain.data, rtol=1e-6)
    ncsnr = 0.1 * (brain.targets["vertex"].to_numpy() + 1)
    np.testing.assert_allclose(brain.noise_ceiling, noise_ceiling_from_ncsnr(ncsnr, 3), rtol=1e-5)
    assert set(brain.targets["roi"]) == {"nsdgeneral"}


def test_shared1000_sessions_labels_and_split_hemis(surface_root):
    brain, _ = load_brain(
        spec(surface_root, "sessions=2&shared1000=true&rois=prf-visualrois&labels=V1v&split_hemis")
    )
    assert brain.stimulus_ids == ["nsd00002", "nsd00010"]  # session 2 images flagged shared
    assert sorted(set(brain.targets["roi"])) == ["lh.V1v", "rh.V1v"]
    column = brain.targets.index[(brain.targets["hemi"] == "lh")][0]
    trials = [t for t in trials_of(10) if t >= 6]
    assert brain.data[1, column] == pytest.approx(
        np.mean([surface_beta("lh", t, 1) for t in trials])
    )


def test_family_priority_first_family_wins(surface_root):
    brain, _ = load_brain(spec(surface_root, "rois=nsdgeneral,prf-visualrois&hemis=lh"))
    by_vertex = dict(zip(brain.targets["vertex"], brain.targets["roi"]))
    assert by_vertex == {
        1: "V1v", 2: "nsdgeneral", 3: "V1d", 4: "nsdgeneral", 5: "nsdgeneral", 6: "nsdgeneral"
    }  # fmt: skip
    brain, _ = load_brain(spec(surface_root, "rois=prf-visualrois,nsdgeneral&hemis=lh"))
    assert dict(zip(brain.targets["vertex"], brain.targets["roi"]))[5] == "hV4"


def test_zscore_sessions(surface_root):
    brain, _ = load_brain(spec(surface_root, "rois=prf-visualrois&zscore_sessions=true"))
    targets = brain.targets
    column = targets.index[(targets["hemi"] == "lh") & (targets["vertex"] == 3)][0]
    raw = {t: surface_beta("lh", t, 3) for t in range(12)}
    zscored = {}
    for session in (0, 1):
        values = np.array([raw[t] for t in range(6 * session, 6 * session + 6)])
        for t, z in zip(
            range(6 * session, 6 * session + 6), (values - values.mean()) / values.std()
        ):
            zscored[t] = z
    row = brain.stimulus_ids.index("nsd00010")
    assert brain.data[row, column] == pytest.approx(
        np.mean([zscored[t] for t in (0, 3, 7)]), abs=1e-5
    )


def test_stimuli_read_lazily_by_nsd_id(surface_root, monkeypatch):
    brain, stimuli = load_brain(spec(surface_root, "rois=prf-visualrois"))
    assert stimuli.ids == brain.stimulus_ids and stimuli.image_paths is None
    images = stimuli.load_array([0, 3])  # nsd00000 and the 4th id
    assert images[0, 0, 0, 0] == 0
    assert images[1, 0, 0, 0] == int(brain.stimulus_ids[3][3:]) * 7


def test_no_white_surface_gives_nan_with_warning(tmp_path):
    build_common(tmp_path)
    build_surface(tmp_path, with_white=False)
    with pytest.warns(UserWarning, match=r"no (lh|rh)\.white"):
        brain, _ = load_brain(spec(tmp_path, "rois=prf-visualrois"))
    assert brain.targets[["x", "y", "z"]].isna().all().all()


# ---------------------------------------------------------------------- volume
def test_volume_axis_order_scale_and_affine(volume_root):
    brain, _ = load_brain(spec(volume_root, "space=func1pt8mm&rois=prf-visualrois"))
    targets = brain.targets
    voxels = list(zip(targets["voxel_i"], targets["voxel_j"], targets["voxel_k"]))
    assert voxels == [(0, 5, 6), (1, 2, 3), (3, 4, 5), (4, 1, 0)]  # lh then rh, C order
    assert targets["roi"].tolist() == ["V1d", "V1v", "hV4", "V1v"]
    assert targets["hemi"].tolist() == ["lh", "lh", "rh", "rh"]
    row = brain.stimulus_ids.index("nsd00010")
    # voxel (i, j, k) = (1, 2, 3) of the NIfTI is betas[:, 3, 2, 1]; int16 / 300
    expected = np.mean([volume_beta_int(t, 1, 2, 3) / 300.0 for t in (0, 3, 7)])
    assert brain.data[row, 1] == pytest.approx(expected, rel=1e-6)
    for c, (i, j, k) in enumerate(voxels):
        for r, stimulus_id in enumerate(brain.stimulus_ids):
            reference = np.mean(
                [volume_beta_int(t, i, j, k) / 300 for t in trials_of(int(stimulus_id[3:]))]
            )
            assert brain.data[r, c] == pytest.approx(reference, rel=1e-6)
    xyz = targets.loc[1, ["x", "y", "z"]].to_numpy(dtype=float)
    np.testing.assert_allclose(xyz, ORIGIN + SPACING * np.array([1, 2, 3]))
    ncsnr = np.array([(i * 42 + j * 7 + k) / 100.0 for i, j, k in voxels])  # C order (5, 6, 7)
    counts = np.array([len(trials_of(int(s[3:]))) for s in brain.stimulus_ids])
    np.testing.assert_allclose(
        brain.noise_ceiling, 100 * ncsnr**2 / (ncsnr**2 + np.mean(1 / counts)), rtol=1e-5
    )


def test_volume_roi_grid_must_match_betas(volume_root):
    rois = volume_root / "nsddata/ppdata/subj01/func1pt8mm/roi"
    affine = np.eye(4)
    wrong = np.zeros((7, 6, 5), dtype=np.int16)  # the betas' own (Z, Y, X) order
    nib.save(nib.Nifti1Image(wrong, affine), str(rois / "lh.prf-visualrois.nii.gz"))
    with pytest.raises(ValueError, match=r"shape \(7, 6, 5\).*grid is \(5, 6, 7\)"):
        load_brain(spec(volume_root, "space=func1pt8mm&rois=prf-visualrois"))


# ---------------------------------------------------------------------- bad input
@pytest.fixture
def no_heavy_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("betas were read before the input was checked")

    monkeypatch.setattr(nsd_module, "_read_session", refuse)


def test_missing_design_names_file_and_folder(surface_root, no_heavy_reading):
    design = surface_root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    design.unlink()
    with pytest.raises(FileNotFoundError, match=r"nsd_expdesign.mat in .*experiments[/\\]nsd"):
        load_brain(spec(surface_root, "rois=nsdgeneral"))


def test_not_an_nsd_folder(tmp_path, no_heavy_reading):
    with pytest.raises(FileNotFoundError, match="looked for nsd_expdesign.mat"):
        load_brain(f"nsd:{tmp_path}?subject=1")


def test_unknown_subject_and_sessions(surface_root, no_heavy_reading):
    with pytest.raises(ValueError, match="subject must be 1..8; got 9"):
        load_brain(spec(surface_root, "rois=nsdgeneral").replace("subject=1", "subject=9"))
    with pytest.raises(ValueError, match=r"sessions 1..40; sessions \[41\] do not exist"):
        load_brain(spec(surface_root, "sessions=41"))
    with pytest.raises(FileNotFoundError, match="betas_session03.mgh"):
        load_brain(spec(surface_root, "sessions=1-3"))
    with pytest.raises(ValueError, match="needs a subject"):
        load_brain(f"nsd:{surface_root}")


def test_betas_and_design_disagree_in_trial_count(surface_root, no_heavy_reading):
    with pytest.raises(ValueError, match="has 6 trials but the design expects 750"):
        load_brain(f"nsd:{surface_root}?subject=1")
    with pytest.raises(ValueError, match="masterordering has 18 trials but session 4"):
        nsd_trial_images(surface_root / "nsddata/experiments/nsd/nsd_expdesign.mat", 1, (4,), 6)
    with pytest.raises(ValueError, match="has 6 trials but the design expects 10"):
        load_nsd(surface_root, NSDOptions(subject=1, trials_per_session=10, sessions=(2,)))


def test_design_and_csv_disagreement_is_caught(tmp_path):
    build_common(tmp_path, csv_trial_offset=1)  # the CSV's trial numbers shifted by one
    build_surface(tmp_path)
    with pytest.raises(ValueError, match="disagree on trial"):
        load_brain(spec(tmp_path, "rois=nsdgeneral"))


def test_unknown_label_and_option(surface_root, no_heavy_reading):
    with pytest.raises(ValueError, match=r"labels \['V9'\].*available labels"):
        load_brain(spec(surface_root, "rois=prf-visualrois&labels=V9"))
    with pytest.raises(ValueError, match="'sesions' \\(did you mean 'sessions'\\?\\)"):
        load_brain(spec(surface_root, "sesions=1"))
    with pytest.raises(FileNotFoundError, match="lh.streams.mgz"):
        load_brain(spec(surface_root, "rois=streams"))


def test_roi_properties_are_merged(surface_root, tmp_path_factory):
    table = tmp_path_factory.mktemp("props") / "expansion.csv"
    pd.DataFrame({"roi": ["V1v", "hV4"], "expansion": [1.0, 3.5]}).to_csv(table, index=False)
    brain, _ = load_brain(spec(surface_root, f"rois=prf-visualrois&roi_properties={table}"))
    properties = brain.rois.set_index("roi")["expansion"]
    assert properties["hV4"] == 3.5 and properties["V1v"] == 1.0 and np.isnan(properties["V1d"])


# ---------------------------------------------------------------------- memory
def former_grouped_means(trials: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The loader's former averaging, on all trials at once: float32 sums, vectorised over
    the trials of each repeat rank, divided by the counts.

    trials : (n_trials, n_targets) float32; images : (n_trials,) -> (n_images, n_targets)
    """
    unique, rows, counts = np.unique(images, return_inverse=True, return_counts=True)
    ranks = np.array([np.sum(images[:t] == image) for t, image in enumerate(images)])
    sums = np.zeros((unique.size, trials.shape[1]), dtype=np.float32)
    for rank in np.unique(ranks):
        selected = ranks == rank
        sums[rows[selected]] += trials[selected]
    return sums / counts[:, None].astype(np.float32)


def test_running_sums_equal_the_former_method_with_unequal_repeats(tmp_path):
    """1 to 3 repeats per image over 3 sessions, random float32 betas: the same float32 means
    as the former method and as the mean of each image's stacked trials, bit for bit."""
    build_common(tmp_path)
    written = build_surface(tmp_path, sessions=(1, 2, 3), random_scale=3.0)
    brain, _ = load_brain(spec(tmp_path, "rois=prf-visualrois&sessions=1-3"))
    counts = [len(trials_of(int(i[3:]), sessions=(1, 2, 3))) for i in brain.stimulus_ids]
    assert sorted(set(counts)) == [1, 2, 3] and brain.repeats is None
    hemis, vertices = brain.targets["hemi"].to_numpy(), brain.targets["vertex"].to_numpy()
    all_trials = np.stack(
        [[written[h][v, t] for h, v in zip(hemis, vertices)] for t in range(len(MASTER))]
    )  # (18 trials, n_targets) float32
    images = np.array([image_of_trial(t) for t in range(len(MASTER))])
    np.testing.assert_array_equal(brain.data, former_grouped_means(all_trials, images))
    for row, stimulus_id in enumerate(brain.stimulus_ids):
        stacked = all_trials[images == int(stimulus_id[3:])]  # (k, n_targets), trial order
        np.testing.assert_array_equal(brain.data[row], stacked.mean(axis=0))
        reference = stacked.astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(brain.data[row], reference, rtol=1e-6, atol=1e-6)


def test_kept_repeats_in_order_and_means_equal_their_mean(tmp_path):
    build_common(tmp_path)
    written = build_surface(tmp_path, sessions=(1, 2, 3), random_scale=3.0)
    brain, _ = load_brain(spec(tmp_path, "rois=nsdgeneral&sessions=1-3&min_repeats=3"))
    assert brain.stimulus_ids == ["nsd00002", "nsd00010"] and brain.repeats.dtype == np.float32
    for row, stimulus_id in enumerate(brain.stimulus_ids):
        for rank, trial in enumerate(trials_of(int(stimulus_id[3:]), sessions=(1, 2, 3))):
            expected = [
                written[h][v, trial] for h, v in zip(brain.targets["hemi"], brain.targets["vertex"])
            ]
            np.testing.assert_array_equal(brain.repeats[rank, row], expected)
    np.testing.assert_array_equal(brain.data, brain.repeats.mean(axis=0))


def test_float16_repeats_are_float32_repeats_rounded(tmp_path):
    build_common(tmp_path)
    build_surface(tmp_path, sessions=(1, 2, 3), random_scale=3.0)
    query = "rois=nsdgeneral&sessions=1-3&min_repeats=3"
    full, _ = load_brain(spec(tmp_path, query))
    half, _ = load_brain(spec(tmp_path, query + "&repeats_dtype=float16"))
    assert half.repeats.dtype == np.float16 and half.repeats.nbytes * 2 == full.repeats.nbytes
    np.testing.assert_array_equal(half.repeats, full.repeats.astype(np.float16))
    relative = np.abs(half.repeats.astype(np.float32) - full.repeats) / np.abs(full.repeats)
    assert relative.max() <= 2.0**-11  # float16 rounding: half a unit in the last place
    assert relative.max() > 0  # the values did not happen to be float16 already
    np.testing.assert_array_equal(half.data, full.data)  # means are summed before rounding
    kept = half.select_stimuli(["nsd00010"])
    assert kept.repeats.dtype == np.float16  # BrainData keeps float16 through selection


def test_float16_repeats_refuse_values_beyond_its_range(tmp_path):
    build_common(tmp_path)
    build_surface(tmp_path, sessions=(1, 2, 3), random_scale=1e5)
    query = "rois=nsdgeneral&sessions=1-3&min_repeats=3"
    with pytest.raises(ValueError, match=r"session 1: a value of .* beyond float16.*float32$"):
        load_brain(spec(tmp_path, query + "&repeats_dtype=float16"))
    with pytest.raises(ValueError, match=r"repeats_dtype.*'float16'"):
        load_brain(spec(tmp_path, query + "&repeats_dtype=float64"))


def test_estimate_from_the_design(surface_root):
    from brainalign.probe.datasets.nsd import estimate_nsd_peak

    options = NSDOptions(trials_per_session=TRIALS, chunk_trials=4, repeats_dtype="float16")
    estimate = estimate_nsd_peak(2, 8, options, n_repeats=3, trial_bytes=11 * 4)
    means, repeats, session, read = (size for _, size in estimate.parts)
    assert (means, repeats, session) == (2 * 8 * 4, 3 * 2 * 8 * 2, TRIALS * 8 * 4)
    assert read == 4 * (11 * 4 + 8 * 4)  # a chunk as stored and its float32 selection
    zscored = estimate_nsd_peak(
        2, 8, replace(options, zscore_sessions=True), n_repeats=None, trial_bytes=11 * 4
    )
    assert zscored.parts[1][1] == 0 and zscored.parts[3] == ("z-scoring", 24 * TRIALS * 8)
    assert zscored.total == 2 * 8 * 4 + TRIALS * 8 * 4 + 24 * TRIALS * 8


def test_refuses_before_reading_when_the_estimate_exceeds_available_memory(
    surface_root, monkeypatch
):
    from brainalign.probe.datasets._memory import format_bytes
    from brainalign.probe.datasets.nsd import estimate_nsd_peak

    query = "rois=nsdgeneral&min_repeats=3"
    # nsdgeneral: 4 + 4 vertices; 2 images with 3 repeats; 11 vertices in rh, the larger file
    needed = estimate_nsd_peak(
        2, 8, NSDOptions(trials_per_session=TRIALS), n_repeats=3, trial_bytes=11 * 4
    ).total
    reads = []
    real_read = nsd_module._read_session
    monkeypatch.setattr(
        nsd_module, "_read_session", lambda *a, **k: reads.append(1) or real_read(*a, **k)
    )
    monkeypatch.setattr(nsd_module, "available_memory", lambda: needed - 1)
    with pytest.raises(MemoryError) as refused:
        load_brain(spec(surface_root, query))
    message = str(refused.value)
    assert isinstance(refused.value, ValueError) and "\n" not in message and not reads
    assert message.startswith(
        f"NSD subj01: loading needs about {format_bytes(needed)} (means 2 x 8 float32 64 B + "
        "repeats 3 x 2 x 8 float32 192 B + one session 6 x 8 float32 192 B + reading"
    )
    assert f"but {format_bytes(needed - 1)} is available" in message
    for option in ("rois=nsdgeneral", "keep_repeats=false (", "repeats_dtype=float16 (",
                   "fewer sessions (now 2)", "memory_check=false"):  # fmt: skip
        assert option in message
    brain, _ = load_brain(spec(surface_root, query + "&memory_check=false"))
    assert brain.repeats.shape == (3, 2, 8) and reads
    monkeypatch.setattr(nsd_module, "available_memory", lambda: needed)
    assert load_brain(spec(surface_root, query))[0].repeats.shape == (3, 2, 8)
    monkeypatch.setattr(nsd_module, "available_memory", lambda: None)  # unknown: no check
    assert load_brain(spec(surface_root, query))[0].repeats.shape == (3, 2, 8)


def test_accumulator_leaves_nan_where_an_image_has_fewer_repeats():
    from brainalign.probe.datasets._memory import TrialAccumulator

    rng = np.random.default_rng(3)
    values = rng.standard_normal((7, 4), dtype=np.float32)  # 7 trials, 4 targets
    rows = np.array([1, 0, -1, 1, 2, 1, 0])  # image 0: 2 trials, 1: 3, 2: 1; trial 2 skipped
    ranks = np.array([0, 0, 0, 1, 0, 2, 1])
    accumulator = TrialAccumulator(np.array([2, 3, 1]), 4, n_repeats=2)
    accumulator.add(values[:4], rows[:4], ranks[:4], "block 1")
    accumulator.add(values[4:], rows[4:], ranks[4:], "block 2")
    means, repeats = accumulator.finish()
    for image in range(3):
        trials = np.flatnonzero(rows == image)
        np.testing.assert_array_equal(means[image], values[trials].mean(axis=0))
        for rank in range(2):
            expected = values[trials[rank]] if rank < trials.size else np.full(4, np.nan)
            np.testing.assert_array_equal(repeats[rank, image], expected)


def write_meminfo(root: Path, available_kb: int) -> None:
    (root / "proc" / "self").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "meminfo").write_text(
        f"MemTotal:       99999999 kB\nMemAvailable:   {available_kb} kB\n"
    )


def test_available_memory_takes_the_smaller_of_meminfo_and_cgroup_headroom(tmp_path):
    from brainalign.probe.datasets._memory import available_memory

    assert available_memory(tmp_path) is None  # not Linux: unknown, the check is skipped
    write_meminfo(tmp_path, 8_000_000)
    assert available_memory(tmp_path) == 8_000_000 * 1024  # no cgroup file
    # cgroup v2: the job's limit sits on the parent; inactive page cache is reclaimable
    (tmp_path / "proc" / "self" / "cgroup").write_text("0::/job/step\n")
    base = tmp_path / "sys" / "fs" / "cgroup"
    (base / "job" / "step").mkdir(parents=True)
    (base / "job" / "step" / "memory.max").write_text("max\n")
    (base / "job" / "step" / "memory.current").write_text("100\n")
    assert available_memory(tmp_path) == 8_000_000 * 1024  # "max": no limit
    (base / "job" / "memory.max").write_text(f"{4 * 2**30}\n")
    (base / "job" / "memory.current").write_text(f"{3 * 2**30}\n")
    (base / "job" / "memory.stat").write_text(f"anon 5\ninactive_file {2**29}\nactive_file 9\n")
    assert available_memory(tmp_path) == 2**30 + 2**29
    # cgroup v1: hierarchical_memory_limit is the effective limit
    (tmp_path / "proc" / "self" / "cgroup").write_text("4:memory:/slurm/job1\n3:cpu:/x\n")
    v1 = base / "memory" / "slurm" / "job1"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    (v1 / "memory.stat").write_text(f"hierarchical_memory_limit {2**31}\ntotal_inactive_file 7\n")
    assert available_memory(tmp_path) == 2**31 - 2**30 + 7


def build_scaled_subject(
    root: Path, sessions: int, trials: int, n_images: int, n_vertices: int
) -> None:
    """A miniature whose arrays are large beside the fixed costs: 3 repeats per image,
    random betas, every vertex in ``nsdgeneral``, no stimulus-table repeat columns."""
    rng = np.random.default_rng(0)
    experiments = root / "nsddata" / "experiments" / "nsd"
    experiments.mkdir(parents=True)
    master = rng.permutation(np.tile(np.arange(1, n_images + 1), 3))  # (3 n_images,), 1-based
    assert master.size == sessions * trials
    subjectim = np.tile(np.arange(1, n_images + 1), (8, 1))
    savemat(
        experiments / "nsd_expdesign.mat",
        {"masterordering": master[None].astype(float), "subjectim": subjectim.astype(float)},
    )
    table = pd.DataFrame({"nsdId": np.arange(n_images), "shared1000": False})
    table.to_csv(experiments / "nsd_stim_info_merged.csv")
    stimuli = root / "nsddata_stimuli" / "stimuli" / "nsd"
    stimuli.mkdir(parents=True)
    with h5py.File(stimuli / "nsd_stimuli.hdf5", "w") as handle:
        handle.create_dataset("imgBrick", data=np.zeros((n_images, 2, 2, 3), dtype=np.uint8))
    fsaverage = root / "nsddata" / "freesurfer" / "fsaverage"
    betas = root / "nsddata_betas/ppdata/subj01/fsaverage/betas_fithrf_GLMdenoise_RR"
    for hemi in ("lh", "rh"):
        write_mgh(
            fsaverage / "label" / f"{hemi}.nsdgeneral.mgz", np.ones((n_vertices, 1, 1), np.int32)
        )
        (fsaverage / "surf").mkdir(parents=True, exist_ok=True)
        nib.freesurfer.write_geometry(
            str(fsaverage / "surf" / f"{hemi}.white"),
            rng.uniform(-70, 70, (n_vertices, 3)),
            np.array([[0, 1, 2]], dtype=np.int32),
        )
        for session in range(1, sessions + 1):
            frames = rng.standard_normal((n_vertices, 1, 1, trials), dtype=np.float32)
            write_mgh(betas / f"{hemi}.betas_session{session:02d}.mgh", frames)
        write_mgh(betas / f"{hemi}.ncsnr.mgh", np.ones((n_vertices, 1, 1), dtype=np.float32))


@pytest.mark.parametrize(
    "query, n_repeats",
    [("", 3), ("&repeats_dtype=float16", 3), ("&keep_repeats=false", None)],
)
def test_estimate_is_within_20_percent_of_the_measured_peak(tmp_path, query, n_repeats):
    """tracemalloc (numpy reports its buffers to it) on a miniature whose arrays dominate:
    4 sessions x 60 trials, 80 images x 3 repeats, 2 x 4,000 vertices (about 15 MB)."""
    import tracemalloc

    from brainalign.probe.datasets.nsd import estimate_nsd_peak

    build_scaled_subject(tmp_path, sessions=4, trials=60, n_images=80, n_vertices=4000)
    text = f"nsd:{tmp_path}?subject=1&trials_per_session=60{query}"
    tracemalloc.start()
    try:
        brain, _ = load_brain(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert brain.data.shape == (80, 8000)
    repeats_dtype = "float16" if "float16" in query else "float32"
    estimate = estimate_nsd_peak(
        80,
        8000,
        NSDOptions(trials_per_session=60, repeats_dtype=repeats_dtype),
        n_repeats=n_repeats,
        trial_bytes=4000 * 4,
    )
    # measured 0.84 (no repeats) to 0.93 of the estimate: reading every vertex copies no
    # selection, which the estimate allows for
    assert 0.8 <= peak / estimate.total <= 1.2, (peak, estimate.describe())


def test_declared_units_and_the_volume_grid(volume_root):
    volume, _ = load_brain(spec(volume_root, "space=func1pt8mm&rois=prf-visualrois"))
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = ORIGIN
    np.testing.assert_allclose(volume.affine, affine, rtol=1e-6)  # the ROI files' grid (maps)
    np.testing.assert_array_equal(
        volume.voxel_indices(), volume.targets[["voxel_i", "voxel_j", "voxel_k"]].to_numpy()
    )
    assert volume.noise_ceiling_unit == "percent"
    np.testing.assert_allclose(volume.noise_ceiling_fraction(), volume.noise_ceiling / 100)


def test_surface_ceiling_is_declared_percent_and_has_no_grid(surface_root):
    surface, _ = load_brain(spec(surface_root, "rois=prf-visualrois"))
    assert surface.noise_ceiling_unit == "percent" and surface.affine is None
