"""speech.json (everything, raw per-clip numbers and events too) and speech.md (one table per metric)."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

from edgeomni.bench.metrics import EOS_DEFINITION, PARTIAL_DEFINITION, ratio
from edgeomni.datasets.speechset import SET_VERSION, SpeechSet

REPORT_VERSION = 1
OFFLINE = "moonshine-offline"


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}


def build_report(options: Any, sset: SpeechSet, summary: dict[str, Any], runs: dict[str, list[dict[str, Any]]],
                 raw: dict[str, list[dict[str, Any]]], streams: dict[str, Any] | None, *, budget_ms: float,
                 final_budget_ms: float) -> dict[str, Any]:
    streaming = [s for s in summary if s != OFFLINE]
    edge = summary["edgeomni"]
    ratios = {
        peer: {
            "partial_p50": ratio(edge["partial_latency_ms"].get("p50"), summary[peer]["partial_latency_ms"].get("p50")),
            "partial_p95": ratio(edge["partial_latency_ms"].get("p95"), summary[peer]["partial_latency_ms"].get("p95")),
            "eos_final_p50": ratio(edge["eos_final_ms"].get("p50"), summary[peer]["eos_final_ms"].get("p50")),
            "eos_final_p95": ratio(edge["eos_final_ms"].get("p95"), summary[peer]["eos_final_ms"].get("p95")),
            "cpu_s": ratio(edge["cpu_s"], summary[peer]["cpu_s"]),
            "rtf": ratio(edge["rtf"], summary[peer]["rtf"]),
            "wer": ratio(edge["wer"], summary[peer]["wer"]),
            "peak_rss_mb": ratio(edge["peak_rss_mb"], summary[peer]["peak_rss_mb"]),
        }
        for peer in streaming if peer != "edgeomni"
    }
    offline_wer = summary.get(OFFLINE, {}).get("wer")
    acceptance = None
    if offline_wer is not None and edge["wer"] is not None:
        gap = round((edge["wer"] - offline_wer) * 100, 2)
        acceptance = {"streaming_wer": edge["wer"], "offline_wer": offline_wer, "gap_points": gap,
                      "within_1_point": gap <= 1.0}
    return {
        "benchmark": "speech", "version": REPORT_VERSION,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": options.command, "machine": machine(),
        "options": {"realtime": options.realtime, "streams": options.streams or "auto", "peers": options.peers,
                    "runs": options.runs, "quick": options.quick, "bundle": str(options.bundle),
                    "set": str(sset.root), "config": str(options.config) if options.config else None},
        "set": {"root": str(sset.root), "version": SET_VERSION,
                "speech_s": round(sum(c.seconds for c in sset.clips if c.kind == "speech"), 1),
                "nonspeech_s": round(sum(c.seconds for c in sset.clips if c.kind == "nonspeech"), 1),
                "clips": [{"name": c.name, "kind": c.kind, "seconds": round(c.seconds, 2), "segments": len(c.segments),
                           **c.info} for c in sset.clips]},
        "definitions": {"partial_latency": PARTIAL_DEFINITION, "eos_final_latency": EOS_DEFINITION,
                        "rtf": "seconds spent computing (inside the system's calls) per second of audio",
                        "cpu_s": "time.process_time of the system's process over the streaming pass (all threads)",
                        "peak_rss_mb": "peak resident memory (VmHWM) of the system's own process "
                                       "(includes the harness's Python)",
                        "wer": "finals joined in emission order vs the reference, edgeomni.wer.normalize for all",
                        "budget": f"partial p95 <= {budget_ms:.0f} ms and end-of-speech -> final p95 "
                                  f"<= {final_budget_ms:.0f} ms"},
        "systems": {name: {"info": raw[name][0].get("info", {}), "summary": s} for name, s in summary.items()},
        "runs": runs, "ratios": ratios, "acceptance": acceptance, "streams": streams,
        "raw": {name: [{k: v for k, v in r.items() if k != "info"} for r in passes] for name, passes in raw.items()},
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows),
            ""]


def render_markdown(report: dict[str, Any]) -> str:
    systems = report["systems"]
    streaming = [s for s in systems if s != OFFLINE]
    peers = [s for s in streaming if s != "edgeomni"]
    m, o, st = report["machine"], report["options"], report["set"]
    lines = [f"## Speech captions: EdgeOmni vs peers ({report['date']})", "",
             f"Machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}. "
             f"Command: `{report['command']}`.",
             f"Set: {len(st['clips'])} clips, {st['speech_s']} s speech + {st['nonspeech_s']} s non-speech; "
             f"{'real-time paced' if o['realtime'] else 'NOT real-time (latencies meaningless)'}; "
             f"{o['runs']} run(s), medians shown; every system in its own process, one after another.", ""]
    s = {name: systems[name]["summary"] for name in systems}

    def lat(name: str, key: str, q: str) -> str:
        return _fmt(s[name][key].get(q))

    lines += ["### Accuracy", ""]
    rows = [[n, _pct(s[n]["wer"]), str(s[n]["edits"]), str(s[n]["ref_words"]), str(s[n]["nonspeech_words"]),
             str(s[n]["finals"])] for n in systems]
    lines += _table(["system", "WER (finals, pooled)", "edits", "ref words", "words on non-speech", "finals"], rows)
    if OFFLINE in systems:
        engine = report["systems"][OFFLINE]["info"].get("asr", "MoonshineAsr")
        lines += [f"{OFFLINE}: EdgeOmni's {engine} on whole clips (cut at <= 30 s in pauses), no VAD and no "
                  "confidence gate, so it also transcribes the non-speech clips; it is the accuracy reference for "
                  "the streaming finals, not a streaming system.", ""]
    acc = report.get("acceptance")
    if acc:
        lines += [f"Streaming finals {_pct(acc['streaming_wer'])} vs Moonshine offline on whole clips "
                  f"{_pct(acc['offline_wer'])}: {acc['gap_points']:+.2f} points "
                  f"({'within' if acc['within_1_point'] else 'NOT within'} 1 point).", ""]
    lines += ["### Partial-update latency (ms)", ""]
    rows = [[n, str(s[n]["partial_latency_ms"].get("n", 0)), lat(n, "partial_latency_ms", "p50"),
             lat(n, "partial_latency_ms", "p95"), lat(n, "partial_latency_ms", "p99"),
             lat(n, "partial_latency_ms", "max")] for n in streaming]
    lines += _table(["system", "partials", "p50", "p95", "p99", "max"], rows)
    lines += ["### End-of-speech → final latency (ms)", ""]
    rows = [[n, str(s[n]["eos_final_ms"].get("n", 0)), lat(n, "eos_final_ms", "p50"), lat(n, "eos_final_ms", "p95"),
             str(s[n]["merged_segments"]), lat(n, "eos_merged_ms", "p50"), str(s[n]["unmatched_finals"]),
             str(s[n]["missing_finals"])] for n in streaming]
    lines += _table(["system", "matched ends", "p50", "p95", "merged ends", "merged p50", "unmatched finals",
                     "missing"], rows)
    lines += ["### Compute and memory", ""]
    rows = [[n, _fmt(s[n]["rtf"], 3), _fmt(s[n]["cpu_s"]), _fmt(s[n]["cpu_per_media"], 3), _fmt(s[n]["load_s"], 2),
             _fmt(s[n]["peak_rss_mb"], 0), _fmt(s[n]["baseline_rss_mb"], 0), _fmt(s[n].get("lag_s_max"), 2),
             " → ".join(_fmt(v, 2) for v in s[n].get("loadavg_1min") or [])] for n in systems]
    lines += _table(["system", "RTF (compute/media)", "CPU s", "CPU s per media s", "model load s", "peak RSS MB",
                     "harness baseline MB", "max lag s", "machine load (1 min avg, start → end)"], rows)
    lines += ["max lag: the most a clip's pass outlasted the clip itself (wall - media); a system that keeps up "
              "ends within its last final's latency.", ""]
    if peers:
        lines += ["### EdgeOmni / peer ratios (< 1: EdgeOmni lower)", ""]
        keys = ["partial_p50", "partial_p95", "eos_final_p50", "eos_final_p95", "cpu_s", "rtf", "wer", "peak_rss_mb"]
        rows = [[p, *(_fmt(report["ratios"][p][k], 2) for k in keys)] for p in peers]
        lines += _table(["peer", *keys], rows)
    counters = s["edgeomni"]["counters"]
    if counters:
        lines += ["### EdgeOmni degradation counters (summed over clips)", ""]
        lines += _table(list(counters), [[_fmt(v, 2) for v in counters.values()]])
    lines += _streams_md(report.get("streams"))
    lines += ["### Per-clip WER (first run)", ""]
    clip_rows = []
    for clip in st["clips"]:
        cells = []
        for n in systems:
            c = s[n]["clips"].get(clip["name"], {})
            cells.append(_pct(c.get("wer")) if clip["kind"] == "speech" else f"{c.get('words_emitted', '—')} words")
        clip_rows.append([clip["name"], _fmt(clip["seconds"]), *cells])
    lines += _table(["clip", "s", *systems], clip_rows)
    lines += ["### Systems", ""]
    lines += [f"- **{n}**: {_describe(systems[n]['info'])}" for n in systems]
    lines += ["", "### Definitions", ""] + [f"- {k}: {v}" for k, v in report["definitions"].items()] + [""]
    return "\n".join(lines)


def _streams_md(streams: dict[str, Any] | None) -> list[str]:
    if not streams:
        return []
    lines = [f"### Concurrent streams (EdgeOmni; budget: partial p95 <= {streams['partial_budget_ms']:.0f} ms, "
             f"end-of-speech -> final p95 <= {streams['final_budget_ms']:.0f} ms)", ""]
    rows = [[str(r["streams"]), _fmt(r["partial_p95_ms"]), _fmt(r["partial_p99_ms"]), _fmt(r["eos_final_p95_ms"]),
             _fmt(r["rtf"], 3), _fmt(r["cpu_per_media"], 3), _fmt(r.get("lag_s_max"), 2), _pct(r["wer"]),
             str(r["counters"].get("merged_updates", "—")), str(r["counters"].get("interval_widened", "—")),
             _fmt(r["partial_ok"]), _fmt(r["holds"])] for r in streams["levels"]]
    lines += _table(["streams", "partial p95", "partial p99", "EOS→final p95", "RTF", "CPU/media", "max lag s", "WER",
                     "merged updates", "interval widened", "partial budget", "whole budget"], rows)
    lines += [f"Largest N within the whole budget: {streams['largest_within_budget']}; within the partial budget: "
              f"{streams['largest_within_partial_budget']}.", ""]
    return lines


def _describe(info: dict[str, Any]) -> str:
    if "speech" in info:
        sp = info["speech"]
        return (f"bundle {info.get('bundle')}; min_silence {sp.get('min_silence_ms')} ms, partial interval "
                f"{sp.get('partial_interval_ms')} ms, workers {info.get('engine', {}).get('workers')}, "
                f"threads/engine {info.get('engine', {}).get('threads_per_engine')}")
    return ", ".join(f"{k} {v}" for k, v in info.items())
