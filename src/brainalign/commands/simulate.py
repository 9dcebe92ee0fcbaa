"""``brainalign simulate --out DIR``: write the simulated subject (the embedded ground truth).

The options are checked as they are parsed (one line naming the flag); ``--out`` is written
under a hidden temporary name and renamed when complete (create-or-fail, like ``brainalign
probe --out``), so a failed or killed run leaves no half-written subject, and ``--overwrite``
replaces an existing ``--out`` folder whole.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _noise(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


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
    # --n-stimuli is checked by simulate_subject (its message is relied upon by study jobs)
    parser.add_argument("--n-stimuli", type=int, default=300)
    parser.add_argument("--image-size", type=_at_least(4), default=32, help="pixels (>= 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=_noise, default=1.0, help="noise sd (signal sd is 1)")
    parser.add_argument("--n-repeats", type=_at_least(1), default=2)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    def run(ns: argparse.Namespace) -> None:
        import contextlib

        from brainalign.commands import preflight
        from brainalign.probe.simulate import simulate_subject

        out = Path(ns.out)
        preflight.check_new_output(out, overwrite=ns.overwrite)
        with contextlib.ExitStack() as stack:
            folder = preflight.reserve_output(stack, out, overwrite=ns.overwrite)
            simulated = simulate_subject(
                folder,
                n_stimuli=ns.n_stimuli,
                image_size=ns.image_size,
                seed=ns.seed,
                noise=ns.noise,
                n_repeats=ns.n_repeats,
            )
        paths = {
            "fMRI": simulated.fmri_dir,
            "MEG": simulated.meg_path,
            "truth": simulated.truth_path,
        }
        for name, path in paths.items():
            print(f"{name + ':':6s} {out / path.relative_to(folder)}")

    return run
