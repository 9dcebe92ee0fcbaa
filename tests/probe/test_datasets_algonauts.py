"""Algonauts 2023 loader on a miniature challenge folder written with numpy, PIL and nibabel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from payloads import unpickle_unsafely, write_npy_payload
from PIL import Image

from brainalign.probe.datasets import AlgonautsOptions, load_algonauts2023, nsd_stimulus_id
from brainalign.probe.formats import load_brain

NSD_IDS = [42, 7, 31000, 5, 12, 64000]  # 0-based nsdIds of train-0001 .. train-0006
N_CHALLENGE = {"lh": 7, "rh": 5}
N_FSAVERAGE = 20
# fsaverage vertices of the challenge vertices (the all-vertices masks)
FSAVERAGE_VERTICES = {"lh": [1, 3, 4, 8, 9, 15, 19], "rh": [0, 2, 6, 10, 11]}
PRF = {"lh": [0, 1, 1, 2, 0, 7, 3], "rh": [1, 0, 0, 7, 2]}
MAPPING = {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v", 7: "hV4"}


def response(hemi: str, row: int, vertex: int) -> float:
    return (100.0 if hemi == "rh" else 0.0) + row + 0.125 * vertex


def build(root: Path, *, with_surfaces: bool = True) -> Path:
    subject = root / "subj01"
    fmri = subject / "training_split" / "training_fmri"
    images = subject / "training_split" / "training_images"
    masks = subject / "roi_masks"
    for folder in (fmri, images, masks, subject / "test_split" / "test_images"):
        folder.mkdir(parents=True)
    for hemi, n in N_CHALLENGE.items():
        values = np.array(
            [[response(hemi, r, v) for v in range(n)] for r in range(len(NSD_IDS))],
            dtype=np.float32,
        )
        np.save(fmri / f"{hemi}_training_fmri.npy", values)
        np.save(masks / f"{hemi}.prf-visualrois_challenge_space.npy", np.array(PRF[hemi]))
        mask = np.zeros(N_FSAVERAGE, dtype=np.int64)
        mask[FSAVERAGE_VERTICES[hemi]] = 1
        np.save(masks / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
    np.save(masks / "mapping_prf-visualrois.npy", MAPPING)  # a pickled dict, as released
    for number in (3, 1, 6, 2, 5, 4):  # written out of order on purpose
        pixels = np.full((4, 4, 3), number * 10, dtype=np.uint8)
        name = f"train-{number:04d}_nsd-{NSD_IDS[number - 1]:05d}.png"
        Image.fromarray(pixels).save(images / name)
    if with_surfaces:
        surf = root / "fsaverage" / "surf"
        surf.mkdir(parents=True)
        for hemi, sign in (("lh", -1.0), ("rh", 1.0)):
            xyz = np.column_stack(
                [sign * (20.0 + np.arange(N_FSAVERAGE)), np.arange(N_FSAVERAGE), np.zeros(20)]
            )
            nib.freesurfer.write_geometry(
                str(surf / f"{hemi}.white"), xyz, np.array([[0, 1, 2]], dtype=np.int32)
            )
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build(tmp_path)


def test_rows_follow_image_numbers_and_ids_join_nsd(root):
    brain, stimuli = load_brain(
        f"algonauts2023:{root}?subject=1&fsaverage_dir={root / 'fsaverage'}"
    )
    assert brain.stimulus_ids == [nsd_stimulus_id(n) for n in NSD_IDS]
    assert brain.stimulus_ids[2] == "nsd31000"
    # row 3 (train-0003) at rh challenge vertex 4
    column = brain.targets.index[(brain.targets["hemi"] == "rh")][4]
    assert brain.data[2, column] == response("rh", 2, 4)
    assert brain.data.shape == (6, 12)
    np.testing.assert_array_equal(
        brain.data[:, :7], [[response("lh", r, v) for v in range(7)] for r in range(6)]
    )
    assert set(brain.targets["roi"]) == {"all-vertices"}
    assert stimuli.load_array([2])[0, 0, 0, 0] == 30  # train-0003's pixels
    assert brain.repeats is None and brain.noise_ceiling is None


def test_roi_masks_mapping_and_fsaverage_coordinates(root):
    brain, _ = load_algonauts2023(
        root,
        AlgonautsOptions(subject=1, rois=("prf-visualrois",), fsaverage_dir=root / "fsaverage"),
    )
    targets = brain.targets
    lh = targets[targets["hemi"] == "lh"]
    assert lh["challenge_vertex"].tolist() == [1, 2, 3, 5, 6]
    assert lh["roi"].tolist() == ["V1v", "V1v", "V1d", "hV4", "V2v"]
    assert lh["vertex"].tolist() == [3, 4, 8, 15, 19]
    assert lh["x"].tolist() == [-23.0, -24.0, -28.0, -35.0, -39.0]
    rh_hv4 = targets[(targets["hemi"] == "rh") & (targets["roi"] == "hV4")].iloc[0]
    assert (rh_hv4["challenge_vertex"], rh_hv4["vertex"], rh_hv4["x"]) == (3, 10, 30.0)
    assert brain.data[0, targets.index[targets["hemi"] == "rh"][-1]] == response("rh", 0, 4)
    hv4 = brain.rois.set_index("roi").loc["hV4"]  # lh x -35 and rh x 30, mirrored
    assert hv4["x"] == pytest.approx(32.5)


def test_labels_and_split_hemis(root):
    brain, _ = load_brain(
        f"algonauts2023:{root}?subject=1&rois=prf-visualrois&labels=hV4&split_hemis"
        f"&fsaverage_dir={root / 'fsaverage'}"
    )
    assert brain.targets["roi"].tolist() == ["lh.hV4", "rh.hV4"]
    np.testing.assert_array_equal(brain.data[:, 0], [response("lh", r, 5) for r in range(6)])


def test_subject_folder_itself_and_no_coordinates_warn(tmp_path):
    build(tmp_path, with_surfaces=False)
    with pytest.warns(UserWarning, match="no fsaverage_dir"):
        brain, _ = load_brain(f"algonauts2023:{tmp_path / 'subj01'}")
    assert brain.subject == "subj01"
    assert brain.targets[["x", "y", "z"]].isna().all().all()


# ---------------------------------------------------------------------- bad input
def test_missing_subject_and_files(root):
    with pytest.raises(FileNotFoundError, match=r"subj02.*subjects present: \['subj01'\]"):
        load_brain(f"algonauts2023:{root}?subject=2")
    (root / "subj01/training_split/training_fmri/rh_training_fmri.npy").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"looked for rh_training_fmri.npy in .*training_fmri"
    ):
        load_brain(f"algonauts2023:{root}?subject=1")


def test_image_count_and_name_errors(root):
    images = root / "subj01/training_split/training_images"
    (images / "train-0006_nsd-64000.png").unlink()
    with pytest.raises(ValueError, match="5 training images .* has 6 rows"):
        load_brain(f"algonauts2023:{root}?subject=1")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(images / "train-0006_nsd-abc.png")
    with pytest.raises(ValueError, match="not train-XXXX_nsd-YYYYY.png"):
        load_brain(f"algonauts2023:{root}?subject=1&fsaverage_dir={root}")


def test_mask_length_and_unknown_roi(root):
    masks = root / "subj01/roi_masks"
    with pytest.raises(FileNotFoundError, match="lh.streams_challenge_space.npy"):
        load_brain(f"algonauts2023:{root}?subject=1&rois=streams&fsaverage_dir={root}")
    np.save(masks / "lh.prf-visualrois_challenge_space.npy", np.zeros(9))
    with pytest.raises(ValueError, match="has 9 vertices but lh_training_fmri.npy has 7"):
        load_brain(f"algonauts2023:{root}?subject=1&rois=prf-visualrois&fsaverage_dir={root}")
    with pytest.raises(ValueError, match="subject must be 1..8"):
        load_brain(f"algonauts2023:{root}?subject=0")


# ---------------------------------------------------------------------- untrusted files
def test_crafted_mapping_file_is_refused_and_never_runs(root):
    """A mapping_*.npy whose pickle would create a file: refused, naming it; nothing runs."""
    marker = root / "marker"
    mapping = root / "subj01/roi_masks/mapping_prf-visualrois.npy"
    write_npy_payload(mapping, marker, inside_dict=True)
    spec = f"algonauts2023:{root}?subject=1&rois=prf-visualrois&fsaverage_dir={root / 'fsaverage'}"
    with pytest.raises(ValueError, match=re.escape(str(mapping)) + r": refused.*io\.open"):
        load_brain(spec)
    assert not marker.exists()
    unpickle_unsafely(mapping)  # the same file does run its payload when unpickled
    assert marker.exists()


def test_crafted_responses_or_masks_are_refused(root):
    marker = root / "marker"
    masks = root / "subj01/roi_masks"
    spec = f"algonauts2023:{root}?subject=1&rois=prf-visualrois&fsaverage_dir={root / 'fsaverage'}"
    for path in (
        root / "subj01/training_split/training_fmri/rh_training_fmri.npy",
        masks / "lh.prf-visualrois_challenge_space.npy",
        masks / "rh.all-vertices_fsaverage_space.npy",
    ):
        original = path.read_bytes()
        write_npy_payload(path, marker)
        with pytest.raises(ValueError, match=re.escape(str(path)) + ": holds Python objects"):
            load_brain(spec)
        path.write_bytes(original)
    assert not marker.exists()
    assert load_brain(spec)[0].n_targets == 8  # the restored folder still loads


def test_json_mapping_is_read_instead_of_the_pickle(root):
    masks = root / "subj01/roi_masks"
    (masks / "mapping_prf-visualrois.npy").unlink()
    names = {"0": "Unknown", "1": "V1-ventral", "2": "V1d", "3": "V2v", "7": "hV4"}
    (masks / "mapping_prf-visualrois.json").write_text(json.dumps(names))
    options = AlgonautsOptions(
        subject=1, rois=("prf-visualrois",), fsaverage_dir=root / "fsaverage"
    )
    brain, _ = load_algonauts2023(root, options)
    lh = brain.targets[brain.targets["hemi"] == "lh"]
    assert lh["roi"].tolist() == ["V1-ventral", "V1-ventral", "V1d", "hV4", "V2v"]
    (masks / "mapping_prf-visualrois.json").write_text('["V1v", "V1d"]')
    with pytest.raises(ValueError, match=r"mapping_prf-visualrois.json should hold a JSON object"):
        load_algonauts2023(root, options)
    (masks / "mapping_prf-visualrois.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"mapping_prf-visualrois.npy .*or mapping_prf"):
        load_algonauts2023(root, options)
