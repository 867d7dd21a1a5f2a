"""Files, network streams, lavfi graphs and webcams, all decoded by PyAV (libavformat/libavcodec).

Damaged input: every frame decoded before the damage is delivered first. A packet the decoder
rejects is skipped and counted (one bad packet in a network stream must not end the stream). If
the demuxer fails, or a file (not a live stream) had undecodable packets, the stream then ends
with SourceError naming the source and the media time reached, e.g.
``clip.mp4: damaged or truncated media: decoded up to 0.60 s of 2.00 s (1 packet could not be
decoded: Invalid data found ...)``. A file that simply stops early on a clean boundary (a wav cut
between samples) is indistinguishable from a short file and ends cleanly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import av
import av.logging

from edgeomni.errors import SourceError
from edgeomni.sources.base import Emit, Source
from edgeomni.sources.convert import AudioConverter, Interleaver, VideoConverter
from edgeomni.sources.redact import mask_credentials

# Seconds: (open, read) timeouts for network and device input, enforced by PyAV's interrupt
# callback so a dead camera or server cannot hang the worker (or close()) for ever.
NETWORK_TIMEOUT = (10.0, 10.0)

# Give up on a stream after this many consecutive undecodable packets: it is not that stream.
_MAX_CONSECUTIVE_BAD_PACKETS = 200

# Audio rates a real recording has (telephony's 8 kHz down to 2 kHz, up to 768 kHz studio formats). A header
# that claims 1 Hz turns each sample into a second of media: a small file would then be paced for hours.
SAMPLE_RATES = (2000, 768_000)


@contextlib.contextmanager
def ffmpeg_errors() -> Iterator[None]:
    """Make PyAV's exceptions carry FFmpeg's own last error line (e.g. 'moov atom not found').

    PyAV appends the last captured log line to an exception only while logging is enabled, so
    raise the level to ERROR just around the call, captured (not printed). Used around opening
    only: a capture held for a whole stream would keep every warning of a long stream in memory.
    """
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture():
            yield
    finally:
        av.logging.set_level(previous)


def reason(exc: BaseException) -> str:
    """PyAV's message without the errno prefix: 'Invalid data found when processing input; ...'.

    FFmpeg's log line can quote the URL it opened, so credentials are masked here too."""
    text = getattr(exc, "strerror", None) or str(exc)
    log = getattr(exc, "log", None)
    if log and len(log) >= 3 and str(log[2]).strip():
        text += f" ({str(log[2]).strip()})"
    return mask_credentials(text)


class AVSource(Source):
    """One PyAV container: its main audio and video streams, decoded together in pts order."""

    def __init__(
        self,
        spec: str,
        name: str,
        url: str,
        *,
        format: str | None = None,
        options: dict[str, str] | None = None,
        live: bool = False,
        paced: bool = True,
        video_size: tuple[int, int] | None = None,
        timeout: tuple[float, float] | None = None,
        kind: str = "file",
    ) -> None:
        super().__init__(spec, name, live=live, paced=paced)
        self.kind = kind
        self.video_size = video_size
        try:
            with ffmpeg_errors():
                self._container = av.open(url, format=format, options=options or {}, timeout=timeout)
        except FileNotFoundError as exc:
            raise SourceError(f"{name}: no such file") from exc
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{name}: cannot open {kind}: {reason(exc)}") from exc
        try:
            self._pick_streams()
        except BaseException:
            self._container.close()
            raise

    def _pick_streams(self) -> None:
        c = self._container
        audio = list(c.streams.audio)
        # Cover art in music files shows up as a one-frame video stream; it is not video.
        video = [s for s in c.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        # FFmpeg's own choice (what `ffmpeg -i` would map), unless that is the cover art.
        best_audio, best_video = c.streams.best("audio"), c.streams.best("video")
        self.audio_stream = best_audio or (audio[0] if audio else None)
        self.video_stream = best_video if any(best_video is v for v in video) else (video[0] if video else None)
        found = [_describe_stream(s) for s in c.streams]
        if self.audio_stream is None and self.video_stream is None:
            listed = ", ".join(found) if found else "no streams at all"
            raise SourceError(f"{self.name} has no audio or video stream (found: {listed})")
        rate = self.audio_stream.codec_context.sample_rate if self.audio_stream is not None else None
        if rate and not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:  # 0: not known before decoding (live input)
            raise SourceError(f"{self.name}: audio at {rate} Hz, expected {SAMPLE_RATES[0]}..{SAMPLE_RATES[1]} Hz "
                              "(a damaged or forged header)")
        self.has_audio = self.audio_stream is not None
        self.has_video = self.video_stream is not None
        self._streams = [_describe_stream(s) for s in (self.audio_stream, self.video_stream) if s is not None]
        if self.video_stream is not None:
            # Frame and slice threads inside libavcodec; releases the GIL while it works.
            self.video_stream.thread_type = "AUTO"
        self.duration = c.duration / av.time_base if c.duration else None

    def _origin(self) -> float | None:
        """The shared zero of both streams: the earliest declared start time, if every stream has one."""
        starts = []
        for s in (self.audio_stream, self.video_stream):
            if s is None:
                continue
            if s.start_time is None or s.time_base is None:
                return None
            starts.append(float(s.start_time * s.time_base))
        return min(starts) if starts else None

    def _run(self, emit: Emit, stop: threading.Event) -> None:
        streams = [s for s in (self.audio_stream, self.video_stream) if s is not None]
        origin = self._origin()
        audio = AudioConverter(origin or 0.0)
        rate = self.video_stream.guessed_rate if self.video_stream is not None else None
        video = VideoConverter(origin or 0.0, self.video_size, float(rate) if rate else 30.0)
        merge = Interleaver([s.type for s in streams], window=0.5 if self.live else 2.0)
        bad_packets, consecutive_bad, last_bad, failure = 0, 0, "", None

        def deliver(frames: list[Any]) -> bool:
            return all(emit(f) for f in frames)

        def convert(stream: Any, decoded: list[Any]) -> list[Any]:
            nonlocal origin
            if origin is None and decoded and decoded[0].time is not None:
                # Live inputs carry wall-clock-like timestamps and no start time; their first frame is zero.
                origin = audio.origin = video.origin = decoded[0].time
            if stream.type == "audio":
                return [x for f in decoded for x in audio.push(f)]
            return [video.push(f) for f in decoded]

        try:
            for packet in self._container.demux(streams):
                if stop.is_set():
                    return
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    bad_packets, consecutive_bad, last_bad = bad_packets + 1, consecutive_bad + 1, reason(exc)
                    if consecutive_bad >= _MAX_CONSECUTIVE_BAD_PACKETS:
                        failure = f"{consecutive_bad} packets in a row could not be decoded: {last_bad}"
                        break
                    continue
                consecutive_bad = 0
                if decoded and not deliver(merge.push(packet.stream.type, convert(packet.stream, decoded))):
                    return
        except av.FFmpegError as exc:
            failure = reason(exc)
        if stop.is_set():
            return
        if failure is not None:
            # The demuxer stopped early, so it never sent the flush packets: drain the decoders here.
            for s in streams:
                with contextlib.suppress(av.FFmpegError):
                    tail = s.codec_context.decode(None)
                    if not deliver(merge.push(s.type, convert(s, tail))):
                        return
        if self.audio_stream is not None and not deliver(merge.push("audio", audio.push(None))):
            return
        if not deliver(merge.finish()):
            return
        if failure is None and bad_packets and not self.live:
            failure = f"{bad_packets} packet{'s' if bad_packets > 1 else ''} could not be decoded: {last_bad}"
        if failure is not None:
            reached = max(audio.position if self.has_audio else 0.0, video.position if self.has_video else 0.0)
            of = f" of {self.duration:.2f} s" if self.duration else ""
            what = "stream failed" if self.live else "damaged or truncated media"
            raise SourceError(f"{self.name}: {what}: decoded up to {reached:.2f} s{of} ({failure})")

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()


def _describe_stream(s: Any) -> str:
    cc = s.codec_context
    name = cc.name if cc is not None else "unknown"
    if s.type == "audio":
        layout = cc.layout.name if cc.layout else f"{cc.channels} ch"
        return f"audio {name} {cc.sample_rate} Hz {layout}"
    if s.type == "video":
        rate = s.average_rate or s.guessed_rate
        fps = f" {float(rate):.4g} fps" if rate else ""
        return f"video {name} {cc.width}x{cc.height}{fps}"
    return f"{s.type} {name}"
