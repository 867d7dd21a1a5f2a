import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from event_records import event
from test_streaming import Collect, ScriptedSource, frames_of

from edgeomni.bundle import verify_bundle
from edgeomni.config import RunConfig
from edgeomni.engines.bundle_engines import Engines
from edgeomni.errors import SinkError
from edgeomni.events import EndEvent, Event
from edgeomni.pipeline import Pipeline
from edgeomni.sinks import Sink, SinkSet, open_sink

FINAL = event({"type": "final", "stream": "main", "text": "fail better", "start": 61.5, "end": 3725.25,
               "emitted": 1.0, "latency_ms": 120.0})


def run(coro):
    return asyncio.run(coro)


def test_jsonl_sink_writes_one_flushed_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"

    async def go() -> None:
        sink = open_sink(f"jsonl:{path}")
        await sink.send(event({"type": "start", "wall": 1.0, "source": "x"}))
        assert json.loads(path.read_text().splitlines()[0])["type"] == "start"  # flushed before close
        await sink.send(FINAL)
        await sink.close()

    run(go())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["type"] for e in lines] == ["start", "final"]


@pytest.mark.parametrize(("fmt", "stamp"), [("vtt", "00:01:01.500 --> 01:02:05.250"),
                                            ("srt", "00:01:01,500 --> 01:02:05,250")])
def test_subtitle_sinks_write_cues_for_finals_and_screen_notes(tmp_path: Path, fmt: str, stamp: str) -> None:
    path = tmp_path / f"out.{fmt}"

    async def go() -> None:
        sink = open_sink(f"{fmt}:{path}")
        await sink.send(event({"type": "partial", "text": "fail", "start": 0.0, "end": 1.0}))
        await sink.send(FINAL)
        await sink.send(event({"type": "visual", "text": "on screen: tabby", "start": 2.0, "end": 2.1}))
        await sink.close()

    run(go())
    text = path.read_text()
    assert stamp in text and "fail better" in text and "[screen] on screen: tabby" in text
    assert text.count("-->") == 2  # the partial is not a cue
    assert text.startswith("WEBVTT") == (fmt == "vtt")


@pytest.mark.parametrize(("spec", "needle"), [("nope", "unknown sink 'nope'"), ("jsonl", "jsonl needs a path"),
                                              ("vtt:/no/such/dir/x.vtt", "directory /no/such/dir does not exist")])
def test_bad_sink_specs_are_named(spec: str, needle: str) -> None:
    with pytest.raises(SinkError) as err:
        open_sink(spec)
    assert needle in str(err.value)


class _Slow(Sink):
    name = "slow"

    def __init__(self) -> None:
        self.got: list[Event] = []

    async def send(self, event: Event) -> None:
        await asyncio.sleep(0.01)
        self.got.append(event)


class _Broken(Sink):
    name = "broken"

    async def send(self, event: Event) -> None:
        raise OSError("disk full")


class _Fast(Sink):
    name = "fast"

    def __init__(self) -> None:
        self.got: list[Event] = []

    async def send(self, event: Event) -> None:
        self.got.append(event)


def test_slow_or_broken_sinks_do_not_hold_up_the_others_and_finals_are_never_dropped() -> None:
    slow, fast = _Slow(), _Fast()

    async def go() -> SinkSet:
        sinks = SinkSet([slow, _Broken(), fast], depth=4)
        for i in range(40):
            await sinks.publish(event({"type": "partial", "text": str(i)}))
            await asyncio.sleep(0)  # a real producer yields between events (it awaits frames)
        await sinks.publish(FINAL)
        await sinks.close()
        return sinks

    sinks = run(go())
    assert len(fast.got) == 41  # the fast sink saw everything
    assert slow.got[-1] == FINAL and sinks.dropped["slow"] > 0  # slow one lost only partials, counted
    assert "disk full" in sinks.failures["broken"]


class _Flaky(Sink):
    """Fails `outage` sends in a row (a full disk), then works again."""

    name = "flaky"

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.got: list[Event] = []

    async def send(self, event: Event) -> None:
        if self.outage:
            self.outage -= 1
            raise OSError("No space left on device")
        self.got.append(event)


FAST_RETRY = {"retry_s": (0.001, 0.004), "max_failures": 5}


def test_a_sink_that_fails_for_a_while_is_retried_and_gets_every_event(caplog: pytest.LogCaptureFixture) -> None:
    flaky = _Flaky(outage=3)
    finals = [event({**FINAL.to_dict(), "text": f"final {i}"}) for i in range(4)]

    async def go() -> SinkSet:
        sinks = SinkSet([flaky], **FAST_RETRY)
        for final in finals:
            await sinks.publish(final)
        await sinks.close()
        return sinks

    with caplog.at_level(logging.WARNING, logger="edgeomni.sinks"):
        sinks = run(go())
    assert flaky.got == finals, "the sink came back once the disk had room, and missed nothing"
    assert sinks.failure_report() == {"flaky": {"failures": 3, "lost": 0, "gave_up": False,
                                                "last_error": "OSError: No space left on device"}}
    assert "sink flaky failed" in caplog.text and "works again" in caplog.text


def test_a_sink_that_keeps_failing_is_given_up_after_n_failures_in_a_row_and_said_so(
        caplog: pytest.LogCaptureFixture) -> None:
    fast = _Fast()

    async def go() -> SinkSet:
        sinks = SinkSet([_Broken(), fast], depth=4, **FAST_RETRY)
        for i in range(20):
            await sinks.publish(event({**FINAL.to_dict(), "text": f"final {i}"}))
        await sinks.close()
        return sinks

    with caplog.at_level(logging.WARNING, logger="edgeomni.sinks"):
        sinks = run(go())
    assert len(fast.got) == 20
    report = sinks.failure_report()["broken"]
    assert report["failures"] == 5 and report["gave_up"] and report["lost"] == 20
    assert "5 failures in a row" in caplog.text


@pytest.fixture(scope="module")
def engines(default_bundle: Path) -> Engines:
    return Engines.load(verify_bundle(default_bundle), RunConfig())


def test_the_end_record_names_the_sinks_that_failed(engines: Engines) -> None:
    good = Collect("good")

    async def go() -> EndEvent:
        with ThreadPoolExecutor(2) as executor:
            sinks = SinkSet([good, _Broken()], **FAST_RETRY)
            source = ScriptedSource(frames_of(np.zeros(16000, np.float32)))
            end = await Pipeline(source, engines, sinks, RunConfig(), executor).run()
            await sinks.close()
            return end

    record = run(go()).to_dict()
    assert list(record)[-1] == "sink_failures"  # a key added at the end: the JSONL contract holds
    broken = record["sink_failures"]["broken"]
    assert broken["gave_up"] and "disk full" in broken["last_error"]
    assert good.events[-1]["sink_failures"] == record["sink_failures"] and "good" not in record["sink_failures"]


def test_terminal_partial_line_fits_one_line_and_dims_only_tentative_words() -> None:
    from edgeomni.sinks.terminal import _partial_line

    line = _partial_line(event({"type": "partial", "text": "x", "committed": "It was the best of times, it was",
                                "tentative": "the worst"}), 30)
    visible = line.replace("\x1b[2m", "").replace("\x1b[0m", "")
    assert len(visible) <= 30 and visible.endswith("the worst") and "…" in visible
    assert line.index("\x1b[2m") < line.index("the worst")  # tentative words are the dimmed part
    assert "was" in line[: line.index("\x1b[2m")]  # committed words are plain
