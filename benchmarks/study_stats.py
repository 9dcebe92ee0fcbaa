"""Time the study statistics against their plain baselines, in the same run.

Run::

    PYTHONPATH=src .venv/bin/python benchmarks/study_stats.py --n-stimuli 2000 \
        --n-targets 5000 --n-boot 200 --threads 1

Printed:

- bootstrap of group-mean R: ``bootstrap_group_r`` (weighted sums, float64 and float32)
  against ``bootstrap_group_r_loop`` (resample the rows, recompute Pearson per target, average
  per group) on the same resamples: wall times, the speed-up (loop / weighted), the largest
  absolute difference in group R, and the peak memory of each (tracemalloc, in a separate
  untimed call; the loop's over ``--memory-boot`` resamples, since its memory does not grow
  with their number), beside the bytes a full (n_boot, n_stimuli, n_targets) array would take;
- the weighted bootstrap's matrix-product rate and, from it, the time the same computation
  would take at NSD scale (1,000 resamples x 10,000 stimuli x 40,000 targets, one layer): an
  extrapolation from the measured rate, labelled as such;
- sign-flip test: ``sign_flip_test`` against ``scipy.stats.permutation_test`` with
  ``permutation_type="samples"`` on the same differences: wall times, speed-up and both p
  values.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.stats
from threadpoolctl import threadpool_limits

from brainalign.probe.bootstrap import bootstrap_group_r, bootstrap_group_r_loop
from brainalign.study.comparisons import sign_flip_test


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def peak_bytes(function: Callable[[], Any]) -> int:
    tracemalloc.start()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-stimuli", type=int, default=2000)
    parser.add_argument("--n-targets", type=int, default=5000)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--n-groups", type=int, default=20)
    parser.add_argument("--memory-boot", type=int, default=5)
    parser.add_argument("--sign-flip-targets", type=int, default=20000)
    parser.add_argument("--sign-flip-permutations", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for every method")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.n_stimuli, args.n_targets)
    observed = rng.standard_normal(shape)
    predicted = 0.3 * observed + rng.standard_normal(shape)
    groups = np.arange(args.n_targets) % args.n_groups
    print(
        f"bootstrap of group R: {args.n_stimuli} stimuli x {args.n_targets} targets x "
        f"{args.n_boot} resamples, {args.n_groups} groups, {args.threads} BLAS thread(s)"
    )
    with threadpool_limits(args.threads):
        weighted_s, weighted = timed(
            lambda: bootstrap_group_r(observed, predicted, groups, n_boot=args.n_boot)
        )
        single_s, single = timed(
            lambda: bootstrap_group_r(
                observed, predicted, groups, n_boot=args.n_boot, dtype=np.float32
            )
        )
        loop_s, loop = timed(
            lambda: bootstrap_group_r_loop(observed, predicted, groups, n_boot=args.n_boot)
        )
        weighted_bytes = peak_bytes(
            lambda: bootstrap_group_r(observed, predicted, groups, n_boot=args.n_boot)
        )
        loop_bytes = peak_bytes(
            lambda: bootstrap_group_r_loop(observed, predicted, groups, n_boot=args.memory_boot)
        )
    full_bytes = 8 * args.n_boot * args.n_stimuli * args.n_targets
    print(f"  plain loop          {loop_s:8.2f} s   peak {loop_bytes / 2**20:8.1f} MiB")
    print(
        f"  weighted, float64   {weighted_s:8.2f} s   peak {weighted_bytes / 2**20:8.1f} MiB"
        f"   speed-up {loop_s / weighted_s:6.1f}x   max |diff| {np.abs(weighted - loop).max():.1e}"
    )
    print(
        f"  weighted, float32   {single_s:8.2f} s   speed-up {loop_s / single_s:6.1f}x   "
        f"max |diff| {np.abs(single - loop).max():.1e}"
    )
    print(f"  a full (n_boot, n_stimuli, n_targets) float64 array: {full_bytes / 2**30:.1f} GiB")
    flops = 2 * args.n_boot * args.n_stimuli * 5 * args.n_targets
    rate = flops / weighted_s
    nsd_flops = 2 * 1000 * 10000 * 5 * 40000
    print(
        f"  weighted float64 rate {rate / 1e9:.1f} GFLOP/s (matrix-product FLOPs / total time); "
        f"extrapolated NSD scale (1000 x 10000 x 40000, one layer): {nsd_flops / rate / 60:.0f}"
        f" min float64, {nsd_flops / rate * single_s / weighted_s / 60:.0f} min float32"
    )

    differences = 0.002 + 0.05 * rng.standard_normal(args.sign_flip_targets)
    n_permutations = args.sign_flip_permutations
    print(f"sign-flip test: {args.sign_flip_targets} targets x {n_permutations} sign patterns")
    with threadpool_limits(args.threads):
        ours_s, ours = timed(
            lambda: sign_flip_test(differences, n_permutations=n_permutations, seed=0)
        )
        scipy_s, reference = timed(
            lambda: scipy.stats.permutation_test(
                (differences,),
                lambda x, axis: x.mean(axis=axis),
                permutation_type="samples",
                n_resamples=n_permutations,
                rng=np.random.default_rng(0),
            )
        )
    print(
        f"  scipy permutation_test {scipy_s:8.2f} s   p {reference.pvalue:.4f}\n"
        f"  sign_flip_test         {ours_s:8.2f} s   p {ours.p_value:.4f}   "
        f"speed-up {scipy_s / ours_s:6.1f}x"
    )


if __name__ == "__main__":
    main()
