"""``brainalign simulate --out DIR``: write the simulated subject (the embedded ground truth)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def add(subparsers: argparse._SubParsersAction) -> Callable[[argparse.Namespace], None]:
    parser = subparsers.add_parser(
        "simulate",
        help="write procedural stimuli and a simulated subject (fMRI folder + MEG -epo.fif)",
        description="Write procedural stimulus images and a subject with a planted hierarchy: "
        "fMRI ROIs driven by increasingly abstract image levels, MEG sensors mixing the same "
        "levels at increasing latencies. The files use the generic formats, so `brainalign "
        "probe --brain DIR/fmri` reads them like any user's data.",
    )
    parser.add_argument("--out", required=True, help="folder to create")
    parser.add_argument("--n-stimuli", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=1.0, help="noise sd (signal sd is 1)")
    parser.add_argument("--n-repeats", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true")

    def run(ns: argparse.Namespace) -> None:
        from brainalign.probe.simulate import simulate_subject

        simulated = simulate_subject(
            Path(ns.out),
            n_stimuli=ns.n_stimuli,
            image_size=ns.image_size,
            seed=ns.seed,
            noise=ns.noise,
            n_repeats=ns.n_repeats,
            overwrite=ns.overwrite,
        )
        print(
            f"fMRI: {simulated.fmri_dir}\nMEG:  {simulated.meg_path}\ntruth: {simulated.truth_path}"
        )

    return run
