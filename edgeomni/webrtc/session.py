"""One participant: an aiortc peer connection, its own pipeline on the shared engines, its caption channel.

Life cycle: `accept(offer)` answers and starts the pipeline; the session ends when the participant sends
`{"type":"end"}` (captions for what was said are finished first), on `DELETE /session/{id}`, when the peer
connection fails or closes, or when its media stops arriving for `idle_timeout_s` (a client that vanished
without a word). Ending is idempotent and always releases everything: tasks, tracks, the peer connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from edgeomni.events import ErrorEvent, Record
from edgeomni.pipeline import Pipeline
from edgeomni.runtime import Runtime
from edgeomni.webrtc.burned_track import BurnedTrack
from edgeomni.webrtc.metrics import SessionMetrics
from edgeomni.webrtc.room import CHANNEL_LABEL, CaptionChannel, Room, RoomSink
from edgeomni.webrtc.track_source import TrackSource

WATCH_INTERVAL_S = 1.0
# After the pipeline's last event, how long the session waits for its channel to carry it out.
FLUSH_TIMEOUT_S = 3.0
# How long a closing session lets the in-flight utterance be transcribed before cancelling.
FINISH_TIMEOUT_S = 5.0
# How long a new session may take to connect and start sending before it counts as gone.
CONNECT_GRACE_S = 20.0


class OfferError(ValueError):
    """The offer cannot be accepted (bad SDP, no data channel); the message says what and why."""


class Session:
    def __init__(self, session_id: str, participant: str, room: Room, runtime: Runtime, rtc_config: Any,
                 idle_timeout_s: float, on_closed: Callable[[Session], None],
                 connect_timeout_s: float = CONNECT_GRACE_S) -> None:
        self.id, self.participant, self.room, self.runtime = session_id, participant, room, runtime
        self.rtc_config, self.idle_timeout_s, self.on_closed = rtc_config, idle_timeout_s, on_closed
        self.connect_timeout_s = connect_timeout_s
        self.connected = False  # ICE + DTLS completed once
        self.metrics = SessionMetrics()
        self.source = TrackSource(participant, video_width=runtime.config.visual.frame_width or None)
        self.pipeline: Pipeline | None = None
        self.channel: CaptionChannel | None = None
        self.closed_reason: str | None = None
        self.pc: Any = None
        self.burned: BurnedTrack | None = None  # the participant's own video, captioned, when asked for
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing: asyncio.Task[None] | None = None

    async def accept(self, offer_sdp: str, burn_in: bool = False) -> str:
        """Answer the offer (non-trickle: the answer carries all our candidates) and start captioning; with
        `burn_in`, the participant's video goes back to them with their captions drawn on it."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        if not offer_sdp.lstrip().startswith("v=0"):
            raise OfferError(f"field 'sdp' is not an SDP offer: expected it to start with 'v=0', "
                             f"got {offer_sdp.strip()[:40]!r}")
        self.pc = pc = RTCPeerConnection(self.rtc_config)
        pc.on("track", self.source.attach)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if pc.sctp is None:
                raise OfferError(f"SDP offer has no data channel (m=application): create a data channel labelled "
                                 f"{CHANNEL_LABEL!r} before createOffer(), captions come back on it")
            if burn_in:
                self.burned = self._return_track(pc)
            await pc.setLocalDescription(await pc.createAnswer())
            if burn_in:
                self._check_return_direction(pc)
        except Exception as exc:  # aiortc raises ValueError/KeyError/... for SDP it cannot use
            await self.source.close()
            await self._abort()
            if isinstance(exc, OfferError):
                raise
            raise OfferError(f"SDP offer rejected: {type(exc).__name__}: {exc}") from None
        sinks = [RoomSink(self.room, self.id, self.participant, self._end_extras)]
        pipeline = self.runtime.stream(self.source, sinks + ([self.burned.sink] if self.burned else []),
                                       stream=self.id)
        self.pipeline = pipeline
        self.channel = CaptionChannel(self.id, pipeline.clock, self.metrics)
        self.room.channels[self.id] = self.channel
        if not self.source.has_audio:
            kinds = ", ".join(t.kind for t in pc.getReceivers() if t.track) or "none"
            self._tell(ErrorEvent(stream=self.id, code="no-audio",
                                  message=f"the offer has no audio track (received tracks: {kinds}); send a "
                                          "microphone track (m=audio, sendonly or sendrecv) to get captions; "
                                          "you still receive the other participants' captions"))
        self._tasks = [asyncio.create_task(self._run_pipeline(), name=f"webrtc-pipeline:{self.id}"),
                       asyncio.create_task(self._watch(), name=f"webrtc-watch:{self.id}")]
        return pc.localDescription.sdp

    def status(self) -> dict[str, Any]:
        counters = self.source.counters() | (self.burned.counters() if self.burned else {})
        return {"session": self.id, "participant": self.participant, "room": self.room.name,
                "state": self.pc.connectionState if self.pc else "new", "audio": self.source.has_audio,
                "video": self.source.has_video, **self.metrics.summary(counters)}

    async def close(self, reason: str) -> None:
        """End the session (idempotent; concurrent callers all wait for the same cleanup)."""
        await asyncio.shield(self.begin_close(reason))

    def begin_close(self, reason: str) -> asyncio.Task[None]:
        """Start ending the session from a callback that cannot await; the first reason given is kept."""
        if self._closing is None:
            self.closed_reason = reason
            self._closing = asyncio.create_task(self._close(), name=f"webrtc-close:{self.id}")
        return self._closing

    # -- internals ------------------------------------------------------------------------------------------
    def _return_track(self, pc: Any) -> Any:
        if not self.source.has_video:
            raise OfferError("field 'burn_in': the offer has no camera track (m=video) to send back captioned")
        bundle = self.runtime.bundle
        if not bundle.manifest.has_role("overlay-glyphs"):
            raise OfferError(f"field 'burn_in': bundle {bundle.manifest.name!r} has no overlay-glyphs component to "
                             "draw captions with (rebuild it: edgeomni bundle build-default)")
        track = BurnedTrack(bundle.role_file("overlay-glyphs"), self.id)
        pc.addTrack(track)
        return track

    def _check_return_direction(self, pc: Any) -> None:
        transceiver = next(t for t in pc.getTransceivers() if t.sender.track is self.burned)
        if "send" not in (transceiver.currentDirection or transceiver.direction or ""):
            raise OfferError("field 'burn_in': the offer's video is send-only; offer it sendrecv to receive the "
                             "captioned video back")

    def _tell(self, event: ErrorEvent) -> None:
        """A message for this participant only, on its own caption channel."""
        if self.channel is not None:
            self.channel.offer({**event.to_dict(), "participant": self.participant, "session": self.id})

    def _end_extras(self) -> Record:
        return {"participant_metrics": self.status()}

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != CHANNEL_LABEL or self.channel is None:
            return
        self.channel.bind(channel)
        channel.on("message", self._on_message)

    def _on_message(self, message: Any) -> None:
        try:
            control = json.loads(message)
            kind = control["type"]
        except (ValueError, TypeError, KeyError):
            kind = None
        if kind == "end":
            self.source.finish()
        else:
            self._tell(ErrorEvent(stream=self.id, code="bad-message",
                                  message=f"unrecognised control message {str(message)[:80]!r}; "
                                          "expected {\"type\": \"end\"}"))

    def _on_connection_state(self) -> None:
        if self.pc is not None and self.pc.connectionState in ("failed", "closed"):
            self.begin_close(f"connection {self.pc.connectionState}")

    async def _run_pipeline(self) -> None:
        assert self.pipeline is not None
        sinks = self.pipeline.sinks
        try:
            await self.pipeline.run()
        except Exception as exc:  # a bug in one participant's pipeline must not touch the others
            self._tell(ErrorEvent(stream=self.id, code="internal",
                                  message=f"pipeline failed: {type(exc).__name__}: {exc}"))
        finally:
            await sinks.close()
            if self.channel is not None:
                await self.channel.flush(FLUSH_TIMEOUT_S)
            if self.closed_reason is None:
                self.begin_close("stream ended")

    async def _watch(self) -> None:
        """Transport stats for the bitrate, and the end of a peer that disappeared without closing."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            with contextlib.suppress(Exception):
                stats = await self.pc.getStats()
                received = sum(s.bytesReceived for s in stats.values() if s.type == "transport")
                lost = sum(getattr(s, "packetsLost", 0) for s in stats.values() if s.type == "inbound-rtp")
                self.metrics.update_transport(received, lost)
            self.connected = self.connected or self.pc.connectionState == "connected"
            if not self.connected and time.monotonic() - self.metrics.started > self.connect_timeout_s:
                # Every session, a listener's too: an offer whose client vanished never connects, and it would
                # hold a slot of --max-sessions for ever.
                self.begin_close(f"not connected within {self.connect_timeout_s:g} s of the offer")
                return
            if not (self.source.has_audio or self.source.has_video):
                continue  # a listener sends nothing; only the connection state ends it
            buffer = self.source.buffer
            if sum(buffer.received.values()) == 0:
                # ICE + DTLS can take seconds on a loaded machine: only a connection that never brings any
                # media within the (longer) connect grace is given up.
                if time.monotonic() - self.metrics.started > max(self.idle_timeout_s, CONNECT_GRACE_S):
                    self.begin_close(f"no media within {max(self.idle_timeout_s, CONNECT_GRACE_S):g} s of the offer")
                    return
            elif time.monotonic() - buffer.last_put > self.idle_timeout_s:
                self.begin_close(f"no media for {self.idle_timeout_s:g} s")
                return

    async def _close(self) -> None:
        watch = self._tasks[1] if len(self._tasks) > 1 else None
        if watch is not None:
            watch.cancel()
        await self.source.close()  # the pipeline sees the end of its source and finishes the utterance
        pipeline_task = self._tasks[0] if self._tasks else None
        if pipeline_task is not None and pipeline_task is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(pipeline_task), FINISH_TIMEOUT_S)
            except TimeoutError:
                pipeline_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pipeline_task
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.room.channels.pop(self.id, None)
        if self.channel is not None:
            await self.channel.close()
        if self.burned is not None:
            self.burned.stop()
        await self._abort()
        self.on_closed(self)

    async def _abort(self) -> None:
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
