"""Time and measure the NSD fsaverage loader on a miniature NSD tree; scale to one subject.

Run::

    .venv/bin/python benchmarks/nsd_surface_loader.py [--keep-repeats true|false] \
        [--repeats-dtype float32|float16] [--rois wholebrain|nsdgeneral|prf-visualrois] \
        [--sessions 40 --trials 75 --vertices 20000 --images N]

A miniature NSD tree is written in a temporary folder with the real writers, in the layout
``load_nsd`` reads (``betas=fithrf_GLMdenoise_RR``, ``space=fsaverage``, subject 1):

- ``{lh,rh}.betas_sessionNN.mgh``: float32 of shape (vertices, 1, 1, trials), per hemisphere
  and session, plus ``{lh,rh}.ncsnr.mgh`` (vertices, 1, 1);
- ``nsd_expdesign.mat`` (``masterordering`` 1-based over the miniature's trials, every image
  shown ``sessions x trials / images`` times; ``subjectim`` 1-based nsdIds), the stimulus CSV
  (73,000 rows with ``subject1_rep0..2``) and a tiny ``nsd_stimuli.hdf5`` (73,000 x 2 x 2 x 3);
- fsaverage ``label/{lh,rh}.<family>.mgz``: ``wholebrain`` (every vertex; a miniature-only
  family, the default, for whole-brain loading), ``nsdgeneral`` (an assumed 12% of the
  vertices, scattered as fsaverage vertex numbers of one region are) and ``prf-visualrois``
  (7 labels on 3% of the vertices, with its ``.ctab``); ``surf/{lh,rh}.white``.

Then ``load_brain("nsd:<root>?subject=1&trials_per_session=T&keep_repeats=...&rois=...")`` is
timed once (modules imported beforehand; the files were just written, so they are read from
the page cache, not the disk), while a thread samples the resident set size from
``/proc/self/statm`` every millisecond (``ResidentMemorySampler`` of ``ridge_vs_sklearn.py``).

The default miniature is one full subject scaled down (40 sessions x 750 trials x 327,684
fsaverage vertices float32, 10,000 images x 3 repeats) with its proportions kept: 40 sessions,
3 repeats per image and images / trials per session = 10,000 / 750 (1,000 images, 75 trials),
20,000 vertices per hemisphere. Every array the loader holds (means, repeats, one session)
then grows by the same factor from the miniature to the subject, so:

- memory: ``peak_full = peak_mini x estimate_full / estimate_mini``, with the loader's own
  estimate (``estimate_nsd_peak``; peak = resident size above the one just before the call).
  The measured / estimated ratio on the miniature is printed: it checks the estimate that
  ``load_nsd`` compares with the available memory before reading;
- time scales with the bytes of beta files read (the loader reads every vertex of every
  session, whatever the ROI selection): ``t_full = t_mini x bytes_full / bytes_mini``; reading
  from a cold disk adds ``bytes_full / --disk-mb-per-s``.

Other shapes (``--sessions 2 --trials 750 --vertices 40000``, the former default) are
extrapolated the same way; the estimate's parts (per-image arrays, one session, one read) then
grow by different factors, and only the measured / estimated ratio is carried over.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
from scipy.io import savemat

sys.path.insert(0, str(Path(__file__).parent))
from brainalign.probe.datasets.nsd import NSD_SESSIONS, NSDOptions, estimate_nsd_peak
from brainalign.probe.formats import load_brain
from ridge_vs_sklearn import ResidentMemorySampler

FULL_SESSIONS = 40
FULL_TRIALS = 750
FULL_VERTICES_PER_HEMI = 163_842  # fsaverage: 327,684 vertices in both hemispheres
FULL_IMAGES = 10_000
FULL_REPEATS = 3
N_NSD_IMAGES = 73_000
HEMIS = ("lh", "rh")
FLOAT32 = 4
NSDGENERAL_FRACTION = 0.12  # assumed size of the nsdgeneral mask on fsaverage
PRF_FRACTION = 0.03
PRF_NAMES = {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}
BETAS = "fithrf_GLMdenoise_RR"


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no) for argparse."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")


def write_mgh(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.MGHImage(array, np.eye(4)), str(path))


def write_design(
    root: Path, n_trials: int, n_images: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Design, stimulus CSV and a tiny image brick.

    Returns
    -------
    master : ndarray of shape (n_trials,), 1-based positions in the subject's image list
    subject_images : ndarray of shape (n_images,), the subject's 1-based nsdIds
    """
    experiments = root / "nsddata" / "experiments" / "nsd"
    experiments.mkdir(parents=True)
    shown = -(-n_trials // n_images)  # ceil: every image shown this often (or once less)
    master = rng.permutation(np.tile(np.arange(1, n_images + 1), shown)[:n_trials])
    subjectim = np.stack(
        [rng.choice(N_NSD_IMAGES, n_images, replace=False) + 1 for _ in range(8)]
    )  # (8, n_images), 1-based nsdIds
    savemat(
        experiments / "nsd_expdesign.mat",
        {
            "masterordering": master[None, :].astype(np.float64),  # MATLAB doubles, (1, n)
            "subjectim": subjectim.astype(np.float64),
        },
    )
    table = pd.DataFrame({"nsdId": np.arange(N_NSD_IMAGES)})
    table["shared1000"] = np.isin(table["nsdId"], subjectim[0, :1000] - 1)
    reps = np.zeros((N_NSD_IMAGES, 3), dtype=np.int64)  # 1-based trial numbers, 0 = none
    filled = np.zeros(N_NSD_IMAGES, dtype=np.int64)
    for trial, position in enumerate(master.tolist()):
        nsd_id = subjectim[0, position - 1] - 1
        if filled[nsd_id] < 3:
            reps[nsd_id, filled[nsd_id]] = trial + 1
        filled[nsd_id] += 1
    for r in range(3):
        table[f"subject1_rep{r}"] = reps[:, r]
    table.to_csv(experiments / "nsd_stim_info_merged.csv")
    stimuli = root / "nsddata_stimuli" / "stimuli" / "nsd"
    stimuli.mkdir(parents=True)
    with h5py.File(stimuli / "nsd_stimuli.hdf5", "w") as handle:
        handle.create_dataset("imgBrick", data=np.zeros((N_NSD_IMAGES, 2, 2, 3), dtype=np.uint8))
    return master, subjectim[0]


def write_labels(fsaverage: Path, n_vertices: int, rng: np.random.Generator) -> None:
    """ROI label families, white surfaces and the prf-visualrois colour table."""
    for hemi in HEMIS:
        families = {"wholebrain": np.ones(n_vertices, dtype=np.int32)}
        nsdgeneral = np.zeros(n_vertices, dtype=np.int32)
        chosen = rng.choice(n_vertices, round(NSDGENERAL_FRACTION * n_vertices), replace=False)
        nsdgeneral[chosen] = 1
        families["nsdgeneral"] = nsdgeneral
        prf = np.zeros(n_vertices, dtype=np.int32)
        chosen = rng.choice(n_vertices, round(PRF_FRACTION * n_vertices), replace=False)
        prf[chosen] = rng.integers(1, 8, chosen.size)
        families["prf-visualrois"] = prf
        for family, labels in families.items():
            write_mgh(fsaverage / "label" / f"{hemi}.{family}.mgz", labels[:, None, None])
        (fsaverage / "surf").mkdir(parents=True, exist_ok=True)
        coordinates = rng.uniform(-70.0, 70.0, (n_vertices, 3))  # (n_vertices, 3) mm
        nib.freesurfer.write_geometry(
            str(fsaverage / "surf" / f"{hemi}.white"),
            coordinates,
            np.array([[0, 1, 2]], dtype=np.int32),
        )
    ctab = "\n".join(f"{value} {name}" for value, name in PRF_NAMES.items()) + "\n"
    (fsaverage / "label" / "prf-visualrois.mgz.ctab").write_text(ctab)


def write_betas(
    betas: Path, sessions: int, n_vertices: int, n_trials: int, rng: np.random.Generator
) -> int:
    """Random float32 betas per hemisphere and session; returns the bytes of beta data."""
    for hemi in HEMIS:
        for session in range(1, sessions + 1):
            frames = rng.standard_normal((n_vertices, n_trials), dtype=np.float32)
            write_mgh(betas / f"{hemi}.betas_session{session:02d}.mgh", frames[:, None, None, :])
        ncsnr = rng.uniform(0.0, 1.0, n_vertices).astype(np.float32)
        write_mgh(betas / f"{hemi}.ncsnr.mgh", ncsnr[:, None, None])
    return len(HEMIS) * sessions * n_vertices * n_trials * FLOAT32


def tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=FULL_SESSIONS)
    parser.add_argument("--vertices", type=int, default=20_000, help="per hemisphere")
    parser.add_argument("--trials", type=int, default=75, help="trials per session")
    parser.add_argument(
        "--images", type=int, default=None, help="distinct images; default sessions*trials/3"
    )
    parser.add_argument("--keep-repeats", type=parse_bool, default=True, metavar="true|false")
    parser.add_argument("--repeats-dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument(
        "--rois",
        default="wholebrain",
        help="ROI families, comma-separated: wholebrain (default), nsdgeneral, prf-visualrois",
    )
    parser.add_argument("--chunk-trials", type=int, default=50)
    parser.add_argument("--disk-mb-per-s", type=float, default=500.0)
    parser.add_argument("--tmpdir", default=None, help="where to write the miniature")
    args = parser.parse_args()
    n_trials_total = args.sessions * args.trials
    n_images = args.images if args.images is not None else max(1, n_trials_total // 3)
    if not 1 <= args.sessions <= NSD_SESSIONS[1]:
        parser.error(f"--sessions must be 1..{NSD_SESSIONS[1]} (subject 1); got {args.sessions}")
    if not 1 <= n_images <= min(n_trials_total, N_NSD_IMAGES):
        parser.error(f"--images must be 1..{min(n_trials_total, N_NSD_IMAGES)}; got {n_images}")
    if min(args.vertices, args.trials) < 3:
        parser.error("--vertices and --trials must be at least 3")

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="nsd-mini-", dir=args.tmpdir) as folder:
        root = Path(folder)
        start = time.perf_counter()
        write_design(root, n_trials_total, n_images, rng)
        write_labels(root / "nsddata" / "freesurfer" / "fsaverage", args.vertices, rng)
        betas = root / "nsddata_betas" / "ppdata" / "subj01" / "fsaverage" / f"betas_{BETAS}"
        beta_bytes = write_betas(betas, args.sessions, args.vertices, args.trials, rng)
        build = time.perf_counter() - start
        on_disk = tree_bytes(root)

        spec = (
            f"nsd:{root}?subject=1&trials_per_session={args.trials}"
            f"&keep_repeats={str(args.keep_repeats).lower()}&rois={args.rois}"
            f"&chunk_trials={args.chunk_trials}&repeats_dtype={args.repeats_dtype}"
        )
        with ResidentMemorySampler() as memory:
            start = time.perf_counter()
            brain, _ = load_brain(spec)
            load = time.perf_counter() - start
        extra = memory.peak - memory.baseline

    n_targets = brain.data.shape[1]
    repeats_kept = None if brain.repeats is None else int(brain.repeats.shape[0])
    options = NSDOptions(
        trials_per_session=args.trials,
        chunk_trials=args.chunk_trials,
        repeats_dtype=args.repeats_dtype,
    )
    estimate_mini = estimate_nsd_peak(
        brain.data.shape[0],
        n_targets,
        options,
        n_repeats=repeats_kept,
        trial_bytes=args.vertices * FLOAT32,
    )
    vertex_fraction = n_targets / (len(HEMIS) * args.vertices)
    full_targets = round(vertex_fraction * len(HEMIS) * FULL_VERTICES_PER_HEMI)
    estimate_full = estimate_nsd_peak(
        FULL_IMAGES,
        full_targets,
        replace(options, trials_per_session=FULL_TRIALS),
        n_repeats=FULL_REPEATS if repeats_kept else None,
        trial_bytes=FULL_VERTICES_PER_HEMI * FLOAT32,
    )
    proportional = (
        args.sessions == FULL_SESSIONS
        and n_trials_total == FULL_REPEATS * n_images
        and args.trials * FULL_IMAGES == n_images * FULL_TRIALS
    )
    full_beta_bytes = len(HEMIS) * FULL_SESSIONS * FULL_VERTICES_PER_HEMI * FULL_TRIALS * FLOAT32
    time_factor = full_beta_bytes / beta_bytes
    full_time = load * time_factor
    full_peak = extra * estimate_full.total / estimate_mini.total
    disk_time = full_beta_bytes / (args.disk_mb_per_s * 1e6)
    repeats_text = (
        f"kept, {repeats_kept} per image, {brain.repeats.dtype}" if repeats_kept else "not kept"
    )

    print(
        f"miniature: {args.sessions} sessions x {args.trials} trials x {args.vertices} vertices "
        f"per hemisphere (x2), {n_images} images, float32 .mgh; built in {build:.1f} s"
    )
    print(
        f"  size: betas {beta_bytes / 1e9:.3f} GB, whole tree {on_disk / 1e9:.3f} GB on disk "
        "(page cache warm: just written)"
    )
    print(
        f"  proportions of a full subject (40 sessions, 3 repeats, images / trials per session ="
        f" {FULL_IMAGES / FULL_TRIALS:.2f}): {'yes' if proportional else 'no'}"
    )
    print(
        f"  loaded: {brain.data.shape[0]} images x {n_targets} targets "
        f"(rois={args.rois}, {vertex_fraction:.1%} of vertices), repeats {repeats_text}"
    )
    print(f"  load time: {load:.2f} s  ({beta_bytes / load / 1e6:.0f} MB/s of betas)")
    print(
        f"  peak memory: {extra / 1e9:.3f} GB above the pre-load RSS of "
        f"{memory.baseline / 1e9:.2f} GB (sampled every 1 ms); loader's estimate "
        f"{estimate_mini.total / 1e9:.3f} GB, measured / estimate = "
        f"{extra / estimate_mini.total:.2f}"
    )
    print(
        f"full subject ({FULL_SESSIONS} sessions x {FULL_TRIALS} trials x "
        f"{len(HEMIS) * FULL_VERTICES_PER_HEMI:,} vertices float32 = "
        f"{full_beta_bytes / 1e9:.1f} GB of betas; {FULL_IMAGES:,} images x {FULL_REPEATS} "
        f"repeats; {full_targets:,} targets), linear extrapolation:"
    )
    print(
        f"  time scales with bytes read: {load:.2f} s x {full_beta_bytes / 1e9:.1f} / "
        f"{beta_bytes / 1e9:.3f} GB = {full_time:.0f} s ({full_time / 60:.1f} min) from the "
        f"page cache; + {disk_time:.0f} s to read from disk at {args.disk_mb_per_s:.0f} MB/s"
    )
    print(
        f"  memory scales with the loader's estimate: {extra / 1e9:.3f} GB x "
        f"{estimate_full.total / 1e9:.2f} / {estimate_mini.total / 1e9:.3f} GB = "
        f"{full_peak / 1e9:.1f} GB peak; estimate {estimate_full.describe()}"
    )


if __name__ == "__main__":
    main()
