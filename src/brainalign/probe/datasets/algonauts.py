"""Algonauts 2023 challenge data (NSD on fsaverage, challenge vertex space).

Spec: ``algonauts2023:<challenge_data folder>?subject=1&rois=prf-visualrois`` (options:
:class:`AlgonautsOptions`).

Files read under ``<root>/subjNN/``::

    training_split/training_fmri/{lh,rh}_training_fmri.npy  (n_images, n_vertices) float32
    training_split/training_images/train-XXXX_nsd-YYYYY.png  row XXXX - 1; YYYYY = 0-based nsdId
    roi_masks/{lh,rh}.<family>_challenge_space.npy          label per challenge vertex
    roi_masks/mapping_<family>.npy                           {label value: name} (a pickled
                                                             dict, as the challenge saved it)
    roi_masks/mapping_<family>.json                          optional, used instead when present:
                                                             {"1": "V1v", ...}

The pickled mappings are read by :func:`brainalign.utils.npy.load_label_mapping`, which can
build nothing but NumPy arrays and plain values: a crafted mapping file is refused, never run.
    roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy      fsaverage mask of challenge vertices

The challenge responses are already z-scored per session and averaged over repeats, so there
are no repeats and no noise ceiling here (the test split's fMRI was withheld). Stimulus ids are
``nsd{nsdId:05d}``, the same as the NSD loader's, so the two join. Coordinates come from
``<fsaverage_dir>/surf/{lh,rh}.white`` at the challenge vertices' fsaverage indices; without
``fsaverage_dir`` they are NaN (with a warning). ROI centroids mirror x about 0 (see
:mod:`brainalign.probe.datasets.nsd`) unless ``split_hemis=true``.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import BrainData
from brainalign.probe.datasets._common import (
    fsaverage_coordinates,
    require_dir,
    require_file,
    roi_centroids,
)
from brainalign.probe.datasets.nsd import nsd_stimulus_id
from brainalign.probe.stimuli import StimulusSet
from brainalign.utils.npy import load_array, load_label_mapping

__all__ = ["ALL_VERTICES", "AlgonautsOptions", "load_algonauts2023", "parse_image_name"]

ALL_VERTICES = "all-vertices"
"""ROI name of every challenge vertex when no ROI family is selected."""

_IMAGE_NAME = re.compile(r"^train-(\d+)_nsd-(\d+)$")


@dataclass(frozen=True)
class AlgonautsOptions:
    """Options of the Algonauts 2023 loader.

    Parameters
    ----------
    subject : int
        1..8 (required).
    rois : tuple of str, optional
        ROI families (``prf-visualrois``, ``floc-bodies``, ``floc-faces``, ``floc-places``,
        ``floc-words``, ``streams``) in priority order; default every challenge vertex, named
        ``all-vertices``.
    labels : tuple of str, optional
        Keep only these label names.
    hemis : tuple of str
    split_hemis : bool
        Name ROIs per hemisphere (``lh.V1v``).
    fsaverage_dir : Path, optional
        fsaverage subject folder with ``surf/{lh,rh}.white``, for coordinates.
    """

    subject: int | None = None
    rois: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    hemis: tuple[str, ...] = ("lh", "rh")
    split_hemis: bool = False
    fsaverage_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.subject is not None and not 1 <= self.subject <= 8:
            raise ValueError(f"Algonauts 2023 subject must be 1..8; got {self.subject}")
        if not self.hemis or any(hemi not in ("lh", "rh") for hemi in self.hemis):
            raise ValueError(f"hemis must be lh and/or rh; got {self.hemis}")
        if self.labels is not None and self.rois is None:
            raise ValueError("labels need rois (the ROI families that name them)")


def parse_image_name(path: Path) -> tuple[int, int]:
    """``train-0003_nsd-00042.png`` -> ``(3, 42)``: 1-based row, 0-based nsdId."""
    match = _IMAGE_NAME.match(path.stem)
    if match is None:
        raise ValueError(
            f"image name {path.name!r} is not train-XXXX_nsd-YYYYY.png (in {path.parent})"
        )
    return int(match.group(1)), int(match.group(2))


def _training_images(folder: Path, n_rows: int, responses_path: Path) -> tuple[list[int], list]:
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() == ".png")
    parsed = sorted((parse_image_name(path), path) for path in files)
    numbers = [number for (number, _), _ in parsed]
    if numbers != list(range(1, n_rows + 1)):
        raise ValueError(
            f"{folder} holds {len(numbers)} training images numbered "
            f"{numbers[:1]}..{numbers[-1:]} but {responses_path} has {n_rows} rows; "
            "expected train-0001 .. train-" + f"{n_rows:04d}"
        )
    return [nsd for (_, nsd), _ in parsed], [path for _, path in parsed]


def _read_json_mapping(path: Path) -> dict[int, str]:
    try:
        content = json.loads(path.read_text())
        if not isinstance(content, dict):
            raise TypeError(f"a JSON {type(content).__name__}")
        return {int(key): str(value) for key, value in content.items()}
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{path} should hold a JSON object of label value to name, such as "
            f'{{"1": "V1v", "2": "V1d"}} ({error})'
        ) from None


def _read_mapping(masks: Path, family: str) -> dict[int, str]:
    """Label value -> name of one ROI family, from ``mapping_<family>.json`` or ``.npy``."""
    json_path = masks / f"mapping_{family}.json"
    if json_path.is_file():
        return _read_json_mapping(json_path)
    path = require_file(
        masks / f"mapping_{family}.npy", f"ROI names of {family}", f"or mapping_{family}.json"
    )
    return load_label_mapping(path)


def _hemisphere_targets(
    masks: Path, hemi: str, n_vertices: int, options: AlgonautsOptions
) -> pd.DataFrame:
    names = np.full(n_vertices, ALL_VERTICES if options.rois is None else "", dtype=object)
    families = np.full(n_vertices, "" if options.rois is not None else ALL_VERTICES, dtype=object)
    available: set[str] = set()
    for family in options.rois or ():
        path = require_file(
            masks / f"{hemi}.{family}_challenge_space.npy", f"Algonauts ROI mask ({family})"
        )
        values = np.rint(load_array(path)).astype(np.int64).reshape(-1)
        if values.size != n_vertices:
            raise ValueError(
                f"{path} has {values.size} vertices but {hemi}_training_fmri.npy has {n_vertices}"
            )
        mapping = _read_mapping(masks, family)
        available |= {name for value, name in mapping.items() if value > 0}
        candidates = np.flatnonzero((values > 0) & (names == ""))
        present, inverse = np.unique(values[candidates], return_inverse=True)
        labelled = np.array(
            [mapping.get(int(v), f"{family}-{int(v)}") for v in present], dtype=object
        )[inverse]
        if options.labels is not None:
            keep = np.isin(labelled, list(options.labels))
            candidates, labelled = candidates[keep], labelled[keep]
        names[candidates] = labelled
        families[candidates] = family
    if options.labels is not None:
        unknown = [label for label in options.labels if label not in available]
        if unknown:
            raise ValueError(
                f"labels {unknown} are not in the ROI families {list(options.rois or ())} "
                f"({masks}); available labels: {sorted(available)}"
            )
    return pd.DataFrame(
        {"roi": names, "hemi": hemi, "family": families, "challenge_vertex": np.arange(n_vertices)}
    )


def _fsaverage_vertices(masks: Path, hemi: str, n_vertices: int) -> np.ndarray | None:
    path = masks / f"{hemi}.all-vertices_fsaverage_space.npy"
    if not path.is_file():
        return None
    vertices = np.flatnonzero(load_array(path).reshape(-1))
    if vertices.size != n_vertices:
        raise ValueError(
            f"{path} marks {vertices.size} fsaverage vertices but {hemi}_training_fmri.npy has "
            f"{n_vertices}"
        )
    return vertices


def load_algonauts2023(
    root: str | Path, options: AlgonautsOptions
) -> tuple[BrainData, StimulusSet]:
    """Load one subject's Algonauts 2023 training split.

    Parameters
    ----------
    root : path to the challenge data folder (with ``subjNN/``), or to ``subjNN/`` itself
    options : AlgonautsOptions

    Returns
    -------
    brain : BrainData, modality "fmri"
        ``data`` (n_images, n_vertices) in image-file order (train-0001 first), ids
        ``nsd{nsdId:05d}``; targets with roi, hemi, family, challenge_vertex, vertex
        (fsaverage index, -1 when unknown), x, y, z.
    stimuli : StimulusSet of the training PNG files
    """
    root = require_dir(Path(root), "Algonauts 2023 folder")
    if (root / "training_split").is_dir():
        subject_dir = root
        if options.subject is None:
            match = re.fullmatch(r"subj(\d+)", root.name)
            if match is None:
                raise ValueError(
                    f"{root} holds one subject's data but its name is not subjNN; add ?subject=N"
                )
            options = replace(options, subject=int(match.group(1)))
    elif options.subject is None:
        raise ValueError("Algonauts 2023 needs a subject: add ?subject=N (1..8) to the spec")
    else:
        subject_dir = require_dir(
            root / f"subj{options.subject:02d}",
            f"Algonauts 2023 subject {options.subject}",
            f"subjects present: {sorted(p.name for p in root.glob('subj*'))}",
        )
    fmri_dir = subject_dir / "training_split" / "training_fmri"
    image_dir = require_dir(
        subject_dir / "training_split" / "training_images", "Algonauts training images"
    )
    masks = subject_dir / "roi_masks"
    response_paths = {
        hemi: require_file(fmri_dir / f"{hemi}_training_fmri.npy", f"Algonauts {hemi} responses")
        for hemi in options.hemis
    }
    if options.rois is not None:
        require_dir(masks, "Algonauts ROI masks")
    responses = {
        hemi: load_array(path, mmap_mode="r", what="Algonauts responses")
        for hemi, path in response_paths.items()
    }
    rows = {array.shape[0] for array in responses.values()}
    if len(rows) > 1 or any(array.ndim != 2 for array in responses.values()):
        shapes = {hemi: array.shape for hemi, array in responses.items()}
        raise ValueError(f"{fmri_dir}: the hemispheres' responses disagree in shape: {shapes}")
    n_images = rows.pop()
    nsd_ids, image_paths = _training_images(image_dir, n_images, response_paths[options.hemis[0]])

    tables, blocks = [], []
    surface_dir = None if options.fsaverage_dir is None else options.fsaverage_dir / "surf"
    if surface_dir is None:
        warnings.warn(
            "Algonauts 2023: no fsaverage_dir, so vertex coordinates and ROI centroids are NaN "
            "(spatial scores need them)",
            UserWarning,
            stacklevel=2,
        )
    for hemi in options.hemis:
        n_vertices = responses[hemi].shape[1]
        table = _hemisphere_targets(masks, hemi, n_vertices, options)
        table = table[table["roi"] != ""].reset_index(drop=True)
        fsaverage = _fsaverage_vertices(masks, hemi, n_vertices)
        if fsaverage is None:
            table["vertex"] = -1
            xyz = np.full((len(table), 3), np.nan)
        else:
            table["vertex"] = fsaverage[table["challenge_vertex"]]
            xyz = (
                fsaverage_coordinates(
                    surface_dir, hemi, table["vertex"].to_numpy(), where="Algonauts 2023"
                )
                if surface_dir is not None
                else np.full((len(table), 3), np.nan)
            )
        table[["x", "y", "z"]] = xyz
        tables.append(table)
        blocks.append(np.asarray(responses[hemi][:, table["challenge_vertex"].to_numpy()]))
    targets = pd.concat(tables, ignore_index=True)
    if len(targets) == 0:
        raise ValueError(f"no challenge vertex is labelled in {list(options.rois or ())}")
    if options.split_hemis:
        targets["roi"] = targets["hemi"] + "." + targets["roi"]
    stimulus_ids = [nsd_stimulus_id(nsd) for nsd in nsd_ids]
    brain = BrainData(
        modality="fmri",
        subject=f"subj{options.subject:02d}",
        data=np.concatenate(blocks, axis=1),  # (n_images, n_targets)
        stimulus_ids=stimulus_ids,
        targets=targets,
        rois=roi_centroids(targets, midline_x=None if options.split_hemis else 0.0),
    )
    return brain, StimulusSet.from_paths(stimulus_ids, image_paths)
