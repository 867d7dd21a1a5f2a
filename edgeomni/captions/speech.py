"""Speech captions for one audio stream: VAD (inline, stateful) -> endpointing -> ASR (off the loop).

While a person speaks, a `partial` caption is emitted every `partial_interval_ms` of new audio; words
two consecutive updates agree on become `committed` and never change again (they are forced as the
decoder prefix of every later update and of the `final`). At each endpoint one `final` is emitted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgeomni.captions.agreement import LocalAgreement
from edgeomni.captions.context import Context, ContextDecoder
from edgeomni.captions.endpoint import Endpointer, Utterance
from edgeomni.captions.head import HeadContext
from edgeomni.chunking import AudioFramer, FixedFrame
from edgeomni.engines.asr import Asr, Transcript
from edgeomni.engines.bundle_engines import Engines
from edgeomni.engines.vad import VadStream
from edgeomni.events import FinalEvent, PartialEvent
from edgeomni.frames import AUDIO_RATE, AudioFrame
from edgeomni.sources.base import Source

_MAX_QUEUED_FINALS = 8
_MAX_INTERVAL_MS = 2000
_MAX_WORDS_PER_SECOND = 6.0  # faster than any sustained human speech; commits beyond it are the model guessing


@dataclass(slots=True)
class _Speculation:
    """A final decoded while the endpoint silence was still running. It is used only where it provably is the final
    the endpoint would decode: the same audio (same start, speech end and length: the whole pad had arrived), the
    same forced words and the same context."""

    start: float
    speech_end: float
    samples: int
    committed: list[int]
    context: Context | None
    transcript: Transcript
    own: list[int]

    def fits(self, utterance: Utterance, committed: list[int], context: Context | None) -> bool:
        return (utterance.start == self.start and utterance.speech_end == self.speech_end
                and len(utterance.audio) == self.samples and committed == self.committed
                and context is self.context)


class SpeechCaptioner:
    """The speech head: one per audio stream. The ASR engine is shared; the VAD state, endpointer and agreement
    state are not.

    Scheduling (one worker task per stream): finals always go first; partial requests coalesce into one
    slot, so when inference is slower than the update interval the newest audio wins and the merged
    requests are counted; when a partial misses `budget_ms`, the update interval widens (counted) and
    narrows again once there is headroom. Audio is never dropped: finals queue (bounded, with
    back-pressure on the source).
    """

    name: ClassVar[str] = "speech"
    frame_type: ClassVar[type[AudioFrame]] = AudioFrame

    @classmethod
    def open(cls, engines: Engines, source: Source, context: HeadContext) -> SpeechCaptioner | None:
        if engines.asr is None or engines.vad is None or not source.has_audio:
            return None
        return cls(context, engines.asr, engines.vad.stream())

    def __init__(self, context: HeadContext, asr: Asr, vad: VadStream) -> None:
        """context.realtime=False (a file read as fast as possible): the captions depend on the audio alone, never on
        how fast this machine is: each partial is decoded before more audio is taken (none is merged or
        skipped, the update interval never widens, so the words it commits are the same on every run), no
        final is guessed early, and a pause in the audio is our own work (vision, a sink's back-pressure),
        not the speaker cut off, so it never finalises the utterance as a stall."""
        config = context.config.speech
        self.stream, self.config, self.realtime = context.stream, config, context.realtime
        self._vad, self._asr, self._executor = vad, asr, context.executor
        self._emit, self._clock = context.publish, context.clock
        self._framer = AudioFramer(vad.frame_samples)
        self._endpointer = Endpointer(config, vad.frame_samples, asr.min_pad_ms)
        self._agreement = LocalAgreement(asr.detokenizer.starts_word)
        self._finals: deque[Utterance] = deque()
        self._partial: Utterance | None = None
        self._speculate: Utterance | None = None  # a final to decode early, while the endpoint silence runs
        self._speculation: _Speculation | None = None
        self._guessed_end = -1.0
        self._final_decode_s = 0.1  # running estimate: how early to speculate so the decode is done in time
        self._wake, self._room = asyncio.Event(), asyncio.Event()
        self._partial_taken = asyncio.Event()  # unpaced: set once the worker is done with the posted partial
        self._closing = False
        self._interval = int(config.partial_interval_ms * AUDIO_RATE / 1000)
        self._since_partial = 0
        self._last_push = time.monotonic()
        self._pending_engines: _PendingEngines | None = None  # OTA: applied by the worker between utterances
        self._heard_until = 0.0  # media end of the audio the endpointer has seen
        self._decoding_from: float | None = None  # start of the final the worker is decoding now
        self._worker = asyncio.create_task(self._work(), name=f"asr:{self.stream}")
        self.stats: dict[str, float | int] = {
            "audio_seconds": 0.0, "asr_seconds": 0.0, "merged_updates": 0, "interval_widened": 0,
            "no_speech_rejected": 0, "empty_transcripts": 0, "stalls": 0, "speculations": 0,
            "speculative_finals": 0, "speculations_discarded": 0, "context_echoes": 0}
        self._decoder = ContextDecoder(asr, config, self.stats)

    async def push(self, frame: AudioFrame) -> None:
        self.stats["audio_seconds"] += frame.duration
        self._last_push = time.monotonic()
        for fixed in self._framer.push(frame):
            await self._step(fixed)

    def settled_until(self) -> float:
        """Media time before which every caption of this stream is out: no final or partial still to come
        starts earlier (what a sink that draws captions onto frames waits for when the file is read unpaced)."""
        candidates = [self._heard_until, *(u.start for u in self._finals)]
        if (open_from := self._endpointer.open_from()) is not None:
            candidates.append(open_from)
        if self._decoding_from is not None:
            candidates.append(self._decoding_from)
        return min(candidates)

    async def finish(self, arrival: float) -> None:
        """End of stream: flush the tail, transcribe what is left, and wait until every final is out."""
        for fixed in self._framer.flush(arrival):
            await self._step(fixed)
        tail = self._endpointer.flush()
        if tail is not None:
            await self._queue_final(tail)
        self._closing = True
        self._wake.set()
        await self._worker

    async def cancel(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)

    @property
    def compute_seconds(self) -> float:
        return float(self.stats["asr_seconds"])

    def counters(self) -> dict[str, float | int]:
        out = {k: round(v, 3) if isinstance(v, float) else v for k, v in self.stats.items()}
        out.update(utterance_splits=self._endpointer.splits, rejected_bursts=self._endpointer.rejected_bursts,
                   partial_interval_ms=round(self._interval * 1000 / AUDIO_RATE))
        return out

    # -- event-loop side --------------------------------------------------------------------------
    async def _step(self, fixed: FixedFrame) -> None:
        self._heard_until = fixed.pts + len(fixed.samples) / AUDIO_RATE
        utterance = self._endpointer.push(fixed, self._vad(fixed.samples))
        if utterance is not None:
            await self._queue_final(utterance)
        elif self._endpointer.silent_frames:
            self._maybe_speculate(len(fixed.samples) / AUDIO_RATE)
        elif self._endpointer.in_speech:
            self._speculate = None  # speech resumed: a guess not started yet is already stale
            if not self.config.partials:
                return
            self._since_partial += len(fixed.samples)
            if self._since_partial >= self._interval:
                self._since_partial = 0
                if self._partial is not None:
                    self.stats["merged_updates"] += 1  # the worker is behind: the newer snapshot replaces it
                self._partial = self._endpointer.snapshot()
                self._partial_taken.clear()
                self._wake.set()
                if not self.realtime:
                    taken = asyncio.ensure_future(self._partial_taken.wait())
                    # (a worker that died must not leave the stream waiting for ever)
                    await asyncio.wait([taken, self._worker], return_when=asyncio.FIRST_COMPLETED)
                    taken.cancel()

    def _maybe_speculate(self, frame_s: float) -> None:
        """The speaker paused, so no new words can arrive: partials stop, and once the silence left before the
        endpoint is about one final decode long (a running estimate, so a busy machine guesses earlier), the
        final is decoded now. Only once the whole pad has arrived: then the guess decodes exactly the audio the
        endpoint will close, so if the silence holds it is the final, emitted the moment the endpoint is reached
        instead of one decode later. (From part of the pad it was not: a last word that runs on past where the
        VAD hears speech end was cut, "holiday week, and" for "holiday weekend".) An ASR whose pad is longer than
        the endpoint silence (Whisper) gets no guess."""
        pending = self._endpointer.pending()
        if not self.realtime or pending is None or pending.speech_end == self._guessed_end:
            return  # (unpaced: the guess would depend on this machine's speed, and nobody waits for it)
        if self._endpointer.silent_frames < self._endpointer.pad_frames:
            return
        if self._endpointer.frames_to_endpoint * frame_s > self._final_decode_s * 1.25 + frame_s:
            return  # not yet: a decode started now would be done long before the endpoint
        self._guessed_end = pending.speech_end
        self._partial, self._since_partial = None, 0  # the guess covers all of it
        self._speculate = pending
        self._wake.set()

    async def _queue_final(self, utterance: Utterance) -> None:
        while len(self._finals) >= _MAX_QUEUED_FINALS:  # back-pressure instead of an unbounded backlog
            self._room.clear()
            await self._room.wait()
        self._partial, self._since_partial = None, 0  # superseded by the final
        self._speculate = None  # not started yet: decoding the final itself costs the same
        self._finals.append(utterance)
        self._wake.set()

    # -- worker side ------------------------------------------------------------------------------
    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._apply_pending_engines()
            if self._finals:
                utterance = self._finals.popleft()
                self._room.set()
                self._decoding_from = utterance.start
                try:
                    await self._final(loop, utterance)
                finally:
                    self._decoding_from = None
            elif self._speculate is not None:
                guess, self._speculate = self._speculate, None
                await self._decode_speculatively(loop, guess)
            elif self._partial is not None:
                snapshot, self._partial = self._partial, None
                try:
                    await self._update(loop, snapshot)
                finally:
                    self._partial_taken.set()
            elif self._closing:
                return
            else:
                # Wake up exactly when the stream would count as stalled, not one whole period after going idle.
                until_stall = self.config.stall_ms / 1000 - (time.monotonic() - self._last_push)
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.02, until_stall) if self.realtime else None)
                    self._wake.clear()
                except TimeoutError:
                    self._check_stall()

    def _check_stall(self) -> None:
        """No audio for `stall_ms` in the middle of speech: the speaker is cut off, so finalise what we heard."""
        if self._endpointer.in_speech and time.monotonic() - self._last_push >= self.config.stall_ms / 1000:
            utterance = self._endpointer.flush()
            if utterance is not None:
                self.stats["stalls"] += 1
                self._partial = None
                self._finals.append(utterance)

    async def _update(self, loop: asyncio.AbstractEventLoop, snapshot: Utterance) -> None:
        committed = list(self._agreement.committed)
        transcript, own = await loop.run_in_executor(self._executor, self._decoder.decode, snapshot.audio, committed)
        if self._finals:
            return  # the utterance ended while we decoded: its final supersedes this partial
        if transcript.mean_logprob < self.config.min_confidence and not committed:
            return
        self._agreement.update(own, max_words=self._committable_words(own, len(snapshot.audio) / AUDIO_RATE))
        committed_text = self._asr.detokenizer.decode(self._agreement.committed).strip()
        text = self._asr.detokenizer.decode(own).strip()
        if not text:
            return
        event = PartialEvent.stamped(stream=self.stream, text=_capitalise(text), start=snapshot.start,
                                     end=snapshot.end, last_arrival=snapshot.last_arrival, clock=self._clock,
                                     committed=_capitalise(committed_text),
                                     tentative=text[len(committed_text):].strip())
        if self.realtime:
            self._adapt_interval(event.latency_ms)
        await self._emit(event)

    async def _final(self, loop: asyncio.AbstractEventLoop, utterance: Utterance) -> None:
        committed = list(self._agreement.committed)
        self._agreement.reset()
        if utterance.split and committed:
            # A forced split lands mid-speech: committed words may already reach past the cut. The head's
            # final is exactly what was committed; the head then serves as context for the rest, so the
            # still-tentative words are decoded there, once, and nothing is repeated or lost.
            self._decoder.remember(utterance.audio, committed, always=True)
            await self._emit_final(utterance, self._asr.detokenizer.decode(committed).strip(), None)
            return
        speculation = self._speculation
        if speculation is not None and speculation.start <= utterance.start:
            self._speculation = None  # a guess at this utterance (or an older one): used now or never
        else:
            speculation = None
        if speculation is not None and speculation.fits(utterance, committed, self._decoder.context):
            transcript, own = speculation.transcript, speculation.own
            self.stats["speculative_finals"] += 1
        else:
            if speculation is not None:
                self.stats["speculations_discarded"] += 1  # speech resumed after the guess
            transcript, own = await self._decode_final(loop, utterance.audio, committed)
        text = self._asr.detokenizer.decode(own).strip()
        if not text:
            self.stats["empty_transcripts"] += 1
            return
        if transcript.mean_logprob < self.config.min_confidence and not committed:
            self.stats["no_speech_rejected"] += 1  # confident-less text on non-speech: say nothing
            return
        self._decoder.remember(utterance.audio, own, always=utterance.split)
        await self._emit_final(utterance, text, round(transcript.mean_logprob, 3))

    async def _decode_speculatively(self, loop: asyncio.AbstractEventLoop, guess: Utterance) -> None:
        committed = list(self._agreement.committed)
        transcript, own = await self._decode_final(loop, guess.audio, committed)
        self.stats["speculations"] += 1
        previous = self._speculation
        if previous is not None and (previous.start, previous.speech_end) != (guess.start, guess.speech_end):
            self.stats["speculations_discarded"] += 1  # speech resumed after that guess
        self._speculation = _Speculation(guess.start, guess.speech_end, len(guess.audio), committed,
                                         self._decoder.context, transcript, own)

    async def _decode_final(self, loop: asyncio.AbstractEventLoop, audio: np.ndarray,
                            committed: list[int]) -> tuple[Transcript, list[int]]:
        started = time.monotonic()
        result = await loop.run_in_executor(self._executor, self._decoder.decode, audio, committed)
        self._final_decode_s = 0.8 * self._final_decode_s + 0.2 * (time.monotonic() - started)
        return result

    async def _emit_final(self, utterance: Utterance, text: str, confidence: float | None) -> None:
        shown = _capitalise(text)
        await self._emit(FinalEvent.stamped(
            stream=self.stream, text=shown, start=utterance.start, end=utterance.end,
            last_arrival=utterance.last_arrival, clock=self._clock, committed=shown, tentative="",
            confidence=confidence, split=utterance.split,
        ))

    def _committable_words(self, hypothesis: list[int], seconds: float) -> int:
        """How many leading words of `hypothesis` may be committed: the newest ones are decoded from audio that
        stops mid-word, and two updates often agree on the same wrong guess ("The knock at a" for "The doctor
        told him"), so about `commit_lag_s` of speech worth of words is held back, at this hypothesis' own
        speaking rate; and never more words than the audio could hold."""
        n_words = sum(self._asr.detokenizer.starts_word(t) for t in hypothesis)
        rate = n_words / max(seconds, 1e-3)
        held_back = max(2, math.ceil(rate * self.config.commit_lag_s))
        return max(0, min(n_words - held_back, int(seconds * _MAX_WORDS_PER_SECOND)))

    def _adapt_interval(self, latency_ms: float) -> None:
        base = int(self.config.partial_interval_ms * AUDIO_RATE / 1000)
        if latency_ms > self.config.budget_ms:
            widened = min(int(self._interval * 1.5), _MAX_INTERVAL_MS * AUDIO_RATE // 1000)
            if widened > self._interval:
                self._interval = widened
                self.stats["interval_widened"] += 1
        elif latency_ms < self.config.budget_ms / 2 and self._interval > base:
            self._interval = max(base, int(self._interval / 1.25))

    # -- bundle switch (OTA) ------------------------------------------------------------------------
    def switch(self, engines: Engines, previous: Engines, applied: Callable[[], None]) -> None:
        """A bundle without speech models leaves this head on the ones it runs."""
        if engines.asr is not None and engines.vad is not None:
            self.use_engines(engines.asr, engines.vad.stream(), previous.same_tokenizer(engines), applied)

    def use_engines(self, asr: Asr, vad: VadStream, keep_context: bool = True,
                    applied: Callable[[], None] | None = None) -> None:
        """Use another bundle's engines from the next utterance on. The worker swaps them only between
        utterances (not in speech, nothing queued), so no utterance is decoded by two models; `applied`
        is called at that moment. `keep_context=False` when the tokenizers differ (context tokens would lie)."""
        if vad.frame_samples != self._vad.frame_samples:
            raise ValueError(f"VAD frame size {vad.frame_samples} differs from the running {self._vad.frame_samples}")
        self._pending_engines = _PendingEngines(asr, vad, keep_context, applied)
        self._wake.set()

    def _apply_pending_engines(self) -> None:
        pending = self._pending_engines
        if pending is None or self._endpointer.in_speech or self._finals or self._partial is not None:
            return
        self._pending_engines = None
        self._asr, self._vad = pending.asr, pending.vad
        self._endpointer.repad(pending.asr.min_pad_ms)
        self._agreement = LocalAgreement(pending.asr.detokenizer.starts_word)
        self._decoder.asr = pending.asr
        if not pending.keep_context:
            self._decoder.context = None
        if pending.applied is not None:
            pending.applied()


@dataclass(slots=True)
class _PendingEngines:
    asr: Asr
    vad: VadStream
    keep_context: bool
    applied: Callable[[], None] | None


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


__all__ = ["SpeechCaptioner"]
