"""The statistics of a study report, in one namespace (pure numpy/scipy, no I/O).

Definitions follow PAPERS.md, "Statistics a study report needs":

- confidence intervals: percentile bootstrap over stimuli of the held-out predictions, no refit
  (:mod:`brainalign.probe.bootstrap`: :func:`resample_counts`, :func:`bootstrap_group_r`,
  :func:`percentile_interval`), and derived scores per replicate
  (:mod:`brainalign.probe.bootstrap_scores`);
- comparisons of two levels: Wilcoxon signed-rank across subjects, sign-flip permutation test
  across targets within a subject, Benjamini-Hochberg FDR over a family
  (:mod:`brainalign.study.comparisons`);
- chance levels: permutation of ROI labels (spatial score) and of layer order (temporal score)
  (:mod:`brainalign.study.chance`);
- trends against log model size or log steps, one point per subject per level
  (:mod:`brainalign.study.trends`).

Run::

    from brainalign.study import stats
    counts = stats.resample_counts(n_stimuli, n_boot=1000, seed=0)
    boot = stats.bootstrap_group_r(observed, predicted, roi_of_target, weights=counts)
    low, high, n_nan, n_boot = stats.percentile_interval(boot)
"""

from __future__ import annotations

from brainalign.probe.bootstrap import (
    Folds,
    GroupSpec,
    PercentileInterval,
    bootstrap_group_r,
    bootstrap_group_r_loop,
    check_folds,
    group_index_sets,
    percentile_interval,
    resample_counts,
    resample_indices,
)
from brainalign.probe.bootstrap_scores import (
    best_depth_replicates,
    bootstrap_encoding_score,
    bootstrap_half_time,
    bootstrap_spatial_score,
    bootstrap_temporal_score,
    t_max_replicates,
)
from brainalign.probe.scores import rowwise_pearson
from brainalign.study.chance import (
    PermutationTest,
    correlation_permutation_test,
    spatial_score_permutation_test,
    temporal_score_permutation_test,
)
from brainalign.study.comparisons import (
    FDRResult,
    PairedComparison,
    SignFlipResult,
    fdr_bh,
    sign_flip_test,
    wilcoxon_paired,
)
from brainalign.study.trends import TrendResult, trend_test

__all__ = [
    "FDRResult",
    "Folds",
    "GroupSpec",
    "PairedComparison",
    "PercentileInterval",
    "PermutationTest",
    "SignFlipResult",
    "TrendResult",
    "best_depth_replicates",
    "bootstrap_encoding_score",
    "bootstrap_group_r",
    "bootstrap_group_r_loop",
    "bootstrap_half_time",
    "bootstrap_spatial_score",
    "bootstrap_temporal_score",
    "check_folds",
    "correlation_permutation_test",
    "fdr_bh",
    "group_index_sets",
    "percentile_interval",
    "resample_counts",
    "resample_indices",
    "rowwise_pearson",
    "sign_flip_test",
    "spatial_score_permutation_test",
    "t_max_replicates",
    "temporal_score_permutation_test",
    "trend_test",
    "wilcoxon_paired",
]
