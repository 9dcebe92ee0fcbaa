"""Study C end to end: a language model folder and word-locked MEG -> a :class:`ProbeRun`.

``brainalign probe-language`` parses its arguments into a :class:`LanguageProbeConfig` and calls
:func:`probe_language`; a study calls the same function with its own config (one model, one
context length per call; a preloaded model can be passed to reuse it across contexts)::

    config = LanguageProbeConfig(
        model=Path("models/pythia-14m"),
        brain=("meg-masc:/data/meg-masc?subject=01&sessions=0,1&content=all",),
        context_words=50,
    )
    run = probe_language(config)
    run.write("out/lm")

Brain data: a named speech data set (``armeni2022:``, ``meg-masc:``; the word table comes from
its events) or an MNE ``-epo.fif`` with one epoch per word (``stimulus_id``; the words from its
metadata or from ``words``). Checks, in order, before anything heavy: the model folder
(config.json, no remote code), every brain spec (data set folders, subjects, sessions, events
with words, content-word table; epochs files present), the model weights; then the MEG is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from brainalign.probe.config import DEFAULT_LANGUAGE_DEPTHS

if TYPE_CHECKING:
    from brainalign.probe.language import LanguageModel
    from brainalign.probe.run import ProbeRun

__all__ = ["LanguageProbeConfig", "plan_language_inputs", "probe_language"]


@dataclass(frozen=True, kw_only=True)
class LanguageProbeConfig:
    """What ``brainalign probe-language`` runs.

    Parameters
    ----------
    model : Path
        A Hugging Face model folder on disk.
    brain : tuple of str
        Speech data set specs or word-locked ``-epo.fif`` files, one subject each.
    words : Path, optional
        CSV of every word in order (``stimulus_id, word, [story], [pos|is_content]``) for
        epochs files whose metadata lack the words; not for data set specs.
    context_words : int
        Preceding words of the same story read with each word (Study C: 50).
    layers : sequence of float, int or "all"
        Relative depths (Study C: 10%..90%), ``n`` evenly spaced depths, or every layer.
    pca : int, optional
        PCA components per layer (None keeps every dimension).
    content_only : bool
        Score content words only (every word is context either way).
    direction : {"decoding", "encoding"}
        Brain -> model (Study C) or model -> brain.
    n_folds : int
    backend : {"auto", "numpy", "torch", "torch_cuda"}
    batch_size : int
        Contexts per forward pass.
    max_batch_tokens : int, optional
        Padded tokens per forward pass at most (long contexts in smaller batches).
    device, dtype : str
        ``auto``: CUDA with bf16 autocast when available, else CPU float32.
    cache_dir : Path, optional
        Feature cache folder; None disables it.
    """

    model: Path
    brain: tuple[str, ...]
    words: Path | None = None
    context_words: int = 50
    layers: Sequence[float] | int | Literal["all"] = DEFAULT_LANGUAGE_DEPTHS
    pca: int | None = 50
    content_only: bool = True
    direction: Literal["decoding", "encoding"] = "decoding"
    n_folds: int = 5
    backend: str = "auto"
    batch_size: int = 32
    max_batch_tokens: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: Path | None = Path(".brainalign_cache")

    def __post_init__(self) -> None:
        object.__setattr__(self, "brain", tuple(str(spec) for spec in self.brain))
        if not self.brain:
            raise ValueError("give at least one brain data set (--brain)")
        if self.context_words < 0:
            raise ValueError(f"context_words must be >= 0, got {self.context_words}")
        if self.pca is not None and self.pca < 1:
            raise ValueError(f"pca must be >= 1 or None, got {self.pca}")
        if self.direction not in ("decoding", "encoding"):
            raise ValueError(f"direction must be decoding or encoding, got {self.direction!r}")


def plan_language_inputs(config: LanguageProbeConfig) -> list[Any]:
    """Per brain spec, a cheap, checked plan: a SpeechPlan or the epochs file's path."""
    from brainalign.probe.datasets.speech_meg import is_speech_spec, plan_word_epochs

    plans: list[Any] = []
    for spec in config.brain:
        if is_speech_spec(spec):
            if config.words is not None:
                raise ValueError(
                    f"--words is for epochs files; {spec.split(':')[0]}: takes its words from "
                    "its events (content words: content_table=words.csv in the spec)"
                )
            plan = plan_word_epochs(spec)
            if config.content_only and not plan.words.content_known:
                raise ValueError(
                    f"{spec}: which words are content words is unknown (the data set annotates "
                    "no part of speech); score every word (--all-words, or content=all in the "
                    "spec) or give is_content/pos per word (content_table=words.csv)"
                )
            plans.append(plan)
        else:
            path = Path(spec)
            if not path.is_file():
                raise FileNotFoundError(
                    f"word-locked MEG not found: {spec} (expected a -epo.fif file or a data set "
                    "spec armeni2022:... / meg-masc:...)"
                )
            plans.append(path)
    return plans


def _read(plans: list[Any], config: LanguageProbeConfig) -> list[tuple[Any, Any]]:
    """(BrainData, WordSequence) per plan; an epochs file's ids must name words of its table."""
    import pandas as pd

    from brainalign.probe.datasets.speech_meg import SpeechPlan, read_word_epochs
    from brainalign.probe.formats import load_meg_epochs_with_metadata
    from brainalign.probe.language import WordSequence
    from brainalign.utils.reading import read_file

    shared = None
    if config.words is not None:
        path = config.words
        table = read_file(
            lambda: pd.read_csv(path, dtype={"stimulus_id": str}), path, "a CSV table"
        )
        shared = WordSequence.from_table(table, str(path))
    pairs = []
    for plan in plans:
        if isinstance(plan, SpeechPlan):
            epochs = read_word_epochs(plan)
            pairs.append((epochs.brain.drop_bad_targets(), epochs.words))
            continue
        brain, metadata = load_meg_epochs_with_metadata(plan)
        words = shared or WordSequence.from_table(metadata, f"{plan} (epochs metadata)")
        unknown = words.unknown_ids(brain.stimulus_ids)
        if unknown:
            raise ValueError(
                f"{plan}: {len(unknown)} epochs name stimulus ids missing from the word table, "
                f"e.g. {unknown[:5]}"
            )
        pairs.append((brain.drop_bad_targets(), words))
    return pairs


def probe_language(
    config: LanguageProbeConfig,
    *,
    model: LanguageModel | None = None,
    progress: bool = True,
) -> ProbeRun:
    """Extract word features once per word table and score every brain data set.

    Parameters
    ----------
    config : LanguageProbeConfig
    model : LanguageModel, optional
        Already loaded from ``config.model`` (a study probing one model at several context
        lengths); default: loaded here, after the brain specs are checked.
    progress : bool

    Returns
    -------
    ProbeRun
        ``table`` (with a ``model`` column), ``summary`` (``model``, ``architecture``,
        ``layers``, ``context_words``, ``pca``, ``content_only`` and one entry per brain data
        set under ``results``).
    """
    import pandas as pd

    from brainalign.probe.cache import FeatureCache
    from brainalign.probe.features import select_layers
    from brainalign.probe.language import (
        DEFAULT_LANGUAGE_ALPHAS,
        check_language_model_folder,
        extract_word_features,
        load_language_model,
        score_language,
    )
    from brainalign.probe.pipeline import EncodingConfig
    from brainalign.probe.run import ProbeRun

    check_language_model_folder(config.model)  # before the (possibly large) MEG is read
    plans = plan_language_inputs(config)
    model = model if model is not None else load_language_model(config.model)
    layers = select_layers(model.depth, config.layers)
    depths = {layer: model.relative_depths[layer] for layer in layers}
    encoding = EncodingConfig(
        alphas=[float(alpha) for alpha in DEFAULT_LANGUAGE_ALPHAS],
        n_folds=config.n_folds,
        backend=config.backend,
        direction=config.direction,
    )
    cache = FeatureCache(config.cache_dir) if config.cache_dir is not None else None
    tables, summaries, extracted = [], [], {}
    for brain, words in _read(plans, config):
        key = words.content_hash
        if key not in extracted:  # one extraction per word table
            extracted[key] = extract_word_features(
                model,
                words,
                layers=layers,
                context_words=config.context_words,
                batch_size=config.batch_size,
                max_batch_tokens=config.max_batch_tokens,
                device=config.device,
                dtype=config.dtype,
                progress=progress,
                cache=cache,
            )
        scores = score_language(
            extracted[key],
            depths,
            words,
            brain,
            n_components=config.pca,
            content_only=config.content_only,
            config=encoding,
            progress=progress,
        )
        tables.append(scores.table)
        summaries.append({**scores.summary, "context_words": config.context_words})
    table = pd.concat(tables, ignore_index=True).assign(model=str(config.model))
    summary = {
        "model": str(config.model),
        "architecture": model.name,
        "layers": layers,
        "context_words": config.context_words,
        "pca": config.pca,
        "content_only": config.content_only,
        "results": summaries,
    }
    return ProbeRun(table=table, summary=summary, rois={})
