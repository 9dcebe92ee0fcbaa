"""Language-model studies (Study C): language cells, their inputs and job, model size and context
as numeric factors, and a planted study whose temporal score rises with model size."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from brainalign.study.aggregate import StudyResults
from brainalign.study.compare import numeric_levels, trends
from brainalign.study.config import load_study
from brainalign.study.grid import expand_cells
from brainalign.study.runs import plan_run, read_language_inputs
from brainalign.study.table import build_table, count_safetensors_parameters
from brainalign.study.trends import trend_test


def model_folder(path: Path) -> Path:
    """What the study checks of a language model folder before any job: a config.json."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return path


def write_language_study(folder: Path, **fields) -> Path:
    study = {
        "name": "lm",
        "factors": {
            "size": {
                "small": {"probe_language": {"model": str(model_folder(folder / "lm-small"))}},
                "large": {"probe_language": {"model": str(model_folder(folder / "lm-large"))}},
            },
            "context": {
                "c0": {"language": {"context_words": 0}},
                "c20": {"language": {"context_words": 20, "batch_size": 8}},
            },
        },
        "language": {
            "brain": ["sub-01_words-epo.fif", "sub-02_words-epo.fif"],
            "layers": "all",
            "pca": 3,
            "content_only": False,
            "cache_dir": None,
        },
        **fields,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_language_levels_and_language_deltas_make_language_cells(tmp_path):
    study = load_study(write_language_study(tmp_path))
    cells = expand_cells(study)
    assert [cell.name for cell in cells] == [
        "size=small__context=c0",
        "size=small__context=c20",
        "size=large__context=c0",
        "size=large__context=c20",
    ]
    assert {cell.kind for cell in cells} == {"language"}
    first, second = cells[0].language, cells[1].language
    assert first.model == tmp_path / "lm-small" and cells[2].language.model == tmp_path / "lm-large"
    assert (first.context_words, second.context_words) == (0, 20)
    assert (first.batch_size, second.batch_size) == (32, 8)  # the delta only changes its keys
    assert first.layers == "all" and first.pca == 3 and first.content_only is False
    assert first.brain == ("sub-01_words-epo.fif", "sub-02_words-epo.fif")


def test_a_language_cell_writes_its_probe_and_runs_the_study_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the current folder
    study = load_study(write_language_study(tmp_path, language={"brain": ["sub-01-epo.fif"]}))
    cells = expand_cells(study)
    plan = plan_run(study, cells[1], tmp_path / "out")
    run_dir = tmp_path / "out" / "runs" / "size=small__context=c20"
    assert plan.run_dir == run_dir
    assert plan.job.argv == ["study", "probe-language", str(run_dir)]
    assert plan.job.resume_argv is None
    assert set(plan.inputs) == {"language.yaml"}
    written = yaml.safe_load(plan.inputs["language.yaml"])
    assert written["model"] == str(tmp_path / "lm-small")
    assert written["context_words"] == 20 and written["batch_size"] == 8
    assert written["cache_dir"] == str(tmp_path / ".brainalign_cache")  # made absolute
    assert written["brain"] == ["sub-01-epo.fif"]  # specs as given
    assert written["layers"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    # the job reads back what the study wrote
    (run_dir / "inputs").mkdir(parents=True)
    (run_dir / "inputs" / "language.yaml").write_text(plan.inputs["language.yaml"])
    config = read_language_inputs(run_dir)
    assert config == dataclasses.replace(
        cells[1].language,
        model=tmp_path / "lm-small",
        cache_dir=tmp_path / ".brainalign_cache",
        layers=written["layers"],
    )
    other = plan_run(study, cells[0], tmp_path / "out")
    assert other.config_hash != plan.config_hash
    assert plan_run(study, cells[1], tmp_path / "out").config_hash == plan.config_hash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"language": {"brain": ["a-epo.fif"], "contxt_words": 5}},
            "language: unknown key 'contxt_words' (did you mean 'context_words'?)",
        ),
        (
            {
                "language": {"pca": 3},
                "factors": {"size": {"a": {"probe_language": {"model": "MODEL"}}}},
            },
            "cell 'size=a': language: missing key(s) brain",
        ),
        (
            {
                "language": {"brain": ["a-epo.fif"]},
                "factors": {
                    "size": {"a": {"probe_language": {"model": "MODEL"}}},
                    "context": {"c": {"language": {"context_word": 5}}},
                },
            },
            "factor 'context', level 'c': language: unknown key 'context_word'",
        ),
        (
            {
                "language": {"brain": ["a-epo.fif"]},
                "factors": {
                    "size": {"a": {"probe_language": {"model": "MODEL"}}},
                    "context": {"c": {"language": {"context_words": "long"}}},
                },
            },
            "cell 'size=a__context=c': language: Parser key \"context_words\"",
        ),
        (
            {"language": {"brain": ["a-epo.fif"], "model": "x"}},
            "model is not a key of the language block",
        ),
        (
            {"factors": {"size": {"a": {"probe_language": {"model": "no_such_model"}}}}},
            "factor 'size', level 'a': probe_language: no_such_model is not a Hugging Face "
            "model folder",
        ),
        (
            {"factors": {"size": {"a": {"probe_language": {"model": "MODEL", "pca": 3}}}}},
            "probe_language must be {model: FOLDER}",
        ),
        (
            {"factors": {"size": {"a": {"probe_language": {"model": "MODEL"}, "trainer": {}}}}},
            "a probe_language level probes a model, it has no fit keys ['trainer']",
        ),
        (
            {
                "language": {"brain": ["a-epo.fif"]},
                "factors": {
                    "size": {"a": {"probe_language": {"model": "MODEL"}}},
                    "vision": {"r": {"probe_model": {"spec": "timm:resnet18"}}},
                },
            },
            "cell 'size=a__vision=r' mixes a language model (size=a) with a vision model to "
            "probe (vision=r)",
        ),
        (
            {
                "base": ["BASE"],
                "language": {"brain": ["a-epo.fif"]},
                "factors": {
                    "size": {"a": {"probe_language": {"model": "MODEL"}}},
                    "lr": {"low": {"model": {"optim": {"base_lr": 0.001}}}},
                },
            },
            "cell 'size=a__lr=low' mixes a model to probe (size=a) with fit config deltas",
        ),
        (
            {
                "language": {"brain": ["a-epo.fif"]},
                "factors": {
                    "size": {"a": {"probe_language": {"model": "MODEL"}}},
                    "pool": {"cls": {"probe": {"features": {"pooling": "cls"}}}},
                },
            },
            "probes a language model (size=a) but has probe: deltas",
        ),
        (
            {
                "base": ["BASE"],
                "factors": {
                    "lr": {"low": {"model": {"optim": {"base_lr": 0.001}}}},
                    "context": {"c0": {"language": {"context_words": 0}}},
                },
            },
            "has a language: delta (context=c0) but no language model to probe",
        ),
    ],
)
def test_bad_language_studies_are_one_clear_error(tmp_path, change, message):
    path = write_language_study(tmp_path)
    content = yaml.safe_load(path.read_text())
    text = json.dumps(change)
    text = text.replace("MODEL", str(tmp_path / "lm-small"))
    text = text.replace("BASE", str(Path(__file__).parents[2] / "configs/experiments/smoke.yaml"))
    content.update(json.loads(text))
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        load_study(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_brain_specs_are_checked_before_any_job(tmp_path):
    from brainalign.study.orchestrate import prepare_runs

    study = load_study(write_language_study(tmp_path))
    with pytest.raises(FileNotFoundError, match="word-locked MEG not found: sub-01_words-epo.fif"):
        prepare_runs(study, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()


# ---------------------------------------------------------------- model size and context
@pytest.fixture(scope="module")
def gpt2_folders(tmp_path_factory):
    """A tied GPT-2 with its LM head (one file) and a shallower GPT-2 saved in shards, with the
    ``num_parameters()`` of each."""
    pytest.importorskip("transformers")
    import torch
    import transformers

    folder = tmp_path_factory.mktemp("gpt2")
    config = transformers.GPT2Config(
        vocab_size=53, n_positions=16, n_embd=24, n_layer=3, n_head=2, bos_token_id=0
    )
    torch.manual_seed(0)
    tied = transformers.GPT2LMHeadModel(config)  # lm_head shares wte: counted once
    tied.save_pretrained(folder / "tied")
    sharded = transformers.GPT2Model(transformers.GPT2Config(**{**config.to_dict(), "n_layer": 2}))
    sharded.save_pretrained(folder / "sharded", max_shard_size="20KB")
    return {
        "tied": (folder / "tied", tied.num_parameters()),
        "sharded": (folder / "sharded", sharded.num_parameters()),
    }


def test_parameters_are_counted_from_the_safetensors_headers(gpt2_folders):
    tied, n_tied = gpt2_folders["tied"]
    sharded, n_sharded = gpt2_folders["sharded"]
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 1
    assert count_safetensors_parameters(tied) == n_tied
    assert count_safetensors_parameters(sharded) == n_sharded
    assert count_safetensors_parameters(tied.parent / "nothing") is None


def test_the_table_holds_model_size_and_context_of_language_runs(tmp_path, gpt2_folders):
    tied, n_tied = gpt2_folders["tied"]
    sharded, n_sharded = gpt2_folders["sharded"]
    path = write_language_study(tmp_path)
    content = yaml.safe_load(path.read_text())
    content["factors"]["size"] = {
        "small": {"probe_language": {"model": str(sharded)}},
        "large": {"probe_language": {"model": str(tied)}},
    }
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    study = load_study(path)
    plans = [plan_run(study, cell, tmp_path / "out") for cell in expand_cells(study)]
    table = build_table(plans, list(study.factors))
    assert list(table["kind"]) == ["language"] * 4
    assert list(table["n_parameters"]) == [n_sharded, n_sharded, n_tied, n_tied]
    assert list(table["context_words"]) == [0, 20, 0, 20]
    assert table["max_steps"].isna().all() and set(table["status"]) == {"not started"}
    size = numeric_levels(table, "size")
    assert size.against == "parameters"
    assert size.values == {"small": n_sharded, "large": n_tied}
    context = numeric_levels(table, "context")  # crossed with size: numeric by context only
    assert context.against == "context_words+1" and context.values == {"c0": 1.0, "c20": 21.0}


def test_trends_against_size_and_context_plus_one(tmp_path):
    """Planted: temporal score = subject offset + 0.2 per decade of parameters + 0.1 per decade
    of (context + 1), plus noise; the trends must be trend_test on exactly those numbers."""
    rng = np.random.default_rng(3)
    sizes = {"s": 1.4e7, "m": 7.0e7, "l": 4.1e8}
    contexts = {"c0": 0, "c9": 9, "c99": 99}
    runs, curves = [], []
    for size, n_parameters in sizes.items():
        for context, words in contexts.items():
            run = f"size={size}__context={context}"
            runs.append(
                {
                    "run": run,
                    "kind": "language",
                    "size": size,
                    "context": context,
                    "status": "COMPLETED",
                    "n_parameters": n_parameters,
                    "max_steps": None,
                    "context_words": words,
                }
            )
            for subject in range(5):
                value = 0.1 * subject + 0.2 * np.log10(n_parameters) + 0.1 * np.log10(words + 1)
                curves.append(
                    {
                        "run": run,
                        "source": "probe",
                        "size": size,
                        "context": context,
                        "train_fraction": 1.0,
                        "feature_kind": "language",
                        "modality": "meg",
                        "subject": f"sub-{subject}",
                        "curve": "temporal_score",
                        "value": value + 0.01 * rng.standard_normal(),
                    }
                )
    results = StudyResults(
        runs=pd.DataFrame(runs),
        factors=["size", "context"],
        scores=pd.DataFrame(),
        curves=pd.DataFrame(curves),
    )
    table = trends(results, {}).set_index("factor")
    assert table.loc["size", "against"] == "parameters"
    assert table.loc["context", "against"] == "context_words+1"
    frame = pd.DataFrame(curves)
    for factor, numbers, planted in (
        ("size", sizes, 0.2),
        ("context", {level: words + 1 for level, words in contexts.items()}, 0.1),
    ):
        expected = trend_test(
            frame[factor].map(numbers).to_numpy(dtype=float),
            frame["value"].to_numpy(),
            subjects=frame["subject"].to_numpy(),
        )
        assert table.loc[factor, "slope"] == pytest.approx(expected.slope)
        assert table.loc[factor, "slope_p"] == pytest.approx(expected.slope_p)
        assert table.loc[factor, "slope"] == pytest.approx(planted, abs=0.02)
        assert table.loc[factor, "slope_p"] < 1e-4


def test_a_numeric_factor_is_drawn_on_a_log_axis_with_its_trend(tmp_path):
    from brainalign.study.figures import score_by_value

    final = pd.DataFrame(
        {
            "size": ["s", "s", "l", "l"],
            "subject": ["a", "b", "a", "b"],
            "curve": "temporal_score",
            "value": [0.1, 0.2, 0.9, 0.8],
            "ci_low": np.nan,
            "ci_high": np.nan,
        }
    )
    figure = score_by_value(
        final,
        "size",
        {"s": 1e5, "l": 1e7},
        ["temporal_score"],
        label="parameters",
        titles={"temporal_score": "slope +0.350 per decade of parameters, p = 0.01"},
    )
    axis = figure.axes[0]
    assert axis.get_xscale() == "log"
    assert "slope +0.350" in axis.get_title() and "temporal_score" in axis.get_title()
    mean_line = axis.get_lines()[0]
    np.testing.assert_allclose(mean_line.get_xdata(), [1e5, 1e7])
    np.testing.assert_allclose(mean_line.get_ydata(), [0.15, 0.85])


# ---------------------------------------------------------------- the planted study
N_SUBJECTS = 8
N_LEVELS = 6
WIDTHS = (32, 64, 128)
#: The plant: the noise mixed into each level's readout, per model width (see the module
#: docstring of tests/support/planted_language.py). Rising: the widest model is the cleanest.
RISING_NOISE = {32: 40.0, 64: 5.0, 128: 0.5}
TIMES = np.arange(-3, 24) / 30.0  # -0.1 .. 0.77 s at 30 Hz
LATENCIES = [0.1 + 0.1 * level for level in range(N_LEVELS)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Eight subjects' word epochs carrying a six-level latent hierarchy in depth order, and
    GPT-2 folders of widths 32, 64, 128 carrying it with the rising plan's noise and with the
    reversed plan's (the same noise levels given to the widths in the opposite order)."""
    pytest.importorskip("transformers")
    from planted_language import hierarchy, save_hierarchy_model, write_hierarchy_subjects

    folder = tmp_path_factory.mktemp("planted")
    words, latent = hierarchy(320, N_LEVELS)
    brains = write_hierarchy_subjects(
        folder,
        words,
        latent,
        n_subjects=N_SUBJECTS,
        n_tokens=320,
        latencies=LATENCIES,
        times=TIMES,
    )
    reversed_noise = dict(zip(WIDTHS, reversed(RISING_NOISE.values())))
    models = {}
    for plan, noise_of in (("rising", RISING_NOISE), ("reversed", reversed_noise)):
        for width in WIDTHS:
            models[plan, width] = save_hierarchy_model(
                folder / f"{plan}-w{width}", words, latent, width=width, noise=noise_of[width]
            )
    return folder, brains, models


@pytest.fixture
def one_thread(monkeypatch):
    """The study's worker processes use one BLAS thread (small ridges and PCAs run several
    times slower on a shared machine when their threads compete)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, "1")


def run_planted_study(folder: Path, brains, models, plan: str) -> Path:
    from brainalign.study.orchestrate import run_study
    from brainalign.study.report import write_report

    study = {
        "name": f"planted-{plan}",
        "factors": {
            "size": {
                f"w{width}": {"probe_language": {"model": str(models[plan, width])}}
                for width in WIDTHS
            }
        },
        "language": {
            "brain": [str(path) for path in brains],
            "context_words": 2,
            "layers": "all",
            "pca": 2,
            "content_only": False,
            "backend": "numpy",
            "cache_dir": None,
        },
        "launcher": {"kind": "local", "max_workers": 1},
        "report": {"n_permutations": 500},
        "directory": str(folder / f"study-{plan}"),
    }
    path = folder / f"{plan}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    table = run_study(load_study(path), progress=False)
    assert list(table["kind"]) == ["language"] * 3
    assert list(table["status"]) == ["COMPLETED"] * 3, table["error"].tolist()
    expected = [count_safetensors_parameters(models[plan, width]) for width in WIDTHS]
    assert list(table["n_parameters"]) == expected and expected == sorted(expected)
    return write_report(folder / f"study-{plan}")


def _temporal_trend(report: Path) -> pd.Series:
    trend = pd.read_csv(report / "trends.csv")
    rows = trend[(trend["curve"] == "temporal_score") & (trend["factor"] == "size")]
    assert len(rows) == 1 and rows.iloc[0]["against"] == "parameters"
    return rows.iloc[0]


@pytest.mark.slow
def test_a_planted_study_shows_the_temporal_score_rising_with_model_size(planted, one_thread):
    """The planted study of issue 14: three GPT-2 widths probed against one MEG data set.

    The MEG of every subject carries six latent word features, feature ``k`` at ``0.1 (k+1)``
    s; every model's block ``k`` carries feature ``k`` plus word-specific detail that no MEG
    carries, whose scale the plant sets per width (``RISING_NOISE``: 40, 5, 0.5 for widths
    32, 64, 128; tests/support/planted_language.py builds the weights). The wider the model,
    the better each layer is decoded from the MEG at its own latency, so the temporal score
    (Pearson r of depth and T_max) must rise with the parameter count: across the 8 subjects
    (per-subject slopes of score on log10 parameters, t test and Wilcoxon), in the Wilcoxon
    comparison of the widest with the narrowest model, and in the report's figure.
    """
    folder, brains, models = planted
    report = run_planted_study(folder, brains, models, "rising")
    final = pd.read_csv(report / "final.csv")
    temporal = final[final["curve"] == "temporal_score"]
    means = temporal.groupby("size")["value"].mean()
    trend = _temporal_trend(report)
    comparisons = pd.read_csv(report / "comparisons.csv")
    widest = comparisons[
        (comparisons["curve"] == "temporal_score")
        & (comparisons["test"] == "wilcoxon")
        & (comparisons["level_a"] == "w32")
        & (comparisons["level_b"] == "w128")
    ].iloc[0]
    chance = pd.read_csv(report / "chance.csv")
    above_chance = (
        chance[chance["score"] == "temporal_score"]
        .groupby("run")["p_value"]
        .apply(lambda p: int((p < 0.05).sum()))
    )
    print(
        "\nplanted study (temporal score by width, mean over 8 subjects): "
        + ", ".join(f"{level} {means[level]:.2f}" for level in ("w32", "w64", "w128"))
    )
    print(
        f"trend against log10(parameters): slope {trend['slope']:+.3f} per decade "
        f"[{trend['slope_low']:+.3f}, {trend['slope_high']:+.3f}], t-test p = "
        f"{trend['slope_p']:.2g}, Wilcoxon p = {trend['slope_p_wilcoxon']:.2g}, "
        f"n = {trend['n_subjects']} subjects"
    )
    print(
        f"Wilcoxon w32 - w128: mean difference {widest['mean_difference']:+.3f}, "
        f"p = {widest['p_value']:.2g}, q = {widest['q_value']:.2g}; subjects above chance "
        f"(layer-order permutations, p < 0.05): {above_chance.to_dict()}"
    )
    assert means["w32"] < means["w64"] < means["w128"]
    assert trend["slope"] > 0 and trend["slope_low"] > 0
    assert trend["slope_p"] < 0.05 and trend["slope_p_wilcoxon"] < 0.05
    assert trend["n_subjects"] == N_SUBJECTS
    assert widest["mean_difference"] < 0 and widest["p_value"] < 0.05
    assert above_chance["size=w128"] == N_SUBJECTS
    assert above_chance.get("size=w32", 0) < N_SUBJECTS / 2
    assert (report / "figures" / "scores_by_size_meg.png").stat().st_size > 1000
    text = (report / "report.md").read_text()
    assert "Final meg scores against parameters (log axis, factor size" in text


@pytest.mark.slow
def test_the_reversed_plant_reverses_the_trend(planted, one_thread):
    """The control: the same MEG and widths, the noise levels given in the opposite order (the
    widest model noisiest). The trend must fall, so the rise above comes from the plant, not
    from the widths or the pipeline."""
    folder, brains, models = planted
    trend = _temporal_trend(run_planted_study(folder, brains, models, "reversed"))
    print(
        f"\nreversed plant: slope {trend['slope']:+.3f} per decade of parameters, "
        f"p = {trend['slope_p']:.2g}"
    )
    assert trend["slope"] < 0 and trend["slope_high"] < 0 and trend["slope_p"] < 0.05
