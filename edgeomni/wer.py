"""One text normaliser and word error rate, shared by tests and benchmarks so every system is scored alike."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, ASCII-fold, drop punctuation (keeping apostrophes inside words), collapse spaces."""
    text = text.replace("\u2019", "'")
    # Punctuation and symbols become spaces *before* ASCII folding, so "failed—no" stays two words.
    spaced = "".join(" " if c != "'" and unicodedata.category(c)[0] in "PS" else c for c in text)
    folded = unicodedata.normalize("NFKD", spaced).encode("ascii", "ignore").decode("ascii").lower()
    words = _NON_WORD.sub(" ", folded)
    return _SPACES.sub(" ", " ".join(w.strip("'") for w in words.split())).strip()


def words(text: str) -> list[str]:
    return normalize(text).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one hypothesis against one reference, after `normalize`."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return float(len(hyp) > 0)
    return edit_distance(ref, hyp) / len(ref)
