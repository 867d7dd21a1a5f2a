"""Score a Whisper ONNX pair on the bench speech set (word error rate) and time it on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from edgeomni.export.progress import track
from edgeomni.wer import edit_distance, words


class Transcriber(Protocol):
    def __call__(self, audio: np.ndarray) -> str: ...


def score(transcribe: Transcriber, items: list[dict[str, Any]], progress: Callable[[str], None] | None = None,
          label: str = "scoring") -> dict[str, Any]:
    """Corpus WER (total edits / total reference words) and per-clip WER and text."""

    edits = total = 0
    clips, busy, media = [], 0.0, 0.0
    for item in track(items, len(items), label, progress or (lambda _: None)):
        started = time.perf_counter()
        text = " ".join(transcribe(span) for span in item["spans"]).strip()
        busy += time.perf_counter() - started
        media += sum(len(s) for s in item["spans"]) / 16_000
        ref = words(item["reference"])
        errors = edit_distance(ref, words(text))
        edits, total = edits + errors, total + len(ref)
        clips.append({"name": item["name"], "wer": round(errors / max(1, len(ref)), 4), "text": text})
    return {"wer": round(edits / max(1, total), 4), "words": total, "clips": clips,
            "seconds_per_audio_second": round(busy / max(media, 1e-9), 4)}


def latency(call: Callable[[], Any], runs: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    return {"median_ms": round(float(np.median(times)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2),
            "runs": runs}
