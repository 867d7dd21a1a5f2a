"""Four participants at once: each gets its own sentence's captions, and nobody else's words."""

from __future__ import annotations

from pathlib import Path

import pytest
from media_factory import make_speech_wav
from webrtc_support import SENTENCES, ServerThread, client_events, finals_text, http, own_session, start_client

from edgeomni.wer import wer, words

pytestmark = pytest.mark.slow


def test_four_concurrent_participants_each_get_their_own_captions(default_bundle: Path, tmp_path: Path) -> None:
    server = ServerThread(default_bundle, idle_timeout_s=5.0).start()
    try:
        names = ["ann", "bob", "cat", "dan"]
        wavs = [make_speech_wav(tmp_path / f"{n}.wav", sentence, voice="en-us", speed=145)
                for n, sentence in zip(names, SENTENCES, strict=True)]
        procs = [start_client(server.url, wav, name) for name, wav in zip(names, wavs, strict=True)]
        server.wait_for(lambda: len(server.server.sessions) == 4 or any(p.poll() is not None for p in procs), 60,
                        "four sessions at once")
        status, health = http("GET", f"{server.url}/health", token=None)
        assert status == 200 and health["sessions"] == 4, health
        results = {name: client_events(proc) for name, proc in zip(names, procs, strict=True)}
        server.wait_for(lambda: not server.server.sessions, 15, "every session to close")
    finally:
        server.stop()

    sessions = {name: own_session(results[name], name) for name in names}
    for index, name in enumerate(names):
        text = finals_text(results[name], sessions[name])
        assert wer(SENTENCES[index], text) <= 0.35, f"{name}: {text!r} vs {SENTENCES[index]!r}"
        # Words only another participant said must not show up in this participant's captions.
        others = {w for j, s in enumerate(SENTENCES) if j != index for w in words(s)} - set(words(SENTENCES[index]))
        leaked = {w for w in words(text) if w in others and len(w) > 3}
        assert not leaked, f"{name}'s captions contain other participants' words: {leaked} in {text!r}"
        # Every event a participant received is tagged with the right speaker.
        assert all(e["participant"] == n for e in results[name] if e["type"] == "final"
                   for n, s in sessions.items() if e["session"] == s)
    # The room is shared: finals reach the other participants too (each client leaves after its own end, so
    # the last to finish may have nobody left to receive its final; the other three must have reached someone).
    heard_by_others = {e["participant"] for name in names for e in results[name]
                       if e["type"] == "final" and e["participant"] != name}
    assert len(heard_by_others) >= 3, f"finals shared with others only from {heard_by_others}"
