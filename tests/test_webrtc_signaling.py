"""Signaling and bad input: tokens, malformed JSON/SDP, offers without audio or data channel, /health."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from webrtc_support import TOKEN, ServerThread, http

from edgeomni.errors import ConfigError
from edgeomni.webrtc.client import CaptionClient
from edgeomni.webrtc.ice import IceServer
from edgeomni.webrtc.server import ServeConfig
from edgeomni.webrtc.track_source import FrameBuffer


@pytest.fixture(scope="module")
def server(default_bundle: Path):
    running = ServerThread(default_bundle).start()
    yield running
    running.stop()


def _offer(sdp: str = "v=0\r\n", **extra: object) -> bytes:
    return json.dumps({"sdp": sdp, "type": "offer", "name": "tester", **extra}).encode()


async def _aiortc_offer(data_channel: bool, audio: bool) -> str:
    from aiortc import RTCPeerConnection

    from edgeomni.webrtc.ice import rtc_configuration

    pc = RTCPeerConnection(rtc_configuration([]))
    try:
        if data_channel:
            pc.createDataChannel("captions")
        if audio:
            pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


@pytest.mark.parametrize("token, why", [(None, "missing"), ("not-the-token", "wrong token")])
def test_offer_and_delete_need_the_token(server: ServerThread, token: str | None, why: str) -> None:
    status, body = http("POST", f"{server.url}/offer", _offer(), token=token)
    assert status == 401 and why in body["error"]
    status, body = http("DELETE", f"{server.url}/session/abc", token=token)
    assert status == 401
    status, body = http("GET", f"{server.url}/sessions", token=token)
    assert status == 401


@pytest.mark.parametrize("payload, expected", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"\xff\xfe", "not valid JSON"),
    (json.dumps({"type": "offer"}).encode(), "field 'sdp'"),
    (json.dumps({"sdp": "v=0", "type": "answer"}).encode(), "field 'type'"),
    (json.dumps({"sdp": "v=0", "type": "offer", "name": ""}).encode(), "field 'name'"),
    (json.dumps({"sdp": "v=0", "type": "offer", "name": 7}).encode(), "field 'name'"),
    (_offer("hello world"), "not an SDP offer"),
    (_offer("v=0\r\nm=audio nonsense\r\n"), "SDP offer rejected"),
])
def test_malformed_requests_get_400_with_a_message(server: ServerThread, payload: bytes, expected: str) -> None:
    status, body = http("POST", f"{server.url}/offer", payload)
    assert status == 400, body
    assert expected in body["error"], body
    assert not server.server.sessions


def test_offer_without_data_channel_is_refused(server: ServerThread) -> None:
    sdp = asyncio.run(_aiortc_offer(data_channel=False, audio=True))
    status, body = http("POST", f"{server.url}/offer", _offer(sdp))
    assert status == 400 and "no data channel" in body["error"] and "'captions'" in body["error"]
    assert not server.server.sessions


def test_offer_without_audio_gets_a_clear_error_event(server: ServerThread) -> None:
    client = CaptionClient(server.url, TOKEN, "listener")
    events = asyncio.run(client.run(None, timeout=20, stop_when=lambda e: e["type"] == "error"))
    errors = client.own("error")
    assert errors and errors[0]["code"] == "no-audio", events
    assert "no audio track" in errors[0]["message"] and "received tracks: none" in errors[0]["message"]
    # The client's DELETE on the way out ends the session.
    server.wait_for(lambda: not server.server.sessions, 10, "the listener session to close")
    assert server.server.closed[-1]["reason"] == "deleted by the client"


def test_delete_unknown_session_is_404(server: ServerThread) -> None:
    status, body = http("DELETE", f"{server.url}/session/nope")
    assert status == 404 and "nope" in body["error"]


def test_health_and_client_config(server: ServerThread) -> None:
    status, health = http("GET", f"{server.url}/health", token=None)
    assert status == 200 and health["status"] == "ok" and health["sessions"] == 0
    status, config = http("GET", f"{server.url}/config", token=None)
    assert status == 200 and config == {"iceServers": [], "auth": True}


def test_serve_config_without_token_binds_loopback_only() -> None:
    host, warning = ServeConfig(host="0.0.0.0").effective_host()
    assert host == "127.0.0.1" and "no --token" in (warning or "")
    assert ServeConfig(host="0.0.0.0", token="long-enough-token").effective_host() == ("0.0.0.0", None)
    with pytest.raises(ConfigError, match="at least 8"):
        ServeConfig(token="short").validate()
    with pytest.raises(ConfigError, match="stun:"):
        IceServer.parse("http://example.org")
    assert IceServer.parse("turn:10.0.0.1:3478,user,pw").to_browser() == {
        "urls": ["turn:10.0.0.1:3478"], "username": "user", "credential": "pw"}


def test_frame_buffer_drops_oldest_video_and_never_grows_without_bound() -> None:
    async def scenario() -> tuple[FrameBuffer, list[tuple[str, object, float]]]:
        buffer = FrameBuffer({"audio": 5, "video": 2})
        for i in range(10):
            buffer.put("video", f"v{i}", time.monotonic())
            buffer.put("audio", f"a{i}", time.monotonic())
        buffer.drain_until_quiet(0.05)
        out = []
        while (item := await buffer.get()) is not None:
            out.append(item)
        return buffer, out

    buffer, out = asyncio.run(scenario())
    assert buffer.dropped == {"audio": 5, "video": 8}
    assert buffer.received == {"audio": 10, "video": 10}
    assert [frame for _, frame, _ in out] == ["a5", "a6", "a7", "v8", "a8", "v9", "a9"]  # arrival order


def test_full_server_answers_503(server: ServerThread) -> None:
    server.server.serve.max_sessions = 0
    try:
        status, body = http("POST", f"{server.url}/offer", _offer())
    finally:
        server.server.serve.max_sessions = 16
    assert status == 503 and "server full" in body["error"]


def test_slow_receiver_loses_partials_first_and_stays_bounded() -> None:
    from edgeomni.events import MediaClock
    from edgeomni.webrtc.metrics import SessionMetrics
    from edgeomni.webrtc.room import QUEUE_DEPTH, CaptionChannel

    async def scenario() -> tuple[CaptionChannel, SessionMetrics]:
        metrics = SessionMetrics()
        channel = CaptionChannel("s1", MediaClock(), metrics)  # never bound: a receiver that takes nothing
        for i in range(QUEUE_DEPTH):
            channel.offer({"type": "final", "text": f"f{i}"})
        for i in range(50):
            channel.offer({"type": "partial", "text": f"p{i}"})
        channel.offer({"type": "final", "text": "newest"})
        await channel.close()
        return channel, metrics

    channel, metrics = asyncio.run(scenario())
    queued = list(channel._items)
    assert len(queued) == QUEUE_DEPTH and metrics.channel_drops == 51
    assert queued[-1]["text"] == "newest" and not any(e["type"] == "partial" for e in queued)
