"""LocalAgreement-2 on token hypotheses: commit what two consecutive updates agree on.

Committed tokens are forced as the decoder prefix of every later update and of the final, so text the
viewer has read never changes. Commits end on a word boundary: the agreed span is trimmed back to the
last token that starts a word, so a half-agreed word ("fail" vs "failed") is never committed.
"""

from __future__ import annotations

from collections.abc import Callable


class LocalAgreement:
    def __init__(self, starts_word: Callable[[int], bool]) -> None:
        self._starts_word = starts_word
        self.committed: list[int] = []
        self._previous: list[int] | None = None

    def reset(self) -> None:
        self.committed = []
        self._previous = None

    def update(self, hypothesis: list[int], max_words: int | None = None) -> list[int]:
        """Feed the newest hypothesis (which starts with `committed`); return the newly committed tokens.

        `max_words` caps the committed total at what the audio heard so far can hold: two updates can agree
        on words the speaker has not said yet (the model guessing ahead), and those must not be committed.
        """
        if hypothesis[: len(self.committed)] != self.committed:
            raise ValueError("hypothesis does not extend the committed prefix (decode it with prefix=committed)")
        previous, self._previous = self._previous, hypothesis
        if previous is None:
            return []
        agreed = len(self.committed)
        limit = min(len(previous), len(hypothesis))
        while agreed < limit and previous[agreed] == hypothesis[agreed]:
            agreed += 1
        # Only whole words: the agreed span must be followed, in the newest hypothesis, by a word start.
        while agreed > len(self.committed) and not (
            agreed < len(hypothesis) and self._starts_word(hypothesis[agreed])
        ):
            agreed -= 1
        if max_words is not None:
            word_starts = [i for i, t in enumerate(hypothesis[:agreed]) if self._starts_word(t)]
            if len(word_starts) > max_words:
                agreed = max(len(self.committed), word_starts[max_words])
        fresh = hypothesis[len(self.committed) : agreed]
        self.committed = hypothesis[:agreed]
        return fresh
