"""``brainalign probe-language``: a language model's layers against word-locked MEG (Study C).

    brainalign probe-language --model models/pythia-14m --brain sub-01_words-epo.fif --out out/lm

The words come from the epochs' metadata (columns ``word``, optional ``story`` and ``pos`` or
``is_content``), or from ``--words table.csv`` when the epochs cover only some words: the
model must read every word of the text as context. Everything is checked before the model
runs; the output folder is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add(subparsers: argparse._SubParsersAction) -> Callable[[argparse.Namespace], None]:
    from brainalign.commands.probe_options import parse_layers

    parser = subparsers.add_parser(
        "probe-language",
        help="score a language model's layers against word-locked MEG (Study C)",
        description="Read every word with its preceding context through a Hugging Face "
        "language model on disk, reduce each layer to PCA components, map MEG to the features "
        "with one ridge decoder per time sample, and write scores.parquet, summary.json and "
        "figures (decoding score per layer over time, T_max and the temporal score).",
    )
    parser.add_argument("--model", required=True, help="a Hugging Face model folder on disk")
    parser.add_argument(
        "--brain",
        action="append",
        default=[],
        metavar="EPOCHS",
        help="word-locked MEG epochs (-epo.fif with stimulus_id per word); repeat for several",
    )
    parser.add_argument(
        "--words",
        help="CSV of every word in order (stimulus_id, word, [story], [pos|is_content]); "
        "default: the epochs' metadata",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--context", type=int, default=50, help="preceding words read (50)")
    parser.add_argument(
        "--layers",
        default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
        type=parse_layers,
        help="relative depths (default 10%%..90%%), N evenly spaced, or all",
    )
    parser.add_argument("--pca", type=int, default=50, help="PCA components per layer (0: none)")
    parser.add_argument(
        "--all-words", action="store_true", help="score every word, not only content words"
    )
    parser.add_argument("--direction", default="decoding", choices=["decoding", "encoding"])
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "numpy", "torch", "torch_cuda"]
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--cache-dir", default=".brainalign_cache", help="feature cache folder ('' disables it)"
    )

    def run(ns: argparse.Namespace) -> None:
        if not ns.brain:
            raise ValueError("give at least one --brain EPOCHS file")
        out = Path(ns.out)
        if out.exists() and not ns.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        result = probe_language(ns, progress=True)
        result.write(out, overwrite=ns.overwrite)
        for line in result.summary_lines():
            print(line)
        print(f"wrote {out}/scores.parquet, summary.json and figures/")

    return run


def _word_tables(ns: argparse.Namespace) -> list[tuple[Any, Any]]:
    """(BrainData, WordSequence) per ``--brain``, with every check done before the model runs."""
    import pandas as pd

    from brainalign.probe.formats import load_meg_epochs_with_metadata
    from brainalign.probe.language import WordSequence
    from brainalign.utils.reading import read_file

    shared = None
    if ns.words:
        table = read_file(
            lambda: pd.read_csv(ns.words, dtype={"stimulus_id": str}), ns.words, "a CSV table"
        )
        shared = WordSequence.from_table(table, ns.words)
    pairs = []
    for path in ns.brain:
        brain, metadata = load_meg_epochs_with_metadata(path)
        words = shared or WordSequence.from_table(metadata, f"{path} (epochs metadata)")
        unknown = words.unknown_ids(brain.stimulus_ids)
        if unknown:
            raise ValueError(
                f"{path}: {len(unknown)} epochs name stimulus ids missing from the word table, "
                f"e.g. {unknown[:5]}"
            )
        pairs.append((brain.drop_bad_targets(), words))
    return pairs


def probe_language(ns: argparse.Namespace, *, progress: bool = True) -> Any:
    """Extract word features once per word table and score every ``--brain``."""
    import pandas as pd

    from brainalign.probe.cache import FeatureCache
    from brainalign.probe.features import select_layers
    from brainalign.probe.language import (
        DEFAULT_LANGUAGE_ALPHAS,
        extract_word_features,
        load_language_model,
        score_language,
    )
    from brainalign.probe.pipeline import EncodingConfig
    from brainalign.probe.run import ProbeRun

    folder = Path(ns.model)
    if not (folder / "config.json").is_file():  # before the (possibly large) MEG files are read
        raise FileNotFoundError(
            f"{folder} is not a Hugging Face model folder: expected config.json, the weights "
            "and the tokenizer files in it (nothing is downloaded)"
        )
    pairs = _word_tables(ns)
    model = load_language_model(folder)
    layers = select_layers(model.depth, ns.layers)
    depths = {layer: model.relative_depths[layer] for layer in layers}
    config = EncodingConfig(
        alphas=[float(alpha) for alpha in DEFAULT_LANGUAGE_ALPHAS],
        n_folds=ns.n_folds,
        backend=ns.backend,
        direction=ns.direction,
    )
    cache = FeatureCache(ns.cache_dir) if ns.cache_dir else None
    tables, summaries, extracted = [], [], {}
    for brain, words in pairs:
        if id(words) not in extracted:  # one extraction per word table
            extracted[id(words)] = extract_word_features(
                model,
                words,
                layers=layers,
                context_words=ns.context,
                batch_size=ns.batch_size,
                progress=progress,
                cache=cache,
            )
        scores = score_language(
            extracted[id(words)],
            depths,
            words,
            brain,
            n_components=ns.pca or None,
            content_only=not ns.all_words,
            config=config,
            progress=progress,
        )
        tables.append(scores.table)
        summaries.append({**scores.summary, "context_words": ns.context})
    table = pd.concat(tables, ignore_index=True).assign(model=ns.model)
    summary = {
        "model": ns.model,
        "architecture": model.name,
        "layers": layers,
        "context_words": ns.context,
        "pca": ns.pca or None,
        "content_only": not ns.all_words,
        "results": summaries,
    }
    return ProbeRun(table=table, summary=summary, rois={})
