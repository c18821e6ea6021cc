"""The words a model saw in its training captions, saved with it as ``vocabulary.txt``.

A text-to-image model knows only the words it was trained on; the text encoder still gives every
other word a state, and the model then draws something, silently. ``DIR7Pipeline.unknown_words``
(and the demo) name a prompt's words that never occurred in a training caption. ``dir7.train``
collects the words of the captions it trains on and saves them with every checkpoint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

VOCABULARY_NAME = "vocabulary.txt"
# words: letters and digits, with inner hyphens or apostrophes ("five-pointed", "don't")
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``, in order."""
    return _WORD.findall(text.lower())


def unknown_words(prompt: str, vocabulary: Iterable[str]) -> list[str]:
    """The words of ``prompt`` not in ``vocabulary``, each once, in the order they appear."""
    known = vocabulary if isinstance(vocabulary, set | frozenset) else set(vocabulary)
    return list(dict.fromkeys(w for w in words(prompt) if w not in known))


def save_vocabulary(path: str | os.PathLike, vocabulary: Iterable[str]) -> None:
    Path(path).write_text("".join(f"{w}\n" for w in sorted(set(vocabulary))))


def load_vocabulary(path: str | os.PathLike) -> frozenset[str] | None:
    """The words in ``path`` (one per line), or None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())


__all__ = ["VOCABULARY_NAME", "load_vocabulary", "save_vocabulary", "unknown_words", "words"]
