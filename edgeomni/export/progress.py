"""Progress of an export: numbered, timed steps, and bars for the long loops inside them (calibration passes,
WER scoring, latency runs). Every recipe task and the default bundle report through these.

Steps print `[N] title ...` (or `[N/TOTAL] ...` where the count is known) when they start and the same line with
their seconds when they end (`FAILED` when they raised), and keep one record per step for the report.

On a terminal the bar redraws in place; in a log (CI, a pipe) it prints a line at most every ~10% or every
10 s, so a long step is never silent and never floods. Lines go through the same `progress` callable as the
step headers, so the recipe report's progress and a test's captured output see them too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
WIDTH = 24
LOG_EVERY_S = 10.0


class Steps:
    """Numbered, timed steps. `records`: [{step, seconds, ok}] in order; `wall_s`: seconds by the key a step
    was given (what a task's own tables cite)."""

    def __init__(self, progress: Callable[[str], None] = print, total: int | None = None) -> None:
        self.progress, self.total = progress, total
        self.records: list[dict[str, Any]] = []
        self.wall_s: dict[str, float] = {}

    @contextmanager
    def step(self, title: str, key: str | None = None) -> Iterator[None]:
        number = len(self.records) + 1
        label = f"[{number}/{self.total}] {title}" if self.total else f"[{number}] {title}"
        self.progress(f"{label} ...")
        started = time.perf_counter()
        entry: dict[str, Any] = {"step": title, "seconds": None, "ok": False}
        self.records.append(entry)
        try:
            yield
            entry["ok"] = True
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 2)
            if key is not None:
                self.wall_s[key] = entry["seconds"]
            self.progress(f"{label} ... {entry['seconds']:.1f} s{'' if entry['ok'] else ' FAILED'}")


class ProgressBar:
    def __init__(self, total: int, label: str, progress: Callable[[str], None] = print,
                 live: bool | None = None) -> None:
        self.total, self.label, self.progress = max(total, 0), label, progress
        self.live = sys.stdout.isatty() if live is None else live
        self.done = 0
        self._started = self._logged_at = time.perf_counter()
        self._logged_share = 0.0

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        now = time.perf_counter()
        share = self.done / self.total if self.total else 1.0
        if self.live and self.progress is print:
            sys.stdout.write("\r" + self._line(now))
            sys.stdout.flush()
            if self.done >= self.total:
                sys.stdout.write("\n")
        elif self.done >= self.total or share - self._logged_share >= 0.1 or now - self._logged_at >= LOG_EVERY_S:
            self.progress(self._line(now))
            self._logged_at, self._logged_share = now, share

    def _line(self, now: float) -> str:
        share = self.done / self.total if self.total else 1.0
        filled = round(share * WIDTH)
        elapsed = now - self._started
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        tail = f"{elapsed:.0f} s" if self.done >= self.total else f"{elapsed:.0f} s, ~{eta:.0f} s left"
        return f"    {self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} ({tail})"


def track(items: Iterable[T], total: int, label: str, progress: Callable[[str], None] = print) -> Iterator[T]:
    """`for x in track(xs, len(xs), "scoring", say)`: yields the items, advancing a bar after each."""
    bar = ProgressBar(total, label, progress)
    for item in items:
        yield item
        bar.advance()
