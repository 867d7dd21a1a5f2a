"""A Python participant: sends a file (in real time) or a microphone, prints the captions that come back.

    python -m edgeomni.webrtc.client --url http://127.0.0.1:8080 --token TOKEN --file talk.wav
    python -m edgeomni.webrtc.client --url http://host:8080 --token TOKEN --mic --name Alice

Also a small library for bots: `CaptionClient(url, token, name).run(media)` yields nothing but calls
`on_event` for every event and returns them all. The protocol is in docs/WEBRTC_PROTOCOL.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import sys
from collections.abc import Callable
from typing import Any

from edgeomni.webrtc.ice import IceServer, allow_loopback_candidates, rtc_configuration

EXIT_OK, EXIT_ERROR_EVENT, EXIT_REJECTED = 0, 1, 2


class SignalingError(RuntimeError):
    """The server refused the offer (status and its message)."""


def open_media(file: str | None, mic: bool, video: bool) -> Any:
    """An aiortc MediaPlayer: a file is paced in real time, as a participant would speak it."""
    from aiortc.contrib.media import MediaPlayer

    if file is not None:
        return MediaPlayer(file)
    system = platform.system()
    if system == "Darwin":
        return MediaPlayer(":0" if not video else "0:0", format="avfoundation")
    if system == "Windows":
        return MediaPlayer("audio=default", format="dshow")
    assert mic
    return MediaPlayer("default", format="pulse")


class CaptionClient:
    def __init__(self, url: str, token: str | None, name: str, room: str = "main",
                 ice_servers: list[IceServer] | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
                 send_video: bool = True, on_video: Callable[[Any], None] | None = None) -> None:
        """on_video: ask for our video back with our captions burned in; called with each av.VideoFrame."""
        self.url, self.token, self.name, self.room = url.rstrip("/"), token, name, room
        self.on_video = on_video
        self.ice_servers = ice_servers or []
        self.on_event = on_event or (lambda _event: None)
        self.send_video = send_video
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Future[None]] = []  # kept referenced until done
        self._stop_when: Callable[[dict[str, Any]], bool] | None = None

    async def run(self, player: Any, timeout: float | None = None,
                  stop_when: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Connect, send until the media ends, ask the server to finish, return when our `end` arrives
        (or as soon as ``stop_when(event)`` is true). With ``player=None`` we only listen to the room."""
        self._stop_when = stop_when
        import aiohttp
        from aiortc import RTCPeerConnection, RTCSessionDescription

        allow_loopback_candidates()
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        channel = pc.createDataChannel("captions")
        done = asyncio.Event()
        opened = asyncio.Event()
        channel.on("open", opened.set)
        channel.on("message", lambda message: self._receive(message, done))
        pc.on("track", self._on_track)
        for track in (player.audio if player else None, player.video if player and self.send_video else None):
            if track is not None:
                pc.addTrack(track)
                track.on("ended", lambda: self._tasks.append(asyncio.ensure_future(self._send_end(channel, opened))))
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession(headers=headers) as http:
            try:
                await pc.setLocalDescription(await pc.createOffer())  # non-trickle: waits for all candidates
                async with http.post(f"{self.url}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer",
                                                               "name": self.name, "room": self.room,
                                                               "burn_in": self.on_video is not None}) as reply:
                    body = await reply.json(content_type=None)
                    if reply.status != 200:
                        raise SignalingError(f"POST /offer: HTTP {reply.status}: {body.get('error', body)}")
                self.session = body["session"]
                await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
                await asyncio.wait_for(done.wait(), timeout)
            finally:
                if self.session is not None:
                    with contextlib.suppress(Exception):
                        await http.delete(f"{self.url}/session/{self.session}")
                await pc.close()
        return self.events

    def _on_track(self, track: Any) -> None:
        if track.kind == "video" and self.on_video is not None:
            self._tasks.append(asyncio.ensure_future(self._read_video(track)))

    async def _read_video(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        assert self.on_video is not None
        with contextlib.suppress(MediaStreamError):
            while True:
                self.on_video(await track.recv())

    def own(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Our own events (the server also sends every other participant's captions)."""
        return [e for e in self.events if e.get("session") == self.session and (kind is None or e["type"] == kind)]

    def _receive(self, message: str, done: asyncio.Event) -> None:
        event = json.loads(message)
        self.events.append(event)
        self.on_event(event)
        ours_ended = event.get("session") == self.session and event.get("type") == "end"
        if ours_ended or (self._stop_when is not None and self._stop_when(event)):
            done.set()

    @staticmethod
    async def _send_end(channel: Any, opened: asyncio.Event) -> None:
        await opened.wait()
        if channel.readyState == "open":
            channel.send(json.dumps({"type": "end"}))


def _printer(args: argparse.Namespace, client: CaptionClient) -> Callable[[dict[str, Any]], None]:
    def show(event: dict[str, Any]) -> None:
        mine = event.get("session") == client.session
        if args.json:
            if mine or args.all:
                print(json.dumps(event, ensure_ascii=False), flush=True)
            return
        who = event.get("participant", "?")
        if event["type"] == "final" and (mine or args.all):
            print(f"[{who}] {event['text']}  ({event.get('sent_latency_ms', event.get('latency_ms'))} ms)", flush=True)
        elif event["type"] == "error" and mine:
            print(f"error: {event['message']}", file=sys.stderr, flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.webrtc.client", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", default=None, help="bearer token the server was started with")
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--file", help="audio/video file to send, paced in real time")
    media.add_argument("--mic", action="store_true", help="the default microphone (PulseAudio/AVFoundation/DirectShow)")
    parser.add_argument("--name", default="python-client", help="participant display name")
    parser.add_argument("--room", default="main")
    parser.add_argument("--no-video", action="store_true", help="send only the audio of a file")
    parser.add_argument("--burn-in", action="store_true",
                        help="ask for our video back with our captions burned in (counted; see the page to watch it)")
    parser.add_argument("--ice-server", action="append", default=[], metavar="URL[,USER,CREDENTIAL]")
    parser.add_argument("--json", action="store_true", help="print events as JSON lines instead of text")
    parser.add_argument("--all", action="store_true", help="print every participant's captions, not only ours")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    args = parser.parse_args(argv)

    returned = [0]

    def count(_frame: Any) -> None:
        returned[0] += 1

    client = CaptionClient(args.url, args.token, args.name, args.room, [IceServer.parse(s) for s in args.ice_server],
                           send_video=not args.no_video, on_video=count if args.burn_in else None)
    client.on_event = _printer(args, client)
    try:
        player = open_media(args.file, args.mic, video=not args.no_video)
    except Exception as exc:  # PyAV names the file/device and why
        print(f"error: cannot open {args.file or 'the microphone'}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    try:
        asyncio.run(client.run(player, args.timeout))
    except SignalingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except TimeoutError:
        print(f"error: no end of captions within {args.timeout} s", file=sys.stderr)
        return EXIT_ERROR_EVENT
    except KeyboardInterrupt:
        return 130
    if args.burn_in:
        print(f"received {returned[0]} captioned video frames", file=sys.stderr)
    return EXIT_ERROR_EVENT if client.own("error") else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
