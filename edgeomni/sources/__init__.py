"""Sources: everything that turns a user's SRC string into timestamped frames.

``open_source(spec)`` accepts a file path, a network URL, ``lavfi:GRAPH``, ``webcam[:N]``,
``mic[:N]`` or ``sample`` and returns a :class:`Source`, whose ``frames()`` yields 16 kHz mono
:class:`AudioFrame` s and RGB :class:`VideoFrame` s in presentation order::

    source = open_source("talk.mp4", realtime=False)
    async with source:
        async for frame in source.frames():
            ...
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from edgeomni.errors import SourceError
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.sources.av_source import NETWORK_TIMEOUT, AVSource
from edgeomni.sources.base import Source
from edgeomni.sources.devices import Device, list_devices, list_mics, list_webcams, webcam_input
from edgeomni.sources.mic import MicSource
from edgeomni.sources.redact import mask_credentials
from edgeomni.sources.sample import SAMPLE_SPEECH, ensure_sample

__all__ = [
    "ACCEPTED",
    "NETWORK_SCHEMES",
    "SAMPLE_SPEECH",
    "AVSource",
    "AudioFrame",
    "Device",
    "Source",
    "VideoFrame",
    "ensure_sample",
    "list_devices",
    "list_mics",
    "list_webcams",
    "mask_credentials",
    "open_source",
]

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")

ACCEPTED = (
    "accepted sources: a media file path; a network URL (" + ", ".join(f"{s}://" for s in NETWORK_SCHEMES) + "); "
    "lavfi:GRAPH (e.g. lavfi:sine=frequency=440:duration=2); webcam[:N]; mic[:N]; sample (the demo clip)"
)

_KIND = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)


def open_source(
    spec: str,
    *,
    realtime: bool = True,
    video_size: tuple[int, int] | None = None,
    require_audio: bool = False,
) -> Source:
    """Open ``spec`` and check it is usable; decoding starts when ``frames()`` is iterated.

    realtime: deliver file, lavfi and sample input at the pace of its timestamps, as a camera and
        microphone would; False decodes as fast as possible. Live sources are never paced.
    video_size: (width, height) every video frame is scaled to; (width, -1) keeps the aspect ratio and never
        upscales; None keeps the stream's size.
    require_audio: fail now, naming the streams found, when the source has no audio.
    Raises SourceError with a message naming the source and what is wrong.
    """
    source = _open(spec.strip(), realtime, video_size)
    if require_audio and not source.has_audio:
        found = source.describe()
        source._release_once()
        raise SourceError(f"{source.name} has no audio stream (found: {found})")
    return source


def _open(spec: str, realtime: bool, video_size: tuple[int, int] | None) -> Source:
    if not spec:
        raise SourceError(f"empty source; {ACCEPTED}")
    if spec == "sample":
        path = ensure_sample(progress=lambda message: print(message, file=sys.stderr))
        return AVSource(spec, "sample", str(path), paced=realtime, video_size=video_size)

    kind, rest = _split_kind(spec)
    if kind == "webcam":
        url, fmt, options = webcam_input(rest or "0")
        return AVSource(spec, f"webcam:{rest or '0'}", url, format=fmt, options=options, live=True,
                        video_size=video_size, timeout=NETWORK_TIMEOUT, kind="webcam")
    if kind == "mic":
        return MicSource(spec, rest or None)
    if kind == "lavfi":
        if not rest:
            raise SourceError(f"{spec}: lavfi needs a filter graph, e.g. lavfi:sine=frequency=440:duration=2")
        return AVSource(spec, mask_credentials(spec), rest, format="lavfi", paced=realtime, video_size=video_size,
                        kind="lavfi graph")
    if kind in NETWORK_SCHEMES:
        return AVSource(spec, mask_credentials(spec), spec, options=_network_options(kind), live=True,
                        video_size=video_size, timeout=NETWORK_TIMEOUT, kind=f"{kind} stream")
    if kind == "file":
        rest = rest[2:] if rest.startswith("//") else rest
    elif kind is not None:
        raise SourceError(f"unknown source kind {kind!r} in {mask_credentials(spec)!r}; {ACCEPTED}")

    path = Path(rest if kind == "file" else spec).expanduser()
    if not path.exists():
        raise SourceError(f"{mask_credentials(spec)}: no such file ({ACCEPTED})")
    if path.is_dir():
        raise SourceError(f"{spec} is a directory, not a media file")
    if not path.is_file():
        # Opening a named pipe blocks until something writes to it (for ever, if nothing does), and a device
        # node reads without end: neither is a media file.
        what = "a named pipe (FIFO)" if path.is_fifo() else "not a regular file"
        raise SourceError(f"{spec} is {what}; give a media file, or stream into a URL the runtime reads, e.g. "
                          "tcp://127.0.0.1:PORT?listen or udp://127.0.0.1:PORT")
    return AVSource(spec, spec, str(path), paced=realtime, video_size=video_size)


def _split_kind(spec: str) -> tuple[str | None, str]:
    """('webcam', '1') for 'webcam:1', ('rtsp', ...) for URLs, (None, spec) for plain paths."""
    if spec in ("webcam", "mic"):
        return spec, ""
    match = _KIND.match(spec)
    # 'C:\\clip.mp4' is a Windows path, not a source kind called 'C'; an existing file whose name
    # contains a colon is a path too.
    if not match or re.match(r"^[A-Za-z]:[\\/]", spec) or Path(spec).exists():
        return None, spec
    kind, rest = match.group(1).lower(), match.group(2)
    if kind in NETWORK_SCHEMES and not rest.startswith("//"):
        raise SourceError(f"{mask_credentials(spec)!r}: a {kind} URL must look like {kind}://host/path")
    return kind, rest


def _network_options(scheme: str) -> dict[str, str]:
    timeout_us = str(int(NETWORK_TIMEOUT[1] * 1_000_000))
    options = {"rw_timeout": timeout_us}
    if scheme in ("rtsp", "rtsps"):
        # UDP transport loses packets behind NAT and on Wi-Fi; TCP interleaving is what works everywhere.
        options.update(rtsp_transport="tcp", timeout=timeout_us)
    elif scheme in ("http", "https"):
        options.update(reconnect="1", reconnect_streamed="1", reconnect_delay_max="5")
    elif scheme == "udp":
        # A late reader must not kill the stream: let the receive FIFO overrun and carry on.
        options.update(overrun_nonfatal="1", fifo_size="50000", timeout=timeout_us)
    return options
