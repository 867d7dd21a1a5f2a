"""Streaming behaviour of the real pipeline (real models) under scripted delivery: stalls, cut-offs, slow sinks."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from media_factory import make_speech_turns, make_speech_wav

from edgeomni.bundle import verify_bundle
from edgeomni.config import RunConfig
from edgeomni.engines.bundle_engines import Engines
from edgeomni.events import Event
from edgeomni.frames import AUDIO_RATE, AudioFrame
from edgeomni.pipeline import Pipeline
from edgeomni.sinks import Sink, SinkSet
from edgeomni.sources import Source, open_source
from edgeomni.wer import wer

SENTENCE = "Please send the quarterly report to the finance team by Friday."


class ScriptedSource(Source):
    """Delivers pre-decoded audio frames at real-time pace, then (optionally) stalls before ending."""

    def __init__(self, frames: list[AudioFrame], stall_s: float = 0.0) -> None:
        super().__init__("scripted", "scripted", live=True, paced=True)
        self.has_audio, self.has_video = True, False
        self._frames, self._stall_s = frames, stall_s
        self.stall_began: float | None = None

    def describe(self) -> str:
        return "scripted audio"

    async def frames(self) -> AsyncIterator[AudioFrame]:  # type: ignore[override]
        origin = time.monotonic()
        self.started_monotonic, self.started_wall = origin, time.time()
        for frame in self._frames:
            delay = origin + frame.end - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frame.arrival = time.monotonic()
            yield frame
        self.stall_began = time.monotonic()
        await asyncio.sleep(self._stall_s)

    async def close(self) -> None:
        pass


class Collect(Sink):
    def __init__(self, name: str, delay_s: float = 0.0) -> None:
        self.name, self.delay_s, self.events = name, delay_s, []
        self.received_at: list[float] = []

    async def send(self, event: Event) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.events.append(event.to_dict())
        self.received_at.append(time.monotonic())


@pytest.fixture(scope="module")
def engines(default_bundle: Path) -> Engines:
    return Engines.load(verify_bundle(default_bundle), RunConfig())


@pytest.fixture(scope="module")
def sentence_frames(tmp_path_factory: pytest.TempPathFactory) -> list[AudioFrame]:
    wav = make_speech_wav(tmp_path_factory.mktemp("speech") / "s.wav", SENTENCE, speed=150)

    async def decode() -> list[AudioFrame]:
        source = open_source(str(wav), realtime=False)
        return [f async for f in source.frames() if isinstance(f, AudioFrame)]

    return asyncio.run(decode())


def run_pipelines(engines: Engines, sources: list[Source], sinks: list[Sink],
                  config: RunConfig | None = None) -> list[dict]:
    async def go() -> list[dict]:
        with ThreadPoolExecutor(2) as executor:
            sets = [SinkSet([sink]) for sink in sinks]
            pipelines = [Pipeline(src, engines, s, config or RunConfig(), executor, stream=f"s{i}")
                         for i, (src, s) in enumerate(zip(sources, sets, strict=True))]
            ends = await asyncio.gather(*(p.run() for p in pipelines))
            for s in sets:
                await s.close()
            return [end.to_dict() for end in ends]

    return asyncio.run(go())


def speech_end(frames: list[AudioFrame]) -> int:
    """Index of the last frame with audible speech (espeak pads its output with a little silence)."""
    loud = [i for i, f in enumerate(frames) if float(abs(f.samples).max()) > 0.02]
    return loud[-1]


def test_stream_that_stalls_mid_utterance_gets_its_final_during_the_stall(
        engines: Engines, sentence_frames: list[AudioFrame]) -> None:
    # Cut inside the last word, so the VAD never hears the silence that would normally end the utterance.
    cut = speech_end(sentence_frames) - 2
    source = ScriptedSource(sentence_frames[:cut], stall_s=4.0)
    sink = Collect("stall")
    [end] = run_pipelines(engines, [source], [sink])
    finals = [(e, t) for e, t in zip(sink.events, sink.received_at, strict=True) if e["type"] == "final"]
    assert len(finals) == 1 and end["counters"]["stalls"] == 1
    event, received = finals[0]
    # stall_ms (1 s) plus one decode (0.1-0.3 s here): 3 s leaves a slow CPU room and is still a second before the
    # stream ends, where a final that missed the stall would come.
    assert source.stall_began is not None and received - source.stall_began < 3.0
    assert wer(" ".join(SENTENCE.split()[:-1]), " ".join(event["text"].split()[:-1])) <= 0.2


def test_stream_that_ends_mid_utterance_still_gets_its_final(
        engines: Engines, sentence_frames: list[AudioFrame]) -> None:
    cut = int(len(sentence_frames) * 0.6)
    sink = Collect("cut")
    [end] = run_pipelines(engines, [ScriptedSource(sentence_frames[:cut])], [sink])
    finals = [e for e in sink.events if e["type"] == "final"]
    assert len(finals) == 1 and end["finals"] == 1
    assert finals[0]["text"].lower().startswith("please send")


def test_slow_consumer_on_one_stream_does_not_hold_up_another(
        engines: Engines, sentence_frames: list[AudioFrame]) -> None:
    slow, fast = Collect("slow", delay_s=0.4), Collect("fast")
    copies = [[AudioFrame(f.samples, f.pts, 0.0) for f in sentence_frames] for _ in range(2)]
    ends = run_pipelines(engines, [ScriptedSource(copies[0]), ScriptedSource(copies[1])], [slow, fast])
    fast_finals = [e for e in fast.events if e["type"] == "final"]
    slow_finals = [e for e in slow.events if e["type"] == "final"]
    assert fast_finals and slow_finals  # the slow sink still got its final (finals are never dropped)
    assert wer(SENTENCE, fast_finals[0]["text"]) <= 0.2
    assert ends[1]["latency_ms"]["final"]["p50"] < 1500  # produced on time, whatever the other sink does
    assert ends[0]["finals"] == len(slow_finals)  # every final reached the slow sink too


def frames_of(audio: np.ndarray, frame_s: float = 0.02) -> list[AudioFrame]:
    step = int(frame_s * AUDIO_RATE)
    return [AudioFrame(audio[i : i + step], i / AUDIO_RATE, 0.0) for i in range(0, len(audio), step)]


def test_final_is_decoded_during_the_endpoint_silence_and_a_resumed_speaker_voids_the_guess(
        engines: Engines, tmp_path: Path) -> None:
    first, second = "The museum is closed today.", "We open again on Monday."

    def spoken(text: str) -> np.ndarray:
        with wave.open(str(make_speech_wav(tmp_path / f"{len(text)}.wav", text, speed=150))) as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
        return audio[: int(np.flatnonzero(np.abs(audio) > 0.02)[-1]) + 1]

    # No partials: an idle worker starts each guess at once, however busy the machine is.
    run_config = RunConfig().override({"speech.partials": False})
    config = run_config.speech
    # Silent long enough for the whole pad to arrive (a guess starts) but short of min_silence_ms (no endpoint).
    assert config.pad_ms + 64 < config.min_silence_ms
    almost = np.zeros(int((config.pad_ms + 20) / 1000 * AUDIO_RATE), dtype=np.float32)
    audio = np.concatenate([spoken(first), almost, spoken(second), np.zeros(AUDIO_RATE, dtype=np.float32)])
    assert len(audio) / AUDIO_RATE - 1 < config.long_speech_s  # one utterance, ended by the normal silence rule
    sink = Collect("guess")
    [end] = run_pipelines(engines, [ScriptedSource(frames_of(audio))], [sink], run_config)
    finals = [e["text"] for e in sink.events if e["type"] == "final"]
    assert len(finals) == 1 and wer(f"{first} {second}", finals[0]) <= 0.25, finals
    assert end["counters"]["speculations_discarded"] >= 1  # the guess at the pause was not used
    assert end["counters"]["speculative_finals"] == 1, end["counters"]  # the real end was decoded while the silence ran


def _busy() -> None:
    while True:
        sum(i * i for i in range(10_000))


@pytest.mark.slow
def test_a_file_read_unpaced_gets_the_same_captions_on_an_idle_and_a_loaded_machine(
        engines: Engines, tmp_path: Path) -> None:
    """--no-realtime is for captioning files: the output must depend on the file, not on what else the machine
    runs. Partials are decoded one by one (never merged), no final is guessed early, no pause counts as a
    stall, so the same partials and finals come out with two busy processes on the 2 cores as without."""
    import multiprocessing

    # Turns heard confidently (mean log-prob -0.14 or better, far from the -0.8 noise cut), so exactly 4 finals on
    # any CPU.
    wav = make_speech_turns(tmp_path / "talk.wav", ["Thank you for joining us.", "Please send me the report.",
                                                   "We hired two engineers.", "The new office is open."])

    def captions() -> tuple[list[tuple], dict]:
        sink = Collect("unpaced")
        [end] = run_pipelines(engines, [open_source(str(wav), realtime=False)], [sink])
        return [(e["type"], e["text"], e["start"], e["end"], e.get("committed")) for e in sink.events
                if e["type"] in ("partial", "final")], end["counters"]

    idle, idle_counters = captions()
    busy = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(2)]
    for process in busy:
        process.start()
    try:
        loaded, loaded_counters = captions()
    finally:
        for process in busy:
            process.terminate()
    assert sum(kind == "final" for kind, *_ in idle) == 4 and sum(kind == "partial" for kind, *_ in idle) >= 4
    assert loaded == idle
    for counters in (idle_counters, loaded_counters):
        assert counters["merged_updates"] == counters["speculations"] == counters["stalls"] == 0, counters
        assert counters["interval_widened"] == 0, counters
