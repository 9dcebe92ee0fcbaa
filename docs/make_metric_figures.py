"""Render the README's figures of the probe's metrics and brain maps into docs/figures/.

Everything goes through the probe core (``load_targets`` -> ``fit_targets`` -> ``summarise``
-> ``ProbeRun.write``), with planted truths:

- the simulated subject (``simulate_subject``, 200 stimuli) probed by its oracle layers
  (layer k = planted level k) with ``metrics: [encoding, rsa, cka, cka_cv]``: one panel per
  metric (fMRI layer x ROI, MEG time courses) and the MEG sensor topomaps;
- the fsaverage5 vertices (both hemispheres) whose responses follow oracle layer
  ``round(3 * y')`` with ``y'`` the vertex's posterior-to-anterior position in [0, 1]: the
  surface map of best R and best-layer depth;
- two planted feature spaces given as activations and gradients of two layers, 600 stimuli
  (``variance_partitioning: {spaces: kinds}``): the unique and shared variance.

Run::

    PYTHONPATH=src .venv/bin/python docs/make_metric_figures.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.probe.brain_data import BrainData
from brainalign.probe.config import (
    EncodingConfig,
    FeatureConfig,
    ProbeConfig,
    VariancePartitioningConfig,
)
from brainalign.probe.run import (
    ProbeTarget,
    StimulusGroup,
    fit_targets,
    load_targets,
    stimulus_groups,
    summarise,
)
from brainalign.probe.simulate import oracle_features, simulate_subject
from brainalign.probe.stimuli import StimulusSet

FIGURES = Path(__file__).parent / "figures"
ENCODING = EncodingConfig(backend="numpy", n_folds=5)
DEPTHS = {index: index / 3 for index in range(4)}


def oracle(groups, latents):
    features = []
    for group in groups:
        levels = oracle_features(
            group.stimuli.load_array(), latents.loc[group.stimuli.ids].reset_index()
        )
        features.append({"activation": dict(enumerate(levels))})
    return features


def write(run, keep: dict[str, str], scratch: Path) -> None:
    out = scratch / "out"
    run.write(out, overwrite=True)
    for source, name in keep.items():
        shutil.copyfile(out / "figures" / source, FIGURES / name)


def simulated_metrics(scratch: Path) -> tuple[Path, pd.DataFrame, object]:
    subject = simulate_subject(scratch / "sim", n_stimuli=200, image_size=32, seed=1)
    latents = pd.read_csv(subject.stimuli_csv, dtype={"stimulus_id": str}).set_index("stimulus_id")
    config = ProbeConfig(
        brain=[str(subject.fmri_dir), str(subject.meg_path)],
        metrics=["encoding", "rsa", "cka", "cka_cv"],
        encoding=ENCODING,
        cache_dir=None,
    )
    targets = load_targets(config)
    groups = stimulus_groups(targets)
    fits = fit_targets(targets, groups, oracle(groups, latents), config)
    run = summarise(targets, fits, DEPTHS, config, model_name="oracle", architecture="oracle")
    write(
        run,
        {
            "sim01_fmri_activation_metric_heatmaps.png": "metric_heatmaps.png",
            "sim01_meg_activation_metric_time_courses.png": "metric_time_courses.png",
            "sim01_meg_activation_topomap.png": "meg_topomap.png",
        },
        scratch,
    )
    for line in run.summary_lines():
        print(line)
    return subject.fmri_dir, latents, targets[0]


def surface(scratch: Path, fmri_target: ProbeTarget, latents: pd.DataFrame) -> None:
    from nilearn import datasets

    mesh = datasets.load_fsaverage("fsaverage5")["inflated"]
    rows, levels = (
        [],
        oracle_features(
            fmri_target.stimuli.load_array(), latents.loc[fmri_target.stimuli.ids].reset_index()
        ),
    )
    rng = np.random.default_rng(0)
    readouts = []
    for hemi, part in (("lh", "left"), ("rh", "right")):
        coordinates = mesh.parts[part].coordinates
        y = coordinates[:, 1]
        position = (y - y.min()) / (y.max() - y.min())  # posterior 0 .. anterior 1
        level = np.rint(3 * position).astype(int)
        for vertex, k in enumerate(level):
            readout = levels[k] @ rng.normal(size=levels[k].shape[1])
            readouts.append(readout / readout.std())
            rows.append({"roi": f"level{k}", "hemi": hemi, "vertex": vertex})
    signal = np.stack(readouts, axis=1)
    brain = BrainData(
        modality="fmri",
        subject="fsaverage5",
        data=signal + rng.normal(size=signal.shape),
        stimulus_ids=fmri_target.brain.stimulus_ids,
        targets=pd.DataFrame(rows),
    )
    config = ProbeConfig(brain=["fsaverage5"], encoding=ENCODING, cache_dir=None)
    target = ProbeTarget("fsaverage5", brain, fmri_target.stimuli)
    group = StimulusGroup(fmri_target.stimuli, {0: np.arange(brain.n_stimuli)})
    features = [{"activation": dict(enumerate(levels))}]
    fits = fit_targets([target], [group], features, config)
    run = summarise([target], fits, DEPTHS, config, model_name="oracle", architecture="oracle")
    write(run, {"fsaverage5_fmri_activation_surface_map.png": "surface_map.png"}, scratch)


def partitioning(scratch: Path) -> None:
    """A = [a_only, common], B = [b_only, common]: shares 0.2, 0.1, 0.3 (0.4 noise); 600 stimuli.

    Layer 1 holds A' = [a_only, b_only] and B' = common instead: 0.3 unique each, none shared.
    """
    rng = np.random.default_rng(0)
    n = 600
    ids = [f"s{index:03d}" for index in range(n)]
    stimuli = StimulusSet.from_array(ids, np.zeros((n, 8, 8, 3), dtype=np.uint8))  # unused
    total = rng.normal(size=(n, 8 + 8 + 6 + 40))
    basis, _ = np.linalg.qr(total - total.mean(0))
    a_only, b_only, common, noise = np.split(basis * np.sqrt(n), [8, 16, 22], axis=1)

    def part(components, share):
        signal = components @ rng.normal(size=(components.shape[1], 20))
        return np.sqrt(share) * (signal - signal.mean(0)) / signal.std(0)

    data = part(a_only, 0.2) + part(b_only, 0.1) + part(common, 0.3) + part(noise, 0.4)
    brain = BrainData(
        modality="fmri",
        subject="planted",
        data=data,
        stimulus_ids=ids,
        targets=pd.DataFrame({"roi": ["V1"] * 10 + ["V2"] * 10}),
    )
    config = ProbeConfig(
        brain=["planted"],
        features=FeatureConfig(kinds=["activation", "gradient"]),
        encoding=ENCODING,
        variance_partitioning=VariancePartitioningConfig(spaces="kinds"),
        cache_dir=None,
    )
    features = [
        {
            "activation": {0: np.hstack([a_only, common]), 1: np.hstack([a_only, b_only])},
            "gradient": {0: np.hstack([b_only, common]), 1: common},
        }
    ]
    target = ProbeTarget("planted", brain, stimuli)
    group = StimulusGroup(stimuli, {0: np.arange(n)})
    fits = fit_targets([target], [group], features, config)
    run = summarise([target], fits, {0: 0.0, 1: 1.0}, config, model_name="-", architecture="-")
    write(
        run,
        {"planted_fmri_activation_variance_partitioning.png": "variance_partitioning.png"},
        scratch,
    )
    table = run.table[run.table["group"] == "all"]
    print(table[table["metric"].isin(["unique_variance", "shared_variance"])][
        ["layer", "metric", "space", "value"]
    ].round(3).to_string(index=False))  # fmt: skip


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        _, latents, fmri_target = simulated_metrics(scratch)
        surface(scratch, fmri_target, latents)
        partitioning(scratch)
    print(f"wrote {sorted(path.name for path in FIGURES.glob('*.png'))} to {FIGURES}")


if __name__ == "__main__":
    main()
