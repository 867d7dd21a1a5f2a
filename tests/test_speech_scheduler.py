"""The speech head's scheduling, without models: a scripted ASR and VAD (tests/scripted_asr.py) stand in for the
real ones, so what is tested is the head itself — partials coalescing behind a busy decoder, the final decoded
during the endpoint silence and kept or dropped, an engine switch between utterances — in well under a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from scripted_asr import ScriptedAsr, ScriptedVad, Word, frames_of, script_audio

from edgeomni.captions import HeadContext, SpeechCaptioner
from edgeomni.config import RunConfig
from edgeomni.events import Event, FinalEvent, MediaClock, PartialEvent

# No level rule (the scripted audio's level says nothing) and no replayed context (each utterance on its own).
CONFIG = RunConfig().override({"speech.silence_db": 0.0, "speech.context_s": 0.0, "speech.min_speech_ms": 100})


class InlineExecutor(Executor):
    """Runs each decode at once in the loop's thread: the worker's timing is then a matter of loop turns only."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting coroutine, as a thread pool would
            future.set_exception(exc)
        return future


async def caption(audio: np.ndarray, asr: ScriptedAsr, *, realtime: bool = True,
                  executor: Executor | None = None,
                  during: Callable[[SpeechCaptioner, float], None] | None = None) -> tuple[list[Event], dict]:
    """Feed `audio` to one speech head frame by frame, letting its worker run between frames; `during(head, t)`
    is called before each frame at media time t."""
    events: list[Event] = []

    async def publish(event: Event) -> None:
        events.append(event)

    context = HeadContext("main", CONFIG, executor or InlineExecutor(), publish, MediaClock(), realtime)
    head = SpeechCaptioner(context, asr, ScriptedVad())  # type: ignore[arg-type]
    for frame in frames_of(audio):
        if during is not None:
            during(head, frame.pts)
        frame.arrival = time.monotonic()
        await head.push(frame)
        for _ in range(4):  # a few loop turns: the worker takes what the frame made due, as it would in real time
            await asyncio.sleep(0)
    await head.finish(time.monotonic())
    return events, head.counters()


def finals(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, FinalEvent)]


def test_the_final_decoded_during_the_endpoint_silence_is_used_when_the_silence_holds() -> None:
    audio, words = script_audio([("", 0.3), ("please send the report", 1.2), ("", 1.0)])
    asr = ScriptedAsr(words)
    events, counters = asyncio.run(caption(audio, asr))
    assert finals(events) == ["Please send the report"]
    assert counters["speculations"] == 1 and counters["speculative_finals"] == 1, counters
    assert counters["speculations_discarded"] == 0
    # The guess was decoded before the endpoint, from the speech and the pad that had arrived: its call is the last.
    assert asr.calls[-1][1] < 0.3 + 1.2 + CONFIG.speech.min_silence_ms / 1000, asr.calls


def test_a_speaker_resuming_after_a_short_pause_voids_the_early_final_and_no_word_is_lost() -> None:
    # The pause is long enough for a guess to start, too short for an endpoint.
    pause = (CONFIG.speech.pad_ms + 70) / 1000
    assert pause < CONFIG.speech.min_silence_ms / 1000
    audio, words = script_audio([("", 0.3), ("the museum is closed", 1.2), ("", pause),
                                 ("we open on monday", 1.2), ("", 1.0)])
    events, counters = asyncio.run(caption(audio, ScriptedAsr(words)))
    assert finals(events) == ["The museum is closed we open on monday"]
    assert counters["speculations_discarded"] >= 1, counters  # the guess at the pause was not shown
    assert counters["speculative_finals"] == 1, counters  # the guess at the real end was


def test_every_utterance_after_a_pause_gets_its_own_final_even_a_single_word() -> None:
    audio, words = script_audio([("", 0.3), ("front", 0.45), ("", 0.45), ("left", 0.45), ("", 1.0)])
    events, _ = asyncio.run(caption(audio, ScriptedAsr(words)))
    assert finals(events) == ["Front", "Left"]


def test_partials_coalesce_behind_a_busy_decoder_and_the_final_still_has_every_word() -> None:
    audio, words = script_audio([("", 0.3), ("one two three four five six seven eight", 3.0), ("", 1.0)])
    asr = ScriptedAsr(words)
    asr.gate.clear()  # the first partial's decode hangs until 2 s of speech have been pushed

    def release_at_two_seconds(_head: SpeechCaptioner, t: float) -> None:
        if t >= 2.3:
            asr.gate.set()

    async def run() -> tuple[list[Event], dict]:
        with ThreadPoolExecutor(1) as pool:
            return await caption(audio, asr, executor=pool, during=release_at_two_seconds)

    events, counters = asyncio.run(run())
    partials = [e for e in events if isinstance(e, PartialEvent)]
    interval_s = CONFIG.speech.partial_interval_ms / 1000
    due = int(3.0 / interval_s)
    # While blocked (about 1.8 s: 7 snapshots due), each new snapshot replaced the waiting one (counted) instead of
    # queueing behind it; how many exactly depends on when the pool's thread hands the decode back, by one or two.
    assert counters["merged_updates"] >= 4, counters
    assert len(partials) <= due - 4, [p.text for p in partials]
    assert finals(events) == ["One two three four five six seven eight"]


def test_unpaced_input_decodes_every_partial_and_guesses_no_final() -> None:
    audio, words = script_audio([("", 0.3), ("one two three four five six", 2.0), ("", 1.0)])
    events, counters = asyncio.run(caption(audio, ScriptedAsr(words), realtime=False))
    assert counters["merged_updates"] == 0 and counters["speculations"] == 0, counters
    assert len([e for e in events if isinstance(e, PartialEvent)]) >= int(2.0 / 0.25) - 2
    assert finals(events) == ["One two three four five six"]


def test_an_engine_switch_waits_for_the_utterance_in_progress_and_no_utterance_mixes_models() -> None:
    audio, words = script_audio([("", 0.3), ("good morning everyone", 1.5), ("", 0.8),
                                 ("let us get started", 1.5), ("", 1.0)])
    old, new = ScriptedAsr(words, name="old"), ScriptedAsr(words, name="new")
    applied: list[float] = []
    now = {"t": 0.0}  # media time of the frame being pushed: when `applied` is called

    def switch_mid_speech(head: SpeechCaptioner, t: float) -> None:
        now["t"] = t
        if abs(t - 1.0) < 0.01:  # in the middle of the first utterance
            head.use_engines(new, ScriptedVad(), keep_context=False,  # type: ignore[arg-type]
                             applied=lambda: applied.append(now["t"]))

    events, _ = asyncio.run(caption(audio, old, during=switch_mid_speech))
    assert finals(events) == ["Good morning everyone", "Let us get started"]
    first_end = 0.3 + 1.5
    assert len(applied) == 1 and first_end <= applied[0] < first_end + 0.8, applied  # between the utterances
    assert old.calls and all(begin < first_end for begin, _ in old.calls), old.calls
    assert new.calls and all(begin >= first_end for begin, _ in new.calls), new.calls


def test_an_early_final_is_never_shown_when_the_rest_of_the_pad_would_change_its_last_word() -> None:
    """The last word runs on past where the VAD hears speech end (a soft ending: "...holiday weekend"): decoded from
    the first 64 ms of the pad it is cut ("week~"), from the whole pad it is right. The final shown must be the
    one the endpoint's audio gives."""
    audio, words = script_audio([("", 0.3), ("after the holiday", 1.2), ("", 1.0)])
    speech_end = 0.3 + 1.2
    # It ends 145 ms after the speech the VAD hears: inside the 150 ms pad, after the 64-128 ms an early guess has.
    words.append(Word("weekend", speech_end - 0.25, speech_end + 0.145))
    assert CONFIG.speech.pad_ms / 1000 > 0.145
    events, counters = asyncio.run(caption(audio, ScriptedAsr(words)))
    assert finals(events) == ["After the holiday weekend"], counters
