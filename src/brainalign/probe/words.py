"""The words of Study C: a word table in presentation order, its content words and contexts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["CONTENT_POS", "WordSequence"]

CONTENT_POS: tuple[str, ...] = ("NOUN", "VERB", "ADJ", "ADV")
"""Universal POS tags of content words (Study C keeps nouns, verbs, adjectives, adverbs)."""


@dataclass(frozen=True)
class WordSequence:
    """Words in presentation order, each with the stimulus id of its MEG epoch.

    Attributes
    ----------
    ids : tuple of str, (n_words,)
        Unique stimulus id per word token (the ``stimulus_id`` of its epochs).
    words : tuple of str, (n_words,)
    stories : tuple of str, (n_words,)
        Story (or run) of each word; context never crosses a story boundary.
    content : ndarray of bool, shape (n_words,)
        Whether the word is scored (content words); every word serves as context.
    content_known : bool
        False when nothing says which words are content words (a data set without
        part-of-speech annotation): ``content`` is then all True, and scoring content words
        only is refused (:func:`score_language`).
    source : str
        Where the words come from, for messages.
    """

    ids: tuple[str, ...]
    words: tuple[str, ...]
    stories: tuple[str, ...]
    content: np.ndarray
    content_known: bool = True
    source: str = ""

    @classmethod
    def from_table(
        cls, table: pd.DataFrame, source: str, *, content_pos: Sequence[str] = CONTENT_POS
    ) -> WordSequence:
        """Read a table with ``stimulus_id`` and ``word`` columns, rows in presentation order.

        Optional columns: ``story`` (else one story), and ``is_content`` (bool) or ``pos``
        (content = ``pos`` in ``content_pos``); without either, every word is a content word.

        Raises
        ------
        ValueError
            Missing columns, empty or repeated ids, empty words; ``source`` names the table.
        """
        missing = [column for column in ("stimulus_id", "word") if column not in table.columns]
        if missing:
            raise ValueError(
                f"{source}: the word table needs the column(s) {missing} (one row per word "
                f"token in presentation order); columns present: {list(table.columns)}"
            )
        if table.empty:
            raise ValueError(f"{source}: the word table has no rows")
        ids = table["stimulus_id"].astype(str)
        repeated = ids[ids.duplicated()].unique().tolist()
        if repeated:
            raise ValueError(
                f"{source}: stimulus_id must be unique per word token; repeated: {repeated[:5]}"
            )
        words = table["word"].fillna("").astype(str).str.strip()
        empty = ids[words == ""].tolist()
        if empty:
            raise ValueError(f"{source}: empty word for stimulus_id {empty[:5]}")
        stories = table["story"].astype(str) if "story" in table.columns else ["0"] * len(table)
        if "is_content" in table.columns:
            content = table["is_content"].astype(bool).to_numpy()
        elif "pos" in table.columns:
            allowed = {tag.upper() for tag in content_pos}
            content = table["pos"].astype(str).str.upper().isin(allowed).to_numpy()
        else:
            content = np.ones(len(table), dtype=bool)
        return cls(tuple(ids), tuple(words), tuple(stories), content, source=source)

    def __len__(self) -> int:
        return len(self.ids)

    def unknown_ids(self, ids: Sequence[str]) -> list[str]:
        """The ids (e.g. of MEG epochs) that name no word of this sequence, in order."""
        known = set(self.ids)
        return [stimulus_id for stimulus_id in ids if stimulus_id not in known]

    @property
    def content_hash(self) -> str:
        """sha256 (hex) of the ids, words and stories (what the features depend on)."""
        text = json.dumps([self.ids, self.words, self.stories], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def contexts(self, context_words: int) -> list[list[str]]:
        """Per word, the words the model reads: up to ``context_words`` before it, then it.

        Returns
        -------
        list of n_words lists of str, each ending with the word itself.
        """
        if context_words < 0:
            raise ValueError(f"context_words must be >= 0, got {context_words}")
        contexts, story_start = [], 0
        for index, story in enumerate(self.stories):
            if index and story != self.stories[index - 1]:
                story_start = index
            start = max(story_start, index - context_words)
            contexts.append(list(self.words[start : index + 1]))
        return contexts
