"""Time the batched RSA, CKA, their bootstraps and banded ridge against plain loops, in one run.

Run::

    .venv/bin/python benchmarks/metrics.py --n-stimuli 1000 --n-layers 12 --n-rois 10

Printed (machine load before and after, then one line per comparison):

- RSA, Spearman comparison of correlation-distance RDMs, ``n_layers x n_rois`` pairs:
  ``representational_similarity`` (each RDM once, BLAS products, all pairs at once) against
  (a) the plain loop with rsatoolbox, ``calc_rdm`` of both sets and ``compare`` for every pair,
  timed on ``--baseline-pairs`` pairs and scaled to all pairs (each pair costs the same), and
  (b) rsatoolbox used at its best: each RDM computed once with ``calc_rdm`` and one ``compare``
  of the two RDM stacks. The largest difference from rsatoolbox is printed too.
- RSA bootstrap over stimuli, ``--n-resamples`` resamples of the same RDM pairs:
  ``bootstrap_compare_rdms`` (RDMs once, each resample a weighting of their pairs) against the
  plain loop that resamples the patterns, recomputes every RDM, drops the pairs of two copies of
  one stimulus and compares (timed on ``--baseline-resamples`` resamples and scaled).
- CKA, unbiased linear CKA: ``linear_cka`` against a plain numpy loop over pairs (the
  feature-space debiased formula of Kornblith et al.'s code, one pair at a time).
- CKA bootstrap over stimuli, ``--n-resamples`` resamples: ``bootstrap_linear_cka`` (Gram
  matrices once, each resample a weighting by its counts) against the plain loop that resamples
  the features, recomputes every Gram matrix, zeroes the entries of two copies of one stimulus
  and applies HSIC_1 (timed on ``--baseline-resamples`` resamples and scaled).
- Banded ridge with 2 feature spaces (``fit_banded_ridge``, himalaya random search) against two
  separate ridges over the same outer folds: (a) ``fit_banded_ridge`` on each space alone
  (himalaya ridge, same inner search) and (b) the probe's own ``fit_encoding`` on each space.
  The ratio is how much the joint fit costs, not a speed-up.

Layers have ``--n-features`` columns; ROIs have voxel counts spread around ``--n-voxels``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

from brainalign.probe.bootstrap import resample_counts, resample_indices
from brainalign.probe.metrics import fit_banded_ridge, linear_cka, representational_similarity
from brainalign.probe.metrics.cka_bootstrap import bootstrap_linear_cka
from brainalign.probe.metrics.rsa import compare_rdms, rdms
from brainalign.probe.metrics.rsa_bootstrap import bootstrap_compare_rdms
from brainalign.probe.ridge import fit_encoding


def load_line(label: str) -> str:
    one, five, fifteen = os.getloadavg()
    return (
        f"{label}: load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}"
    )


def make_sets(args: argparse.Namespace, rng: np.random.Generator):
    n = args.n_stimuli
    layers = [rng.normal(size=(n, args.n_features)) for _ in range(args.n_layers)]
    widths = np.linspace(0.5 * args.n_voxels, 1.5 * args.n_voxels, args.n_rois).astype(int)
    rois = [
        layers[index % args.n_layers][:, :64] @ rng.normal(size=(64, width))
        + 3.0 * rng.normal(size=(n, width))
        for index, width in enumerate(widths)
    ]
    return layers, rois


def timed(function, *arguments, **keywords):
    start = time.perf_counter()
    result = function(*arguments, **keywords)
    return result, time.perf_counter() - start


def rsatoolbox_pair(layer: np.ndarray, roi: np.ndarray) -> float:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    first = calc_rdm(Dataset(layer), method="correlation")
    second = calc_rdm(Dataset(roi), method="correlation")
    return float(compare(first, second, method="spearman")[0, 0])


def rsatoolbox_each_rdm_once(layers, rois) -> np.ndarray:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    layer_rdms = calc_rdm([Dataset(layer) for layer in layers], method="correlation")
    roi_rdms = calc_rdm([Dataset(roi) for roi in rois], method="correlation")
    return compare(layer_rdms, roi_rdms, method="spearman")


def plain_unbiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """One pair, numpy, Kornblith et al.'s debiased feature-space formula."""
    n = len(x)

    def debiased(first: np.ndarray, second: np.ndarray) -> float:
        cross = np.linalg.norm(first.T @ second) ** 2
        rows_first, rows_second = (first**2).sum(1), (second**2).sum(1)
        return (
            cross
            - n / (n - 2) * rows_first @ rows_second
            + rows_first.sum() * rows_second.sum() / ((n - 1) * (n - 2))
        )

    x = x - x.mean(0)
    y = y - y.mean(0)
    return debiased(x, y) / np.sqrt(debiased(x, x) * debiased(y, y))


def benchmark_rsa(layers, rois, baseline_pairs: int) -> None:
    ours, ours_time = timed(representational_similarity, layers, rois, method="spearman")
    pairs = [(i, j) for i in range(len(layers)) for j in range(len(rois))][:baseline_pairs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        start = time.perf_counter()
        looped = [rsatoolbox_pair(layers[i], rois[j]) for i, j in pairs]
        loop_time = (time.perf_counter() - start) * len(layers) * len(rois) / len(pairs)
        batched, batched_time = timed(rsatoolbox_each_rdm_once, layers, rois)
    loop_difference = max(abs(ours[i, j] - value) for (i, j), value in zip(pairs, looped))
    print(
        f"RSA {len(layers)}x{len(rois)} pairs: ours {ours_time:.2f} s; rsatoolbox per pair "
        f"{loop_time:.1f} s (timed on {len(pairs)} pairs, scaled): ratio "
        f"{loop_time / ours_time:.1f}x; rsatoolbox each RDM once {batched_time:.2f} s: ratio "
        f"{batched_time / ours_time:.1f}x; max |difference| "
        f"{max(loop_difference, np.abs(ours - batched).max()):.1e}"
    )


def loop_bootstrap_rsa(layers, rois, indices) -> np.ndarray:
    """The plain bootstrap: resample, recompute the RDMs, drop identical pairs, compare."""
    n = indices.shape[1]
    rows, columns = np.triu_indices(n, 1)
    result = np.empty((len(indices), len(layers), len(rois)))
    for b, drawn in enumerate(indices):
        keep = drawn[rows] != drawn[columns]
        layer_rdms = rdms([layer[drawn] for layer in layers])[:, keep]
        roi_rdms = rdms([roi[drawn] for roi in rois])[:, keep]
        result[b] = compare_rdms(layer_rdms, roi_rdms, "spearman")
    return result


def bootstrap_against_loop(label, ours, loop, layers, rois, n_resamples, baseline_resamples):
    """Time ``ours(counts)`` on all resamples and ``loop(layers, rois, indices)`` on a few."""
    n = layers[0].shape[0]
    batched, ours_time = timed(ours, resample_counts(n, n_boot=n_resamples, seed=0))
    indices = resample_indices(n, n_boot=baseline_resamples, seed=0)
    looped, loop_time = timed(loop, layers, rois, indices)
    loop_time *= n_resamples / baseline_resamples
    print(
        f"{label} bootstrap {len(layers)}x{len(rois)} pairs, {n_resamples} resamples: "
        f"ours {ours_time:.1f} s; plain loop {loop_time:.1f} s (timed on {baseline_resamples} "
        f"resamples, scaled): ratio {loop_time / ours_time:.1f}x; max |difference| "
        f"{np.abs(batched[:baseline_resamples] - looped).max():.1e}"
    )


def benchmark_rsa_bootstrap(layers, rois, n_resamples: int, baseline_resamples: int) -> None:
    def ours(counts):  # the RDMs are computed once, inside the timing
        return bootstrap_compare_rdms(rdms(layers), rdms(rois), counts, "spearman")

    bootstrap_against_loop(
        "RSA (Spearman)", ours, loop_bootstrap_rsa, layers, rois, n_resamples, baseline_resamples
    )


def benchmark_cka(layers, rois) -> None:
    ours, ours_time = timed(linear_cka, layers, rois)
    start = time.perf_counter()
    plain = np.array([[plain_unbiased_cka(layer, roi) for roi in rois] for layer in layers])
    plain_time = time.perf_counter() - start
    print(
        f"CKA {len(layers)}x{len(rois)} pairs (unbiased): ours {ours_time:.2f} s; numpy per "
        f"pair {plain_time:.2f} s: ratio {plain_time / ours_time:.1f}x; max |difference| "
        f"{np.abs(ours - plain).max():.1e}"
    )


def _unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """HSIC_1 of two Gram matrices whose excluded entries are already zero."""
    n = len(k)
    row_k, row_l = k.sum(1), l_.sum(1)
    return (
        (k * l_).sum()
        + row_k.sum() * row_l.sum() / ((n - 1) * (n - 2))
        - 2 / (n - 2) * row_k @ row_l
    ) / (n * (n - 3))


def loop_bootstrap_cka(layers, rois, indices) -> np.ndarray:
    """The plain bootstrap: resample, recompute the Grams, zero the copies, HSIC_1 per pair."""
    centred = [item - item.mean(0) for item in (*layers, *rois)]
    result = np.empty((len(indices), len(layers), len(rois)))
    for b, drawn in enumerate(indices):
        copies = drawn[:, None] == drawn[None, :]
        grams = []
        for item in centred:
            gram = item[drawn] @ item[drawn].T
            gram[copies] = 0.0
            grams.append(gram)
        selves = [_unbiased_hsic(gram, gram) for gram in grams]
        for i in range(len(layers)):
            for j in range(len(rois)):
                own = selves[len(layers) + j]
                cross = _unbiased_hsic(grams[i], grams[len(layers) + j])
                result[b, i, j] = cross / np.sqrt(selves[i] * own)
    return result


def benchmark_cka_bootstrap(layers, rois, n_resamples: int, baseline_resamples: int) -> None:
    def ours(counts):
        return bootstrap_linear_cka(layers, rois, counts)

    bootstrap_against_loop(
        "CKA (unbiased)", ours, loop_bootstrap_cka, layers, rois, n_resamples, baseline_resamples
    )


def benchmark_banded(args: argparse.Namespace, rng: np.random.Generator) -> None:
    n, width = args.n_stimuli, args.banded_features
    first, second = rng.normal(size=(n, width)), rng.normal(size=(n, width))
    targets = (
        first @ rng.normal(size=(width, args.banded_targets)) / np.sqrt(width)
        + 0.5 * second @ rng.normal(size=(width, args.banded_targets)) / np.sqrt(width)
        + rng.normal(size=(n, args.banded_targets))
    )
    options = {"n_iter": args.n_iter, "solver": "primal"}
    _, joint_time = timed(fit_banded_ridge, {"a": first, "b": second}, targets, **options)
    start = time.perf_counter()
    for space in (first, second):
        fit_banded_ridge({"alone": space}, targets, **options)
    separate_time = time.perf_counter() - start
    start = time.perf_counter()
    for space in (first, second):
        fit_encoding(space, targets, backend="numpy")
    probe_time = time.perf_counter() - start
    print(
        f"banded ridge, 2 spaces x {width} features, {args.banded_targets} targets, "
        f"{args.n_iter} weightings: {joint_time:.1f} s; two himalaya ridges {separate_time:.1f} s "
        f"(banded / separate {joint_time / separate_time:.1f}x); two fit_encoding ridges "
        f"{probe_time:.1f} s (banded / separate {joint_time / probe_time:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-stimuli", type=int, default=1000)
    parser.add_argument("--n-layers", type=int, default=12)
    parser.add_argument("--n-rois", type=int, default=10)
    parser.add_argument("--n-features", type=int, default=768)
    parser.add_argument("--n-voxels", type=int, default=500)
    parser.add_argument("--baseline-pairs", type=int, default=6)
    parser.add_argument("--n-resamples", type=int, default=100)
    parser.add_argument("--baseline-resamples", type=int, default=3)
    parser.add_argument(
        "--only",
        choices=["rsa", "rsa_bootstrap", "cka", "cka_bootstrap", "banded"],
        help="one comparison",
    )
    parser.add_argument("--banded-features", type=int, default=256)
    parser.add_argument("--banded-targets", type=int, default=1000)
    parser.add_argument("--n-iter", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(load_line("before"))
    warm = [rng.normal(size=(20, 5)) for _ in range(2)]  # imports and first calls, untimed
    representational_similarity(warm, warm)
    rsatoolbox_each_rdm_once(warm, warm)
    linear_cka(warm, warm)
    layers, rois = make_sets(args, rng)
    runs = {
        "rsa": lambda: benchmark_rsa(layers, rois, args.baseline_pairs),
        "rsa_bootstrap": lambda: benchmark_rsa_bootstrap(
            layers, rois, args.n_resamples, args.baseline_resamples
        ),
        "cka": lambda: benchmark_cka(layers, rois),
        "cka_bootstrap": lambda: benchmark_cka_bootstrap(
            layers, rois, args.n_resamples, args.baseline_resamples
        ),
        "banded": lambda: benchmark_banded(args, rng),
    }
    for name, run in runs.items():
        if args.only in (None, name):
            run()
    print(load_line("after"))


if __name__ == "__main__":
    main()
