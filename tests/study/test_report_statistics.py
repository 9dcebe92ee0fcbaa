"""The report's level comparisons on simulated studies with a known truth (calibration)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainalign.study.aggregate import StudyResults
from brainalign.study.compare import compare_levels

N_SUBJECTS = 8
ROIS = [f"R{index}" for index in range(10)]


def simulated_study(rng: np.random.Generator, effect: float) -> StudyResults:
    """Two levels of one factor, 8 subjects, 10 ROI curves and the encoding curve.

    Each subject has its own level of alignment and each ROI its own offset; the two levels
    differ by ``effect`` (in noise standard deviations) in every curve.
    """
    runs = pd.DataFrame(
        {"run": ["x=a", "x=b"], "kind": ["fit", "fit"], "x": ["a", "b"], "status": "COMPLETED"}
    )
    rows = []
    subject_effect = rng.normal(0.0, 1.0, N_SUBJECTS)
    for curve in ["encoding", *[f"roi/{roi}" for roi in ROIS]]:
        offset = rng.normal(0.0, 1.0)
        for level, shift in (("a", effect), ("b", 0.0)):
            noise = rng.normal(0.0, 1.0, N_SUBJECTS)
            for subject in range(N_SUBJECTS):
                rows.append(
                    {
                        "run": f"x={level}",
                        "source": "training",
                        "x": level,
                        "subject": f"s{subject}",
                        "modality": "fmri",
                        "feature_kind": "activation",
                        "curve": curve,
                        "train_fraction": 1.0,
                        "step": 100,
                        "value": offset + subject_effect[subject] + shift + noise[subject],
                    }
                )
    curves = pd.DataFrame.from_records(rows)
    return StudyResults(runs=runs, factors=["x"], scores=pd.DataFrame(), curves=curves)


def _wilcoxon(study: StudyResults) -> pd.DataFrame:
    table = compare_levels(study, alpha=0.05, n_permutations=500)
    return table[table["test"] == "wilcoxon"]


@pytest.mark.slow
def test_no_planted_difference_keeps_false_positives_at_or_below_five_percent():
    rng = np.random.default_rng(0)
    tests = pd.concat([_wilcoxon(simulated_study(rng, 0.0)) for _ in range(25)])
    assert len(tests) >= 250  # 25 studies x 11 curves
    false_positive_rate = tests["rejected"].mean()
    assert false_positive_rate <= 0.05, false_positive_rate
    # and the uncorrected p values are not far from uniform
    assert 0.02 <= (tests["p_value"] < 0.05).mean() <= 0.09


@pytest.mark.slow
def test_a_planted_difference_is_detected_after_the_correction():
    rng = np.random.default_rng(1)
    tests = pd.concat([_wilcoxon(simulated_study(rng, 2.0)) for _ in range(10)])
    power = tests["rejected"].mean()
    assert power >= 0.8, power  # 2 noise sds with 8 subjects
    assert (tests["mean_difference"] > 0).mean() > 0.95
    assert (tests["effect_size"] > 0).all()  # rank-biserial of a shift upwards


def test_families_are_corrected_separately():
    rng = np.random.default_rng(2)
    tests = _wilcoxon(simulated_study(rng, 1.0))
    assert set(tests["family"]) == {"scores", "rois"}
    for _, family in tests.groupby("family"):
        order = family.sort_values("p_value")
        assert np.all(np.diff(order["q_value"].to_numpy()) >= -1e-12)  # BH q values are monotone
        assert (order["q_value"] >= order["p_value"] - 1e-12).all()
