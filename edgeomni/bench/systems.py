"""One system's pass over the speech set, in a process of its own (`python -m edgeomni.bench.systems SPEC.json`).

A fresh process per pass isolates memory (peak RSS is this process's ru_maxrss) and makes CPU time
attributable (time.process_time counts every thread of this process and nothing else). The pass writes its
raw events to the JSON file named in the spec; scoring happens in the parent (`metrics.py`).

Systems: "edgeomni" (Pipeline, N concurrent streams sharing one Engines and one executor), a peer name
(fed by the pacer below), and "moonshine-offline" (EdgeOmni's MoonshineAsr on whole clips).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.bench.peers import Chunk, make_peer
from edgeomni.bundle import verify_bundle
from edgeomni.config import RunConfig
from edgeomni.datasets.audio import OFFLINE_LIMIT_S, decode, offline_spans
from edgeomni.datasets.speechset import Clip, SpeechSet, load_speech_set
from edgeomni.engines.asr_families import open_asr
from edgeomni.errors import EdgeOmniError
from edgeomni.events import Event, FinalEvent, PartialEvent
from edgeomni.frames import AUDIO_RATE
from edgeomni.runtime import Runtime
from edgeomni.sinks import Sink
from edgeomni.sources import open_source

CHUNK = 512  # 32 ms: what a microphone callback typically delivers, and EdgeOmni's VAD frame


def _rss_mb() -> float:
    """Peak resident memory of this process so far. Linux carries ru_maxrss across exec, so a pass started from
    a big parent (pytest) would report the parent's peak; VmHWM belongs to this process image alone."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # Linux: kilobytes


def _say(spec: dict[str, Any], i: int, n: int, clip: Clip, started: float) -> None:
    label = spec["system"] + (f" x{spec['streams']}" if spec.get("streams", 1) > 1 else "")
    print(f"  {label:<20} clip {i}/{n} {clip.name} ({clip.seconds:.1f} s)  elapsed {time.monotonic() - started:.0f} s",
          file=sys.stderr, flush=True)


# -- peers: a shared pacer --------------------------------------------------------------------------------
def pace_peer(peer: Any, audio: np.ndarray, realtime: bool) -> tuple[list[dict[str, Any]], float]:
    """Feed `audio` to `peer` in 32 ms chunks; return its events and the seconds it spent computing.

    A pacer thread delivers each chunk when its last sample is due (arrival = time.monotonic() then) into a
    queue; this thread hands the peer everything delivered since its last call. A peer that falls behind
    therefore sees later arrivals and its backlog shows up in its latency, as it would with a microphone.
    """
    events: list[dict[str, Any]] = []
    inbox: queue.Queue[Chunk | None] = queue.Queue()
    origin = time.monotonic() + 0.05  # media time 0 on the monotonic clock

    def emit(kind: str, text: str, seen: float) -> None:
        now = time.monotonic()
        events.append({"type": kind, "text": text, "emitted": round(now - origin, 3),
                       "latency_ms": round((now - seen) * 1000.0, 1)})

    def pacer() -> None:
        for start in range(0, len(audio), CHUNK):
            samples = audio[start : start + CHUNK]
            if realtime:
                delay = origin + (start + len(samples)) / AUDIO_RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            inbox.put(Chunk(samples, start / AUDIO_RATE, time.monotonic()))
        inbox.put(None)

    peer.emit = emit
    peer.begin()
    thread = threading.Thread(target=pacer, name="bench-pacer", daemon=True)
    thread.start()
    busy, last_arrival, done = 0.0, origin, False
    while not done:
        batch = [inbox.get()]
        while not inbox.empty():
            batch.append(inbox.get_nowait())
        done = batch[-1] is None
        chunks = [c for c in batch if c is not None]
        started = time.perf_counter()
        if chunks:
            last_arrival = chunks[-1].arrival
            peer.feed(chunks)
        if done:
            peer.end(last_arrival)
        busy += time.perf_counter() - started
    thread.join()
    return events, busy


def run_peer(spec: dict[str, Any], sset: SpeechSet) -> dict[str, Any]:
    peer = make_peer(spec["system"])
    loaded = time.perf_counter()
    info = peer.load()
    load_s = time.perf_counter() - loaded
    files, started = [], time.monotonic()
    for i, clip in enumerate(sset.clips, 1):
        _say(spec, i, len(sset.clips), clip, started)
        audio = asyncio.run(decode(sset.wav(clip)))
        cpu, wall = time.process_time(), time.monotonic()
        events, busy = pace_peer(peer, audio, spec["realtime"])
        files.append({"name": clip.name, "media_s": round(len(audio) / AUDIO_RATE, 3), "busy_s": round(busy, 4),
                      "cpu_s": round(time.process_time() - cpu, 4), "wall_s": round(time.monotonic() - wall, 3),
                      "streams": [{"events": events}]})
    return {"info": info, "load_s": round(load_s, 3), "files": files}


# -- EdgeOmni ---------------------------------------------------------------------------------------------
def run_edgeomni(spec: dict[str, Any], sset: SpeechSet) -> dict[str, Any]:
    # Audio-only clips: do not load (or count the memory of) the visual models.
    config = RunConfig.load(Path(spec["config"]) if spec.get("config") else None).override({"visual.enabled": False})
    loaded = time.perf_counter()
    runtime = Runtime.open(Path(spec["bundle"]), config)
    load_s = time.perf_counter() - loaded
    files, started = [], time.monotonic()
    with runtime:
        for i, clip in enumerate(sset.clips, 1):
            _say(spec, i, len(sset.clips), clip, started)
            cpu, wall = time.process_time(), time.monotonic()
            streams = asyncio.run(_edgeomni_clip(sset.wav(clip), runtime, spec))
            ends = [s["end"] for s in streams]
            busy = sum(e["counters"].get("asr_seconds", 0.0) for e in ends)
            files.append({"name": clip.name, "media_s": ends[0]["media_seconds"], "busy_s": round(busy, 4),
                          "cpu_s": round(time.process_time() - cpu, 4), "wall_s": round(time.monotonic() - wall, 3),
                          "streams": streams})
    return {"info": {"bundle": spec["bundle"], "speech": vars(config.speech), "engine": vars(config.engine)},
            "load_s": round(load_s, 3), "files": files}


class _SpeechCollector(Sink):
    name = "bench"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def send(self, event: Event) -> None:
        if isinstance(event, PartialEvent | FinalEvent):
            self.events.append({"type": event.type, "text": event.text, "emitted": event.emitted,
                                "latency_ms": event.latency_ms, "start": event.start, "end": event.end})


async def _edgeomni_clip(path: Path, runtime: Runtime, spec: dict[str, Any]) -> list[dict[str, Any]]:
    n = int(spec.get("streams", 1))
    collectors = [_SpeechCollector() for _ in range(n)]
    pipelines = [runtime.stream(open_source(str(path), realtime=spec["realtime"], require_audio=True), [collector],
                                stream=f"s{k}") for k, collector in enumerate(collectors)]
    try:
        ends = await asyncio.gather(*(p.run() for p in pipelines))  # started together, one loop
    finally:
        for pipeline in pipelines:
            await pipeline.sinks.close()
    for end in ends:
        if end.error:
            raise EdgeOmniError(f"{path.name}: EdgeOmni stream failed: {end.error}")
    return [{"events": c.events, "end": e.to_dict()} for c, e in zip(collectors, ends, strict=True)]


# -- Moonshine offline on whole clips ---------------------------------------------------------------------
def run_offline(spec: dict[str, Any], sset: SpeechSet) -> dict[str, Any]:
    loaded = time.perf_counter()
    # Whichever ASR family the bundle ships (the pass keeps its name; its info names the ASR).
    asr = open_asr(verify_bundle(Path(spec["bundle"])))
    load_s = time.perf_counter() - loaded
    files, started = [], time.monotonic()
    for i, clip in enumerate(sset.clips, 1):
        _say(spec, i, len(sset.clips), clip, started)
        audio = asyncio.run(decode(sset.wav(clip)))
        cpu, busy, texts = time.process_time(), 0.0, []
        for a, b in offline_spans(len(audio) / AUDIO_RATE, clip.segments):
            t = asr.transcribe(audio[int(a * AUDIO_RATE) : int(b * AUDIO_RATE)])
            busy += t.encode_s + t.decode_s
            texts.append(t.text)
        event = {"type": "final", "text": " ".join(texts).strip(), "emitted": 0.0, "latency_ms": 0.0}
        files.append({"name": clip.name, "media_s": round(len(audio) / AUDIO_RATE, 3), "busy_s": round(busy, 4),
                      "cpu_s": round(time.process_time() - cpu, 4), "wall_s": 0.0,
                      "streams": [{"events": [event] if event["text"] else []}]})
    return {"info": {"bundle": spec["bundle"], "asr": type(asr).__name__,
                     "chunking": f"<= {OFFLINE_LIMIT_S:.0f} s, cut in pauses"},
            "load_s": round(load_s, 3), "files": files}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    sset = load_speech_set(Path(spec["set"]))
    sset = sset.select(spec["clips"]) if spec.get("clips") else sset
    baseline, load_before = _rss_mb(), os.getloadavg()[0]
    runner = {"edgeomni": run_edgeomni, "moonshine-offline": run_offline}.get(spec["system"], run_peer)
    try:
        result = runner(spec, sset)
    except EdgeOmniError as exc:
        print(f"edgeomni bench: {spec['system']}: {exc}", file=sys.stderr)
        Path(spec["out"]).write_text(json.dumps({"error": str(exc)}))
        return 2
    result.update(system=spec["system"], streams=spec.get("streams", 1), realtime=spec["realtime"],
                  baseline_rss_mb=baseline, peak_rss_mb=_rss_mb(),
                  loadavg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])  # a busy machine shows here
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
