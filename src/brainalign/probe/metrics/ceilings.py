"""Noise ceilings: of RSA (from subjects or from split halves of repeats) and of encoding.

- :func:`rsa_noise_ceiling_subjects`: rsatoolbox's leave-one-subject-out bounds
  (``rsatoolbox.inference.boot_noise_ceiling``; Nili et al. 2014, PLoS Comput Biol
  10:e1003553): the lower bound compares each subject's RDM with the pooled RDM of the others,
  the upper bound with the pooled RDM of all; the true model's mean comparison with the
  subjects' RDMs lies between them.
- :func:`rsa_noise_ceiling_split_half`: within one subject, from repeats: the RDMs of the even and
  odd repeats are compared (``r_half``), stepped up to the full data with Spearman-Brown
  (``reliability = 2 r_half / (1 + r_half)``), and the ceiling is ``sqrt(reliability)``: the
  comparison the noise-free RDM is expected to reach with the RDM of all repeats (classical test
  theory; exact for Pearson with independent, additive RDM noise, an approximation otherwise).
- :func:`noise_ceiling_random_splits`: the encoding ceiling of
  :func:`brainalign.probe.scores.noise_ceiling_split_half` (Spearman-Brown split-half
  reliability per target) averaged over random half splits of the repeats, for any target
  shape (MEG (n_channels, n_times) as well as fMRI (n_targets,)). With many repeats
  (THINGS: 12) one even/odd split is a noisy estimate; averaging random splits lowers its
  variance.

Ceilings are reported beside the scores as their own values; nothing here divides a score by
them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from brainalign.probe.metrics._sets import as_sets, check_option
from brainalign.probe.metrics.rsa import COMPARISONS, Comparison, RDMMetric, compare_rdms, rdms
from brainalign.probe.scores import noise_ceiling_split_half

__all__ = [
    "RSANoiseCeiling",
    "SplitHalfCeiling",
    "noise_ceiling_random_splits",
    "rsa_noise_ceiling_split_half",
    "rsa_noise_ceiling_subjects",
]

_RSATOOLBOX_METHOD = {"spearman": "spearman", "pearson": "corr", "kendall_tau_a": "tau-a"}


@dataclass(frozen=True)
class RSANoiseCeiling:
    """Lower and upper bounds of the RSA score a model can reach, per set (ROI, time sample).

    Attributes
    ----------
    lower, upper : ndarray of shape (n_sets,)
    """

    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True)
class SplitHalfCeiling:
    """Split-half RSA ceiling per set.

    Attributes
    ----------
    split_half : ndarray of shape (n_sets,)
        Comparison of the even-repeat RDM with the odd-repeat RDM.
    ceiling : ndarray of shape (n_sets,)
        ``sqrt(2 r / (1 + r))``; NaN where ``split_half <= 0``.
    """

    split_half: np.ndarray
    ceiling: np.ndarray


def rsa_noise_ceiling_subjects(
    subject_rdms: np.ndarray, method: Comparison = "spearman"
) -> RSANoiseCeiling:
    """Leave-one-subject-out noise ceiling of RSA, through rsatoolbox.

    Parameters
    ----------
    subject_rdms : ndarray of shape (n_subjects, n_sets, n_pairs)
        Each subject's upper-triangle RDM of each set (ROI or time sample), of the same stimuli
        in the same order (e.g. ``np.stack([rdms(rois_of_subject) for ...])``).
    method : {"spearman", "pearson", "kendall_tau_a"}
        The comparison used for the model scores. rsatoolbox pools ranks for Spearman and
        Kendall (its warning about averaged ranks for tau is silenced here), z-scored RDMs for
        Pearson.

    Returns
    -------
    ceiling : RSANoiseCeiling
        ``lower`` and ``upper`` of shape (n_sets,).
    """
    from rsatoolbox.inference import boot_noise_ceiling
    from rsatoolbox.rdm import RDMs

    check_option(method, COMPARISONS, "method")
    subject_rdms = np.asarray(subject_rdms, dtype=np.float64)
    if subject_rdms.ndim != 3:
        raise ValueError(
            "subject_rdms must have shape (n_subjects, n_sets, n_pairs); got shape "
            f"{subject_rdms.shape}"
        )
    if subject_rdms.shape[0] < 2:
        raise ValueError(
            f"a noise ceiling from subjects needs at least 2 subjects; got "
            f"{subject_rdms.shape[0]} (with one subject use rsa_noise_ceiling_split_half)"
        )
    if not np.isfinite(subject_rdms).all():
        raise ValueError("subject_rdms hold NaN or infinite dissimilarities")
    lower = np.empty(subject_rdms.shape[1])
    upper = np.empty(subject_rdms.shape[1])
    for index in range(subject_rdms.shape[1]):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Noise ceiling for tau based on averaged")
            lower[index], upper[index] = boot_noise_ceiling(
                RDMs(subject_rdms[:, index]), method=_RSATOOLBOX_METHOD[method]
            )
    return RSANoiseCeiling(lower=lower, upper=upper)


def rsa_noise_ceiling_split_half(
    repeats: np.ndarray | Sequence[np.ndarray],
    *,
    metric: RDMMetric = "correlation",
    method: Comparison = "spearman",
) -> SplitHalfCeiling:
    """Split-half (Spearman-Brown) noise ceiling of RSA from one subject's repeats.

    Parameters
    ----------
    repeats : ndarray of shape (n_sets, n_repeats, n_stimuli, n_targets), or sequence of
        (n_repeats_i, n_stimuli, n_targets_i)
        Single-repeat responses per set (ROI, MEG time sample), at least 2 repeats
        (4 for ``metric="crossnobis"``, whose halves need 2 each).
    metric : {"correlation", "euclidean", "crossnobis"}
        The brain RDM's dissimilarity, as in :func:`brainalign.probe.metrics.rdms`.
    method : {"spearman", "pearson", "kendall_tau_a"}

    Returns
    -------
    ceiling : SplitHalfCeiling
    """
    check_option(method, COMPARISONS, "method")
    sets = as_sets(repeats, name="repeats", repeats=True)
    if metric == "crossnobis":
        too_few = [index for index, item in enumerate(sets) if item.shape[0] < 4]
        if too_few:
            raise ValueError(
                f"repeats[{too_few[0]}] has {sets[too_few[0]].shape[0]} repeats; a split-half "
                "crossnobis ceiling needs at least 4 (2 per half)"
            )
        even = [item[0::2] for item in sets]
        odd = [item[1::2] for item in sets]
    else:
        even = [item[0::2].mean(axis=0) for item in sets]
        odd = [item[1::2].mean(axis=0) for item in sets]
    even_rdms = rdms(even, metric)
    odd_rdms = rdms(odd, metric)
    split_half = np.array(
        [
            compare_rdms(first[None], second[None], method)[0, 0]
            for first, second in zip(even_rdms, odd_rdms)
        ]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        reliability = 2.0 * split_half / (1.0 + split_half)
        ceiling = np.where(
            split_half > 0, np.sqrt(np.where(split_half > 0, reliability, 0.0)), np.nan
        )
    return SplitHalfCeiling(split_half=split_half, ceiling=ceiling)


def noise_ceiling_random_splits(
    repeats: np.ndarray, *, n_splits: int = 20, seed: int = 0
) -> np.ndarray:
    """Spearman-Brown split-half reliability per target, averaged over random half splits.

    Each split permutes the order of the repeats (the same permutation for every stimulus) and
    calls :func:`brainalign.probe.scores.noise_ceiling_split_half`, which splits even and odd
    positions. ``n_splits=1`` with ``seed=None`` is exactly that function (no permutation).

    Parameters
    ----------
    repeats : ndarray of shape (n_repeats, n_stimuli, *target_shape)
        ``BrainData.repeats``: fMRI (n_repeats, n_stimuli, n_targets) or MEG
        (n_repeats, n_stimuli, n_channels, n_times).
    n_splits : int, default=20
    seed : int or None, default=0
        Seed of the permutations; None keeps the given order (only with ``n_splits=1``).

    Returns
    -------
    reliability : ndarray of shape target_shape
        Fraction; compare a Pearson R with ``sqrt(reliability)``. NaN for constant targets.
    """
    repeats = np.asarray(repeats)
    if repeats.ndim < 3:
        raise ValueError(
            "repeats must have shape (n_repeats, n_stimuli, *target_shape); got shape "
            f"{repeats.shape} (data without repeats have no split-half ceiling)"
        )
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer; got {n_splits!r}")
    if seed is None and n_splits != 1:
        raise ValueError("seed=None keeps the repeat order, so it allows only n_splits=1")
    target_shape = repeats.shape[2:]
    flat = repeats.reshape(repeats.shape[0], repeats.shape[1], -1)  # (R, n, n_targets)
    rng = None if seed is None else np.random.default_rng(seed)
    total = np.zeros(flat.shape[2])
    for _ in range(n_splits):
        order = np.arange(flat.shape[0]) if rng is None else rng.permutation(flat.shape[0])
        total += noise_ceiling_split_half(flat[order])
    return (total / n_splits).reshape(target_shape)
