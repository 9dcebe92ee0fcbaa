"""Noise ceilings: one formula, a declared unit, and what the score table reports from them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import EncodingConfig
from brainalign.probe.fitting import fit_layer
from brainalign.probe.formats import load_fmri_folder, write_fmri_folder
from brainalign.probe.metrics.per_group import encoding_ceiling
from brainalign.probe.pipeline import summarise_fits
from brainalign.probe.scores import noise_ceiling_from_ncsnr

CONFIG = EncodingConfig(backend="numpy", n_folds=3)


def test_ncsnr_ceiling_with_repeats_per_stimulus_averages_one_over_k():
    ncsnr = np.array([0.5, 1.0, 2.0])
    counts = np.array([1, 2, 3, 3])
    expected = 100 * ncsnr**2 / (ncsnr**2 + np.mean(1 / counts))
    np.testing.assert_allclose(noise_ceiling_from_ncsnr(ncsnr, counts), expected)
    np.testing.assert_allclose(
        noise_ceiling_from_ncsnr(ncsnr, np.full(5, 3)), noise_ceiling_from_ncsnr(ncsnr, 3)
    )
    with pytest.raises(ValueError, match="at least 1 for every stimulus"):
        noise_ceiling_from_ncsnr(ncsnr, np.array([2, 0]))
    with pytest.raises(TypeError, match="integer"):
        noise_ceiling_from_ncsnr(ncsnr, np.array([1.5, 2.0]))


def brain(*, ceiling=None, unit=None, repeats=None, seed=0, n=40):
    rng = np.random.default_rng(seed)
    layer = rng.normal(size=(n, 4))
    signal = layer @ rng.normal(size=(4, 6))
    if repeats is not None:
        repeats = signal[None] + rng.normal(size=(repeats, *signal.shape))
    data = signal + rng.normal(size=signal.shape) if repeats is None else repeats.mean(axis=0)
    return (
        BrainData(
            modality="fmri",
            subject="s",
            data=data,
            stimulus_ids=[f"i{index}" for index in range(n)],
            targets=pd.DataFrame({"roi": ["V1"] * 3 + ["V2"] * 3, "x": 0.0, "y": 0.0, "z": 0.0}),
            repeats=repeats,
            noise_ceiling=ceiling,
            noise_ceiling_unit=unit,
        ),
        layer,
    )


def test_the_unit_is_declared_never_guessed():
    ceiling = np.array([20.0, 40.0, 60.0, 80.0, 50.0, 0.5])
    percent, _ = brain(ceiling=ceiling, unit="percent")
    np.testing.assert_allclose(percent.noise_ceiling_fraction(), ceiling / 100)
    fraction, _ = brain(ceiling=ceiling / 100, unit="fraction")
    np.testing.assert_allclose(fraction.noise_ceiling_fraction(), ceiling / 100)
    unknown, _ = brain(ceiling=ceiling)
    assert unknown.noise_ceiling_fraction() is None
    with pytest.raises(ValueError, match="noise_ceiling_unit must be 'percent' or 'fraction'"):
        brain(ceiling=ceiling, unit="%")


def test_declared_ceiling_comes_first_then_the_split_half_of_the_repeats():
    declared, _ = brain(ceiling=np.full(6, 50.0), unit="percent", repeats=4)
    values, source = encoding_ceiling(declared)
    assert source == "declared"
    np.testing.assert_allclose(values, 0.5)
    undeclared, _ = brain(ceiling=np.full(6, 50.0), repeats=4)
    assert encoding_ceiling(undeclared)[1] == "split_half"
    assert encoding_ceiling(brain()[0]) == (None, "")


def test_table_rows_from_a_declared_percent_ceiling():
    ceiling = np.array([25.0, 36.0, 49.0, 64.0, 81.0, 0.0])  # the last: no explainable variance
    data, layer = brain(ceiling=ceiling, unit="percent")
    fit = fit_layer(0, layer, data, CONFIG)
    table = summarise_fits([fit], {0: 1.0}, data, config=CONFIG).table
    rows = table.set_index(["metric", "group", "layer"])["value"]
    fraction = ceiling / 100
    assert rows["noise_ceiling", "all", -1] == pytest.approx(fraction.mean())
    assert rows["noise_ceiling", "V1", -1] == pytest.approx(fraction[:3].mean())
    assert rows["noise_ceiling_r", "V2", -1] == pytest.approx(np.sqrt(fraction[3:5]).mean())
    normalised = fit.target_r[:5] / np.sqrt(fraction[:5])  # a ceiling of 0 divides nothing
    assert rows["r_ceiling_normalised", "all", 0] == pytest.approx(normalised.mean())
    assert rows["r_ceiling_normalised", "V1", 0] == pytest.approx(normalised[:3].mean())
    assert rows["r", "all", 0] == pytest.approx(np.nanmean(fit.target_r))  # r is left alone


def test_a_ceiling_of_unknown_unit_normalises_nothing():
    data, layer = brain(ceiling=np.full(6, 50.0))
    table = summarise_fits([fit_layer(0, layer, data, CONFIG)], {0: 1.0}, data, config=CONFIG)
    assert not {"noise_ceiling", "r_ceiling_normalised"} & set(table.table["metric"])


def test_folder_keeps_the_unit_and_warns_without_one(tmp_path):
    data, _ = brain(ceiling=np.full(6, 0.3), unit="fraction")
    ids = pd.DataFrame({"stimulus_id": data.stimulus_ids})
    folder = write_fmri_folder(tmp_path / "f", data, ids)
    assert json.loads((folder / "info.json").read_text())["noise_ceiling_unit"] == "fraction"
    (folder / "images").mkdir()
    from PIL import Image

    for stimulus_id in data.stimulus_ids:
        Image.new("RGB", (4, 4)).save(folder / "images" / f"{stimulus_id}.png")
    loaded, _ = load_fmri_folder(folder)
    assert loaded.noise_ceiling_unit == "fraction"
    (folder / "info.json").write_text(json.dumps({"subject": "s"}))
    with pytest.warns(UserWarning, match="no declared unit"):
        assert load_fmri_folder(folder)[0].noise_ceiling_unit is None
    (folder / "info.json").write_text(json.dumps({"noise_ceiling_unit": "percentage"}))
    with pytest.raises(ValueError, match="noise_ceiling_unit must be 'percent' or 'fraction'"):
        load_fmri_folder(folder)
