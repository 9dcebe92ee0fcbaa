"""Simulated subjects with planted encoding correlations, for the study-statistics tests.

Every target's observed response and prediction are standard bivariate normal over stimuli
with a planted correlation ``rho``: ``observed = z``, ``predicted = rho * z + sqrt(1 - rho**2)
* e`` with ``z, e`` independent N(0, 1). The population R of a target is therefore ``rho``
exactly, and the population value of a group's mean R is the mean of its targets' ``rho``.
Two levels of a factor share the observed responses and differ only in their predictions'
``rho`` (independent prediction noise), as two models probed on the same subject do.
"""

from __future__ import annotations

import numpy as np

from brainalign.probe.scores import pearson_r

#: Largest number of float64 values a simulation batch forms at once (~32 MB per array).
_BATCH_VALUES = 2**22


def planted_predictions(
    rng: np.random.Generator, n_stimuli: int, rho: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Observed responses and predictions with population correlation ``rho`` per target.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_stimuli : int
    rho : ndarray of shape (..., n_targets)
        Planted correlation of each target (leading axes: independent data sets).

    Returns
    -------
    observed, predicted : ndarray of shape (..., n_stimuli, n_targets)
    """
    rho = np.asarray(rho, dtype=np.float64)[..., None, :]  # (..., 1, n_targets)
    shape = (*rho.shape[:-2], n_stimuli, rho.shape[-1])
    observed = rng.standard_normal(shape)
    predicted = rho * observed + np.sqrt(1 - rho**2) * rng.standard_normal(shape)
    return observed, predicted


def two_level_r(
    rng: np.random.Generator, n_stimuli: int, rho_a: np.ndarray, rho_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sample R per target of two levels probed on the same observed responses.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_stimuli : int
    rho_a, rho_b : ndarray of shape (..., n_targets)
        Planted correlations of the two levels' predictions.

    Returns
    -------
    r_a, r_b : ndarray of shape (..., n_targets)
        Pearson R over the stimuli of each level's predictions; simulated in batches along
        the first axis so memory stays bounded.
    """
    rho_a, rho_b = np.broadcast_arrays(np.asarray(rho_a, float), np.asarray(rho_b, float))
    if rho_a.ndim == 1:
        rho_a, rho_b = rho_a[None], rho_b[None]
        r_a, r_b = two_level_r(rng, n_stimuli, rho_a, rho_b)
        return r_a[0], r_b[0]
    per_item = n_stimuli * int(np.prod(rho_a.shape[1:]))
    step = max(1, _BATCH_VALUES // per_item)
    parts_a, parts_b = [], []
    for start in range(0, rho_a.shape[0], step):
        a, b = rho_a[start : start + step, ..., None, :], rho_b[start : start + step, ..., None, :]
        shape = (*a.shape[:-2], n_stimuli, a.shape[-1])
        observed = rng.standard_normal(shape)
        predicted_a = a * observed + np.sqrt(1 - a**2) * rng.standard_normal(shape)
        predicted_b = b * observed + np.sqrt(1 - b**2) * rng.standard_normal(shape)
        parts_a.append(pearson_r(observed, predicted_a, axis=-2))
        parts_b.append(pearson_r(observed, predicted_b, axis=-2))
    return np.concatenate(parts_a), np.concatenate(parts_b)


def subject_level_scores(
    rng: np.random.Generator,
    n_comparisons: int,
    n_subjects: int,
    difference: float,
    *,
    n_stimuli: int = 100,
    n_targets: int = 20,
    base_rho: float = 0.3,
    subject_spread: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Group-mean R per subject at two levels, for comparisons across subjects.

    Each subject has its own encoding level ``base_rho + N(0, subject_spread)`` (shared by
    both levels); level A's planted rho is that plus ``difference``.

    Returns
    -------
    score_a, score_b : ndarray of shape (n_comparisons, n_subjects)
        Mean R over the subject's ``n_targets`` targets at each level.
    """
    subject_rho = base_rho + subject_spread * rng.standard_normal((n_comparisons, n_subjects))
    rho_b = np.repeat(subject_rho[..., None], n_targets, axis=-1)
    r_a, r_b = two_level_r(rng, n_stimuli, rho_b + difference, rho_b)
    return r_a.mean(axis=-1), r_b.mean(axis=-1)


def target_differences(
    rng: np.random.Generator,
    n_comparisons: int,
    n_targets: int,
    difference: float,
    *,
    n_stimuli: int = 200,
) -> np.ndarray:
    """Per-target R differences (level A minus B) within one subject, for sign-flip tests.

    Targets' planted rho of level B spread evenly over 0.1..0.5; level A's is that plus
    ``difference``.

    Returns
    -------
    differences : ndarray of shape (n_comparisons, n_targets)
    """
    rho_b = np.broadcast_to(np.linspace(0.1, 0.5, n_targets), (n_comparisons, n_targets))
    r_a, r_b = two_level_r(rng, n_stimuli, rho_b + difference, rho_b)
    return r_a - r_b
