"""End to end over real WebRTC (aiortc both sides, Opus over loopback/LAN): speech in, captions back."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from media_factory import make_speech_wav
from webrtc_support import SENTENCES, ServerThread, client_events, finals_text, http, own_session, start_client

from edgeomni.wer import wer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(default_bundle: Path):
    running = ServerThread(default_bundle, idle_timeout_s=2.0).start()
    yield running
    running.stop()


def _speech(tmp_path: Path, index: int) -> Path:
    return make_speech_wav(tmp_path / f"speech{index}.wav", SENTENCES[index], voice="en-us", speed=145)


def test_file_with_known_speech_gets_matching_captions(server: ServerThread, tmp_path: Path) -> None:
    events = client_events(start_client(server.url, _speech(tmp_path, 0), "alice"))
    session = own_session(events, "alice")
    text = finals_text(events, session)
    assert wer(SENTENCES[0], text) <= 0.35, text
    finals = [e for e in events if e["type"] == "final" and e["session"] == session]
    assert all(e["participant"] == "alice" and e["sent_latency_ms"] >= e["latency_ms"] for e in finals)
    end = next(e for e in events if e["type"] == "end" and e["session"] == session)
    metrics = end["participant_metrics"]
    assert metrics["audio_frames_received"] > 100  # ~4 s of 20 ms Opus frames
    assert metrics["bytes_received"] > 10_000
    assert metrics["sent_latency_ms"]["final"]["n"] == len(finals)
    # The session ended itself once the client said it was done: nothing is left on the server.
    server.wait_for(lambda: not server.server.sessions, 10, "the session to close")
    closed = server.server.closed[-1]
    assert closed["reason"] in ("stream ended", "deleted by the client")


def test_abrupt_disconnect_cleans_up_without_leaks(server: ServerThread, tmp_path: Path) -> None:
    wav = _speech(tmp_path, 1)
    client_events(start_client(server.url, wav, "warmup"))  # executor threads etc. exist from here on
    server.wait_for(lambda: not server.server.sessions, 10, "the warm-up session to close")
    time.sleep(0.5)
    tasks_before = server.tasks()
    threads_before = {t.name for t in threading.enumerate()}

    proc = start_client(server.url, wav, "vanishing")
    server.wait_for(lambda: any(s.source.buffer.received["audio"] > 20 for s in server.server.sessions.values()),
                    30, "audio from the client")
    proc.send_signal(signal.SIGKILL)  # no DELETE, no DTLS close: the peer is simply gone
    proc.communicate(timeout=10)
    server.wait_for(lambda: not server.server.sessions, 15, "the vanished client's session to be cleaned up")
    assert server.server.closed[-1]["reason"].startswith(("no media", "connection"))

    def left_behind() -> tuple[set[str], set[str]]:
        return {t.name for t in threading.enumerate()} - threads_before, server.tasks() - tasks_before

    # aiortc's decoder threads exit on their own queue sentinel, a moment after the session is gone (longer on a
    # loaded machine): polled, not a fixed wait; a leak never ends, so the deadline still catches one.
    deadline = time.monotonic() + 15
    while any(left_behind()) and time.monotonic() < deadline:
        time.sleep(0.2)
    leaked_threads, leaked_tasks = left_behind()
    assert not leaked_threads, f"threads left behind: {leaked_threads}"
    assert not leaked_tasks, f"tasks left behind: {leaked_tasks}"
    status, health = http("GET", f"{server.url}/health", token=None)
    assert status == 200 and health["sessions"] == 0


def test_burn_in_returns_the_participant_s_video_with_their_captions(server: ServerThread, tmp_path: Path) -> None:
    """Offer `"burn_in": true`: the video that comes back carries the participant's final (bottom band) and the
    screen note (top band), read back with the bundle's OCR; an offer without a camera is refused clearly."""
    import asyncio

    from aiortc.contrib.media import MediaPlayer
    from media_factory import make_scene_clip, render_photo, render_slide
    from webrtc_support import TOKEN

    from edgeomni.bundle import verify_bundle
    from edgeomni.engines.ocr import TextReader
    from edgeomni.webrtc.client import CaptionClient, SignalingError

    speech = make_speech_wav(tmp_path / "speech.wav", "Thank you for listening.", voice="en-us", speed=140)
    clip = make_scene_clip(tmp_path / "camera.mp4", [render_slide("Quarterly results"), render_photo("chelsea")],
                           seconds_each=3.0, speech=speech, speech_at=0.5)
    returned: list[tuple[float, object]] = []
    client = CaptionClient(server.url, TOKEN, "carol",
                           on_video=lambda frame: returned.append((time.monotonic(), frame.to_ndarray(format="rgb24"))))
    finals_at: list[tuple[float, dict]] = []
    client.on_event = lambda e: finals_at.append((time.monotonic(), e)) if e["type"] == "final" else None
    events = asyncio.run(client.run(MediaPlayer(str(clip)), timeout=60))
    assert returned, "no video came back"
    assert returned[0][1].shape == (360, 640, 3)
    received_at, final = next((t, e) for t, e in finals_at if e.get("session") == client.session)
    reader = TextReader(verify_bundle(server.serve.bundle))
    after = [image for t, image in returned if received_at + 0.2 <= t <= received_at + 1.5]
    assert after, "no frame came back after the final"
    bottoms = [" ".join(line.text for line in reader(image[-70:])) for image in after[::3]]
    assert min(wer(final["text"], bottom) for bottom in bottoms) <= 0.3, (final["text"], bottoms)
    tops = [" ".join(line.text for line in reader(image[:60])) for image in after[::3]]
    assert any("[screen]" in top for top in tops), tops
    end = next(e for e in events if e["type"] == "end" and e["session"] == client.session)
    assert end["participant_metrics"]["burned_frames_sent"] >= len(returned) > 30

    silent = CaptionClient(server.url, TOKEN, "dave", send_video=False, on_video=lambda frame: None)
    with pytest.raises(SignalingError, match="field 'burn_in': the offer has no camera track"):
        asyncio.run(silent.run(MediaPlayer(str(clip)), timeout=30))
