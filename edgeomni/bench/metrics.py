"""Scoring one system's pass over the speech set: WER, latencies, end-of-speech matching, aggregation.

Pure functions over the raw events a pass recorded (see `systems.py`), so every system is scored by the
same code with the same normaliser (`edgeomni.wer`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from edgeomni.datasets.speechset import Clip
from edgeomni.telemetry import percentiles
from edgeomni.wer import edit_distance, words

EOS_DEFINITION = (
    "End of speech is system-independent: speech segments are found once per clip on its clean audio by "
    "frame energy (10 ms frames above max(noise floor + 10 dB, loudest - 30 dB), keeping only runs with a voiced "
    "core within 10 dB of the loudest frames, pauses under 300 ms bridged). Each final, "
    "in emission order, is matched to the latest segment end that precedes its emission and has not been "
    "matched yet; end-of-speech -> final latency is final emission minus that segment end (media clock). "
    "Earlier unmatched segment ends before the same final were finalised together with later speech: they are "
    "counted as 'merged' (their wait is reported separately); finals with no segment end before them are "
    "'unmatched'; segment ends never followed by a final are 'missing'."
)
PARTIAL_DEFINITION = ("Partial latency: emission time minus the arrival time of the last audio chunk the update "
                      "had seen when its computation started (arrival = when the chunk's last sample was due).")


@dataclass
class EosMatch:
    latencies_ms: list[float] = field(default_factory=list)
    merged_ms: list[float] = field(default_factory=list)
    unmatched_finals: int = 0
    missing: int = 0


def match_endpoints(segment_ends: list[float], final_times: list[float]) -> EosMatch:
    """Match finals (emission, media-clock seconds) to segment ends (media seconds); see EOS_DEFINITION."""
    ends, match, next_end = sorted(segment_ends), EosMatch(), 0
    for emitted in sorted(final_times):
        j = next_end
        while j < len(ends) and ends[j] <= emitted:
            j += 1
        if j == next_end:
            match.unmatched_finals += 1
            continue
        match.latencies_ms.append(round((emitted - ends[j - 1]) * 1000.0, 1))
        match.merged_ms.extend(round((emitted - e) * 1000.0, 1) for e in ends[next_end : j - 1])
        next_end = j
    match.missing = len(ends) - next_end
    return match


def score_stream(events: list[dict[str, Any]], clip: Clip) -> dict[str, Any]:
    """One stream of one clip: its transcript (finals in emission order), edits, latencies, EOS matching."""
    finals = sorted((e for e in events if e["type"] == "final"), key=lambda e: e["emitted"])
    partials = [e for e in events if e["type"] == "partial"]
    hypothesis = " ".join(e["text"] for e in finals).strip()
    ref, hyp = words(clip.reference), words(hypothesis)
    match = match_endpoints([end for _, end in clip.segments], [e["emitted"] for e in finals])
    return {
        "hypothesis": hypothesis, "ref_words": len(ref), "hyp_words": len(hyp),
        "edits": edit_distance(ref, hyp) if ref else len(hyp),
        "partials": len(partials), "finals": len(finals),
        "partial_latency_ms": [e["latency_ms"] for e in partials],
        "eos_final_ms": match.latencies_ms, "eos_merged_ms": match.merged_ms,
        "unmatched_finals": match.unmatched_finals, "missing_finals": match.missing,
    }


def summarise_pass(raw: dict[str, Any], clips: dict[str, Clip]) -> dict[str, Any]:
    """Everything the report shows for one system in one run, plus the per-clip numbers."""
    per_clip: dict[str, Any] = {}
    partial, eos, merged = [], [], []
    edits = ref_words = nonspeech_words = unmatched = missing = n_partials = n_finals = 0
    media = 0.0
    counters: dict[str, float] = {}
    for entry in raw["files"]:
        clip = clips[entry["name"]]
        scored = [score_stream(stream["events"], clip) for stream in entry["streams"]]
        for s in scored:
            partial += s["partial_latency_ms"]
            eos += s["eos_final_ms"]
            merged += s["eos_merged_ms"]
            unmatched += s["unmatched_finals"]
            missing += s["missing_finals"]
            n_partials += s["partials"]
            n_finals += s["finals"]
            if clip.kind == "speech":
                edits, ref_words = edits + s["edits"], ref_words + s["ref_words"]
            else:
                nonspeech_words += s["hyp_words"]
        for stream in entry["streams"]:
            for key, value in (stream.get("end") or {}).get("counters", {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool) and key != "partial_interval_ms":
                    counters[key] = round(counters.get(key, 0) + value, 3)
        media += entry["media_s"] * len(entry["streams"])
        first = scored[0]
        per_clip[clip.name] = {
            "kind": clip.kind, "media_s": entry["media_s"], "cpu_s": entry["cpu_s"],
            "wer": round(first["edits"] / first["ref_words"], 4) if first["ref_words"] else None,
            "words_emitted": first["hyp_words"], "hypothesis": first["hypothesis"],
            "finals": first["finals"], "partials": first["partials"],
            "partial_p95_ms": percentiles(first["partial_latency_ms"]).get("p95"),
            "eos_final_ms": first["eos_final_ms"],
        }
    busy = sum(entry["busy_s"] for entry in raw["files"])
    cpu = sum(entry["cpu_s"] for entry in raw["files"])
    # Wall time past the clip's own length: a paced pass that keeps up ends within its last final's latency.
    lag = max((entry["wall_s"] - entry["media_s"] for entry in raw["files"] if entry["wall_s"]), default=None)
    return {
        "wer": round(edits / ref_words, 4) if ref_words else None, "ref_words": ref_words, "edits": edits,
        "nonspeech_words": nonspeech_words,
        "partial_latency_ms": percentiles(partial), "eos_final_ms": percentiles(eos),
        "eos_merged_ms": percentiles(merged), "merged_segments": len(merged),
        "unmatched_finals": unmatched, "missing_finals": missing, "partials": n_partials, "finals": n_finals,
        "media_s": round(media, 2), "rtf": round(busy / media, 4) if media else None,
        "lag_s_max": round(lag, 2) if lag is not None else None,
        "cpu_s": round(cpu, 2), "cpu_per_media": round(cpu / media, 4) if media else None,
        "load_s": raw.get("load_s"), "peak_rss_mb": raw.get("peak_rss_mb"),
        "baseline_rss_mb": raw.get("baseline_rss_mb"), "loadavg_1min": raw.get("loadavg_1min"),
        "counters": counters, "clips": per_clip,
    }


def median_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Metric-by-metric medians over runs (per-clip detail comes from the first run)."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if key == "clips":
            out[key] = value
        elif isinstance(value, dict):
            out[key] = median_summary([r[key] for r in runs])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
            out[key] = round(statistics.median(values), 4) if values else None
        else:
            out[key] = value
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either is missing or b is zero (a ratio against nothing means nothing)."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)
