"""Time ``fit_encoding`` against the plain scikit-learn RidgeCV loop on the same data.

Run::

    .venv/bin/python benchmarks/ridge_vs_sklearn.py --n-stimuli 1000 --n-features 384 \
        --n-targets 5000 --n-folds 5 --backend auto

The plain way: for each outer KFold split, ``RidgeCV(alphas, alpha_per_target=True)`` fitted
on the training part (efficient leave-one-out), prediction of the held-out part, Pearson R per
target; R averaged over folds. ``fit_encoding`` runs with the same alphas, folds and
``inner="loo"``.

Printed:

- both wall times and the speed-up (plain / ours), from ``--repeats`` alternating pairs (the
  pair with the median speed-up);
- the largest absolute difference in R between the two;
- (d) matmul efficiency: the matrix-product FLOPs of ``fit_encoding``'s LOO path, counted from
  the shapes (SVDs and element-wise work excluded, see ``loo_matmul_flops``), divided by (its
  wall time x the float32 matmul rate measured here on the same backend with the dominant
  product's shape, (n_train, rank) @ (rank, n_targets): median of 7 runs, averaged between
  just before and just after the call, since a shared machine's rate drifts);
- (e) memory ratio: peak extra memory during ``fit_encoding`` / bytes of X + Y (float32). On
  CPU the extra memory is the peak resident set size sampled every millisecond from
  ``/proc/self/statm`` by a background thread, minus the resident size just before the call
  (taken after glibc ``malloc_trim``, and ``fit_encoding`` runs before scikit-learn, so that
  memory freed earlier is not reused unseen), in an untimed call of its own;
  on CUDA it is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import threading
import time

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from brainalign.probe.ridge import DEFAULT_ALPHAS, fit_encoding, outer_splits
from brainalign.probe.scores import pearson_r


def make_data(
    n_stimuli: int, n_features: int, n_targets: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features and targets with a planted linear part of varying strength."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_stimuli, n_features), dtype=np.float32)
    weights = rng.standard_normal((n_features, n_targets), dtype=np.float32) / np.sqrt(n_features)
    strength = rng.uniform(0.0, 1.0, n_targets).astype(np.float32)
    noise = rng.standard_normal((n_stimuli, n_targets), dtype=np.float32)
    targets = (features @ weights) * strength + noise  # (n_stimuli, n_targets)
    return features, targets


def plain_sklearn(
    features: np.ndarray, targets: np.ndarray, alphas: np.ndarray, n_folds: int
) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward way: R per target averaged over folds, and alphas (n_folds, T)."""
    r_per_fold, chosen_alphas = [], []
    for train, test in outer_splits(len(features), n_folds):
        model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(features[train], targets[train])
        r_per_fold.append(pearson_r(model.predict(features[test]), targets[test], axis=0))
        chosen_alphas.append(model.alpha_)
    return np.mean(r_per_fold, axis=0), np.array(chosen_alphas)


def loo_matmul_flops(
    n_stimuli: int, n_features: int, n_targets: int, n_folds: int, n_alphas: int
) -> float:
    """Matrix-product FLOPs of ``fit_encoding(inner="loo")``, 2 per multiply-add.

    Per fold (n_train, n_test rows; rank k = min(n_train, n_features)): test projection
    n_test*p*k, hat diagonals n_train*k*n_alphas, Z = U^T Y n_train*k*T, one residual product
    per alpha n_train*k*T, held-out prediction n_test*k*T.
    """
    total = 0.0
    for train, test in outer_splits(n_stimuli, n_folds):
        n_train, n_test = len(train), len(test)
        rank = min(n_train, n_features)
        total += n_test * n_features * rank + n_train * rank * n_alphas
        total += (1 + n_alphas) * n_train * rank * n_targets + n_test * rank * n_targets
    return 2.0 * total


def measured_matmul_rate(rows: int, inner: int, columns: int, device: str) -> float:
    """Median float32 FLOP/s of ``(rows, inner) @ (inner, columns)`` over 7 repeats."""
    left = torch.randn(rows, inner, device=device)
    right = torch.randn(inner, columns, device=device)
    durations = []
    for _ in range(7):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        left @ right
        if device == "cuda":
            torch.cuda.synchronize()
        durations.append(time.perf_counter() - start)
    return 2.0 * rows * inner * columns / float(np.median(durations))


def measured_numpy_matmul_rate(rows: int, inner: int, columns: int) -> float:
    rng = np.random.default_rng(1)
    left = rng.standard_normal((rows, inner), dtype=np.float32)
    right = rng.standard_normal((inner, columns), dtype=np.float32)
    durations = []
    for _ in range(7):
        start = time.perf_counter()
        left @ right
        durations.append(time.perf_counter() - start)
    return 2.0 * rows * inner * columns / float(np.median(durations))


def release_freed_memory() -> None:
    """Give memory freed earlier back to the OS (glibc), so later reuse shows up in the RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ResidentMemorySampler:
    """Peak resident set size (bytes) seen by a thread polling /proc/self/statm."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def resident(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.page_size

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.resident())
            time.sleep(self.interval_s)

    def __enter__(self) -> ResidentMemorySampler:
        release_freed_memory()
        self.baseline = self.resident()
        self.peak = self.baseline
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.resident())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-stimuli", type=int, default=1000)
    parser.add_argument("--n-features", type=int, default=384)
    parser.add_argument("--n-targets", type=int, default=5000)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "numpy", "torch", "torch_cuda"]
    )
    parser.add_argument("--target-batch-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="alternating timing pairs")
    args = parser.parse_args()

    features, targets = make_data(args.n_stimuli, args.n_features, args.n_targets)
    alphas = DEFAULT_ALPHAS
    on_cuda = args.backend == "torch_cuda" or (args.backend == "auto" and torch.cuda.is_available())
    # warm-up (library initialisation, CUDA context) on a tiny problem
    fit_encoding(features[:50, :8], targets[:50, :8], backend=args.backend)

    n_train = args.n_stimuli - args.n_stimuli // args.n_folds
    rank = min(n_train, args.n_features)

    def matmul_rate() -> float:
        if args.backend == "numpy":
            return measured_numpy_matmul_rate(n_train, rank, args.n_targets)
        return measured_matmul_rate(n_train, rank, args.n_targets, "cuda" if on_cuda else "cpu")

    rate_before = matmul_rate()

    def run_ours() -> object:
        return fit_encoding(
            features,
            targets,
            alphas=alphas,
            n_folds=args.n_folds,
            backend=args.backend,
            target_batch_size=args.target_batch_size,
        )

    def timed(function) -> tuple[float, object]:
        if on_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function()
        if on_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    # Memory first, in a call of its own: the 1 ms sampling thread would slow a timed call.
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ours = run_ours()
        extra_memory = torch.cuda.max_memory_allocated()
        memory_note = "CUDA max_memory_allocated"
    else:
        with ResidentMemorySampler() as sampler:
            ours = run_ours()
        extra_memory = sampler.peak - sampler.baseline
        memory_note = "peak RSS above pre-call RSS, sampled every 1 ms"

    # Ours and the plain loop alternate; the pair with the median speed-up is reported.
    pairs = []
    for _ in range(args.repeats):
        time_ours, _ = timed(run_ours)
        time_plain, (r_plain, alphas_plain) = timed(
            lambda: plain_sklearn(features, targets, alphas, args.n_folds)
        )
        pairs.append((time_ours, time_plain))
    speedups = [plain / own for own, plain in pairs]
    time_ours, time_plain = pairs[int(np.argsort(speedups)[len(speedups) // 2])]
    rate_after = matmul_rate()
    rate = 0.5 * (rate_before + rate_after)  # bracket the calls: the machine may be shared

    flops = loo_matmul_flops(
        args.n_stimuli, args.n_features, args.n_targets, args.n_folds, len(alphas)
    )
    data_bytes = features.nbytes + targets.nbytes
    difference = np.abs(ours.r - r_plain)

    print(
        f"sizes: {args.n_stimuli} stimuli x {args.n_features} features x {args.n_targets} "
        f"targets, {args.n_folds} folds, {len(alphas)} alphas; backend={args.backend}"
        f"{' (cuda)' if on_cuda else ''}; torch threads={torch.get_num_threads()}"
    )
    print(f"plain sklearn RidgeCV loop : {time_plain:8.2f} s")
    print(f"fit_encoding               : {time_ours:8.2f} s")
    print(
        f"speed-up                   : {time_plain / time_ours:8.2f} x  (median of "
        f"{args.repeats} alternating pairs, all: {', '.join(f'{x:.2f}' for x in speedups)})"
    )
    print(f"max |R_ours - R_plain|     : {np.nanmax(difference):.2e}")
    print(
        f"alphas equal to RidgeCV's  : {np.mean(ours.alphas == alphas_plain):.4f} of "
        f"{alphas_plain.size} (fold, target) pairs; NaN R: {int(np.isnan(ours.r).sum())}"
    )
    print(
        f"(d) matmul efficiency      : {flops / 1e9:.1f} GFLOP / ({time_ours:.2f} s x "
        f"{rate / 1e9:.1f} GFLOP/s measured) = {flops / (time_ours * rate):.2f}  [rate "
        f"{rate_before / 1e9:.1f} before, {rate_after / 1e9:.1f} after the call]"
    )
    print(
        f"(e) memory ratio           : {extra_memory / 2**20:.1f} MiB / "
        f"{data_bytes / 2**20:.1f} MiB (X+Y) = {extra_memory / data_bytes:.2f}  [{memory_note}]"
    )


if __name__ == "__main__":
    main()
