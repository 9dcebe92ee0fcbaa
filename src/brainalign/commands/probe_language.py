"""``brainalign probe-language``: a language model's layers against word-locked MEG (Study C).

    brainalign probe-language --model models/pythia-14m --brain sub-01_words-epo.fif --out out/lm
    brainalign probe-language --model models/pythia-14m --out out/lm \\
        --brain 'armeni2022:/data/armeni?subject=1&sessions=1-3&content=all'
    brainalign probe-language --model models/pythia-14m --out out/lm --all-words \\
        --brain 'meg-masc:/data/meg-masc?subject=01&sessions=0,1'

Brain data: a named speech data set (its words and onsets come from its BIDS events, see
:mod:`brainalign.probe.datasets.speech_meg`), or MNE epochs whose metadata carry the words
(columns ``word``, optional ``story`` and ``pos`` or ``is_content``), or epochs plus ``--words
table.csv`` when the epochs cover only some words: the model must read every word of the text
as context. Everything is checked before the model runs; the output folder is written under a
temporary name and renamed at the end. The work itself is
:func:`brainalign.probe.language_run.probe_language`.
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
        metavar="SPEC",
        help="word-locked MEG: armeni2022:FOLDER?subject=N..., meg-masc:FOLDER?subject=NN..., "
        "or a -epo.fif with stimulus_id per word; repeat for several",
    )
    parser.add_argument(
        "--words",
        help="CSV of every word in order (stimulus_id, word, [story], [pos|is_content]) for "
        "-epo.fif brains; default: the epochs' metadata",
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
        "--max-batch-tokens", type=int, help="padded tokens per forward pass at most"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bf16 autocast on CUDA), float32, bfloat16"
    )
    parser.add_argument(
        "--cache-dir", default=".brainalign_cache", help="feature cache folder ('' disables it)"
    )

    def run(ns: argparse.Namespace) -> None:
        import contextlib

        from brainalign.commands import preflight
        from brainalign.probe.language_run import probe_language

        out = Path(ns.out)
        preflight.check_new_output(out, overwrite=ns.overwrite)
        preflight.check_cache_dir(ns.cache_dir or None)
        config = config_from_arguments(ns)
        with contextlib.ExitStack() as stack:  # the output is reserved before any work
            folder = preflight.reserve_output(stack, out, overwrite=ns.overwrite)
            result = probe_language(config, progress=True)
            result.write_files(folder)
        for line in result.summary_lines():
            print(line)
        print(f"wrote {out}/scores.parquet, summary.json and figures/")

    return run


def config_from_arguments(ns: argparse.Namespace) -> Any:
    """The :class:`~brainalign.probe.language_run.LanguageProbeConfig` of parsed arguments."""
    from brainalign.probe.language_run import LanguageProbeConfig

    return LanguageProbeConfig(
        model=Path(ns.model),
        brain=tuple(ns.brain),
        words=Path(ns.words) if ns.words else None,
        context_words=ns.context,
        layers=ns.layers,
        pca=ns.pca or None,
        content_only=not ns.all_words,
        direction=ns.direction,
        n_folds=ns.n_folds,
        backend=ns.backend,
        batch_size=ns.batch_size,
        max_batch_tokens=ns.max_batch_tokens,
        device=ns.device,
        dtype=ns.dtype,
        cache_dir=Path(ns.cache_dir) if ns.cache_dir else None,
    )
