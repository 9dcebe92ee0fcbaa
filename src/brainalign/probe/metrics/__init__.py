"""Alignment metrics beside ridge encoding: RSA, CKA, banded ridge / variance partitioning.

A small numeric library: every function takes many representations ("sets") of the same
stimuli at once (layers, ROIs, MEG time samples) and returns plain arrays or small dataclasses.

- :mod:`.rsa`: RDMs (correlation, euclidean, crossnobis) and their comparisons (Spearman,
  Pearson, Kendall tau-a);
- :mod:`.cka`: linear CKA, biased, unbiased (HSIC_1) and split-half cross-validated;
- :mod:`.ceilings`: noise ceilings of RSA (subjects, split halves) and of encoding (random
  split halves, Spearman-Brown);
- :mod:`.variance_partitioning`: banded ridge (himalaya) and the unique / shared variance of
  two or more feature spaces.
"""

from brainalign.probe.metrics.ceilings import (
    RSANoiseCeiling,
    SplitHalfCeiling,
    noise_ceiling_random_splits,
    rsa_noise_ceiling_split_half,
    rsa_noise_ceiling_subjects,
)
from brainalign.probe.metrics.cka import CKA_ROUTES, cross_validated_cka, linear_cka
from brainalign.probe.metrics.rsa import (
    COMPARISONS,
    RDM_METRICS,
    compare_rdms,
    n_pairs,
    rdms,
    representational_similarity,
)
from brainalign.probe.metrics.variance_partitioning import (
    BandedRidgeResult,
    VariancePartition,
    fit_banded_ridge,
    variance_partitioning,
)

__all__ = [
    "CKA_ROUTES",
    "COMPARISONS",
    "RDM_METRICS",
    "BandedRidgeResult",
    "RSANoiseCeiling",
    "SplitHalfCeiling",
    "VariancePartition",
    "compare_rdms",
    "cross_validated_cka",
    "fit_banded_ridge",
    "linear_cka",
    "n_pairs",
    "noise_ceiling_random_splits",
    "rdms",
    "representational_similarity",
    "rsa_noise_ceiling_split_half",
    "rsa_noise_ceiling_subjects",
    "variance_partitioning",
]
