"""``brainalign probe``: score one model against fMRI / MEG data, offline.

    brainalign probe --model runs/demo/exports/step_0000500 \\
        --brain data/simulated/fmri --brain data/simulated/meg/sim01-epo.fif --out out/probe

Everything is checked before any feature is extracted (model, brain data, stimuli, output
folder); the output folder is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class ProbeRun:
    """What one offline probe produced (also what ``chronology`` reuses per export)."""

    table: pd.DataFrame
    summary: dict[str, Any]
    rois: dict[str, pd.DataFrame]


def parse_layers(text: str) -> Any:
    """``all`` | ``12`` (evenly spaced depths) | ``0,0.5,1`` (relative depths)."""
    if text == "all":
        return "all"
    if "," in text or "." in text:
        return [float(value) for value in text.split(",") if value]
    return int(text)


def add_probe_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``probe`` and ``chronology`` (when it probes exports)."""
    parser.add_argument(
        "--brain",
        action="append",
        default=[],
        metavar="SPEC",
        help="brain data: a generic fMRI folder, an MEG -epo.fif, or a named "
        "data set spec; repeat for several",
    )
    parser.add_argument("--stimuli", help="stimulus folder or table for brain data without images")
    parser.add_argument(
        "--layers",
        default="all",
        type=parse_layers,
        help="all | N evenly spaced depths | comma-separated relative depths",
    )
    parser.add_argument(
        "--pooling", default="mean", choices=["cls", "mean", "registers", "cls+mean"]
    )
    parser.add_argument(
        "--features",
        default="activation",
        help="feature kinds, comma-separated: activation, gradient (e.g. activation,gradient)",
    )
    parser.add_argument(
        "--gradient-loss",
        default="auto",
        choices=["auto", "ssl", "invariance", "supervised"],
        help="loss of gradient features: ssl (DINO + iBOT, fixed teacher; needs a .ckpt), "
        "invariance (two seeded views, any model), supervised (classifier + --labels); "
        "auto: ssl for a .ckpt, else invariance",
    )
    parser.add_argument(
        "--labels", help="CSV with stimulus_id,label columns (for --gradient-loss supervised)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--inner", default="loo", help="loo, or an int for inner K-fold")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "numpy", "torch", "torch_cuda"]
    )
    parser.add_argument("--direction", default="encoding", choices=["encoding", "decoding"])
    parser.add_argument("--pca", type=int, default=None, help="PCA components per layer")
    parser.add_argument(
        "--cache-dir", default=".brainalign_cache", help="feature cache folder ('' disables it)"
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow unpickling checkpoints (only for files you trust)",
    )
    parser.add_argument("--network", default="teacher", choices=["teacher", "student"])
    parser.add_argument("--weights", help="local weights file for timm:/torchvision: models")


def add(subparsers: argparse._SubParsersAction) -> Callable[[argparse.Namespace], None]:
    parser = subparsers.add_parser(
        "probe",
        help="score a model against fMRI and MEG data (offline)",
        description="Extract features of every requested layer, fit cross-validated ridge "
        "encoders per layer and write scores.parquet, summary.json and figures.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="teacher export folder, .ckpt, timm:NAME, torchvision:NAME, or a Hugging Face folder",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true")
    add_probe_options(parser)

    def run(ns: argparse.Namespace) -> None:
        if not ns.brain:
            raise ValueError("give at least one --brain SPEC")
        out = Path(ns.out)
        if out.exists() and not ns.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        result = probe_model(ns.model, ns, progress=True)
        write_outputs(result, out, overwrite=ns.overwrite)
        print_summary(result.summary)
        print(f"wrote {out}/scores.parquet, summary.json and figures/")

    return run


def _encoding_config(ns: argparse.Namespace) -> Any:
    from brainalign.probe.pipeline import EncodingConfig

    inner = ns.inner if ns.inner == "loo" else int(ns.inner)
    return EncodingConfig(
        n_folds=ns.n_folds, inner=inner, backend=ns.backend, direction=ns.direction
    )


def load_targets(ns: argparse.Namespace) -> list[tuple[Any, Any]]:
    """Load, align and clean every ``--brain`` data set (all checks before extraction)."""
    from brainalign.probe.formats import load_brain

    targets = []
    for spec in ns.brain:
        brain, stimuli = load_brain(spec)
        if stimuli is None:
            if not ns.stimuli:
                raise ValueError(f"brain data {spec!r} names no images: pass --stimuli")
            stimuli = _read_stimuli(ns.stimuli)
        brain, stimuli = brain.align(stimuli)
        brain = brain.drop_bad_targets()
        if brain.n_stimuli < 2 * ns.n_folds:
            raise ValueError(
                f"{spec}: {brain.n_stimuli} stimuli are too few for {ns.n_folds} folds "
                f"(need at least {2 * ns.n_folds})"
            )
        targets.append((brain, stimuli))
    return targets


def _read_stimuli(spec: str) -> Any:
    """A stimulus folder (ids = file stems) or a CSV table with stimulus_id, image_path."""
    from brainalign.probe.stimuli import StimulusSet

    path = Path(spec)
    return StimulusSet.from_folder(path) if path.is_dir() else StimulusSet.from_table(path)


def probe_model(
    model_spec: str,
    ns: argparse.Namespace,
    *,
    targets: list[tuple[Any, Any]] | None = None,
    progress: bool = True,
    extra_columns: dict[str, Any] | None = None,
) -> ProbeRun:
    """Probe one model against every target of ``ns``; returns the table and summary."""
    kinds = list(dict.fromkeys(kind.strip() for kind in ns.features.split(",") if kind.strip()))
    unknown = sorted(set(kinds) - {"activation", "gradient"})
    if unknown or not kinds:
        raise ValueError(f"unknown feature kinds {unknown or kinds}: use activation, gradient")
    targets = targets if targets is not None else load_targets(ns)
    # torch, timm and scikit-learn load only once the cheap checks above have passed
    from brainalign.probe.cache import FeatureCache
    from brainalign.probe.features import extract_features, reduce_features, select_layers
    from brainalign.probe.gradients import extract_gradient_features
    from brainalign.probe.models import load_probe_model
    from brainalign.probe.pipeline import score_layers

    model = load_probe_model(
        model_spec, weights=ns.weights, allow_pickle=ns.allow_pickle, network=ns.network
    )
    layers = select_layers(model.depth, ns.layers)
    depths = {layer: model.relative_depths[layer] for layer in layers}
    cache = FeatureCache(ns.cache_dir) if ns.cache_dir else None
    config = _encoding_config(ns)
    objectives: list[Any] = [None] * len(targets)
    if "gradient" in kinds and getattr(ns, "gradient_loss", "auto") == "supervised":
        objectives = [gradient_objective(model_spec, ns, stimuli) for _, stimuli in targets]
    elif "gradient" in kinds:  # one objective (e.g. a checkpoint's heads) for every target
        objectives = [gradient_objective(model_spec, ns, None)] * len(targets)
    tables, summaries, rois = [], [], {}
    for (brain, stimuli), objective in zip(targets, objectives):
        for kind in kinds:
            options = {
                "layers": layers,
                "pooling": ns.pooling,
                "batch_size": ns.batch_size,
                "progress": progress,
                "cache": cache,
            }
            if kind == "activation":
                features = extract_features(model, stimuli, **options)
            else:
                features = extract_gradient_features(model, stimuli, objective, **options)
            if ns.pca:
                features = reduce_features(features, ns.pca)
            scores = score_layers(
                features,
                depths,
                brain,
                config=config,
                feature_kind=kind,
                progress=progress,
                stimulus_ids=stimuli.ids,
            )
            tables.append(scores.table)
            summaries.append(scores.summary)
        if brain.modality == "fmri" and brain.rois is not None and not brain.rois.empty:
            rois[brain.subject] = brain.rois
    table = pd.concat(tables, ignore_index=True).assign(model=model_spec, **(extra_columns or {}))
    summary = {
        "model": model_spec,
        "architecture": model.architecture,
        "layers": layers,
        "pooling": ns.pooling,
        "results": summaries,
    }
    if objectives[0] is not None:
        summary["gradient_objective"] = objectives[0].identity
    return ProbeRun(table=table, summary=summary, rois=rois)


def gradient_objective(model_spec: str, ns: argparse.Namespace, stimuli: Any) -> Any:
    """The per-image loss of gradient features, chosen by ``--gradient-loss``.

    ``ssl``/``auto`` on a brainalign ``.ckpt``: the DINO + iBOT objective with its fixed teacher
    and heads (:mod:`brainalign.train.gradient_objective`). A teacher export holds no heads: the
    invariance objective is used instead, with a warning. ``supervised`` reads ``--labels``.
    """
    from brainalign.models.export import META_FILE
    from brainalign.probe.objectives import InvarianceObjective, SupervisedObjective

    loss = getattr(ns, "gradient_loss", "auto")
    path = Path(str(model_spec))
    is_checkpoint = path.suffix == ".ckpt" and path.is_file()
    is_export = path.is_dir() and (path / META_FILE).is_file()
    if loss == "supervised":
        if not getattr(ns, "labels", None):
            raise ValueError("--gradient-loss supervised needs --labels FILE (stimulus_id,label)")
        return SupervisedObjective.from_mapping(_read_labels(ns.labels), stimuli.ids)
    if loss in ("auto", "ssl") and is_checkpoint:
        from brainalign.train.gradient_objective import DinoGradientObjective

        return DinoGradientObjective.from_checkpoint(path, allow_pickle=ns.allow_pickle)
    if loss == "ssl" and not is_export:
        raise ValueError(
            f"--gradient-loss ssl needs a brainalign .ckpt (it holds the DINO/iBOT heads); "
            f"{model_spec!r} is not one: use --gradient-loss invariance"
        )
    if loss in ("auto", "ssl") and is_export:
        warnings.warn(
            f"{model_spec} is a teacher export without the DINO/iBOT heads, so the SSL objective "
            "is not available: gradient features use the invariance objective instead (probe "
            "the run's .ckpt for the SSL loss)",
            stacklevel=2,
        )
    return InvarianceObjective()


def _read_labels(path: str) -> dict[str, int]:
    """``stimulus_id,label`` CSV -> {stimulus_id: label}."""
    table = pd.read_csv(path, dtype={"stimulus_id": str})
    missing = {"stimulus_id", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; need stimulus_id,label")
    return dict(zip(table["stimulus_id"], table["label"].astype(int)))


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return _json_ready(value.item())
    return value


def write_outputs(result: ProbeRun, out: Path, *, overwrite: bool) -> None:
    """``scores.parquet``, ``summary.json`` and ``figures/`` into ``out`` (atomically)."""
    from brainalign.probe.report import save_figures
    from brainalign.utils.atomic import atomic_directory

    with atomic_directory(out, overwrite=overwrite) as folder:
        result.table.to_parquet(folder / "scores.parquet", index=False)
        (folder / "summary.json").write_text(json.dumps(_json_ready(result.summary), indent=2))
        for (subject, modality, kind), rows in result.table.groupby(
            ["subject", "modality", "feature_kind"], sort=False
        ):
            save_figures(
                rows,
                result.rois.get(subject),
                folder / "figures",
                prefix=f"{subject}_{modality}_{kind}",
            )


def print_summary(summary: dict[str, Any]) -> None:
    for entry in summary["results"]:
        line = (
            f"{entry['subject']}/{entry['modality']}/{entry['feature_kind']}: "
            f"encoding {entry['encoding_score']:.3f} (best depth {entry['best_depth']:.2f})"
        )
        if "spatial_score" in entry:
            line += f", spatial {entry['spatial_score']:.2f}"
        if "temporal_score" in entry:
            line += f", temporal {entry['temporal_score']:.2f}"
        for key in ("spatial_score_backward_order", "temporal_score_backward_order"):
            if key in entry:
                line += f", {key.split('_')[0]} (backward order) {entry[key]:.2f}"
        print(line)
