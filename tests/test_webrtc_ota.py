"""`edgeomni serve` follows signed bundle updates: a real Mosquitto broker and HTTP archive, a real bundle.

The server starts on the default bundle; a newer signed one is announced while a participant speaks. That
participant's stream moves to it at a pause (an `ota` switched event on its channel; finals before it carry
the old tag, finals after it the new one), /health reports it, and a participant who joins afterwards is
captioned by the new bundle from the start.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from media_factory import make_speech_wav
from mqtt_broker import mqtt_broker  # noqa: F401 - the fixture
from ota_factory import announcement_for, bumped, identity, make_keys, versioned_copy
from test_run_e2e import speech_with_pauses
from webrtc_support import SENTENCES, ServerThread, client_events, finals_text, http, own_session, start_client

from edgeomni.config import RunConfig
from edgeomni.ota.publish import ArchiveServer, announce, pack_bundle
from edgeomni.wer import wer

pytest.importorskip("paho.mqtt", reason="paho-mqtt (the ota extra) is not installed")

FLEET = "meeting"


@pytest.mark.slow
def test_server_moves_a_speaking_participant_at_a_pause_and_new_ones_start_on_the_new_bundle(
        default_bundle: Path, tmp_path: Path, mqtt_broker) -> None:  # noqa: F811
    key, public = make_keys(tmp_path / "keys")
    release = versioned_copy(default_bundle, tmp_path / "release", bumped(identity(default_bundle)[1]), key)
    old, new = "{}@{}".format(*identity(default_bundle)), "{}@{}".format(*identity(release))
    broker = mqtt_broker(users={"server": "pw-s"}, fleet=FLEET)
    config = RunConfig().override({"ota.broker": broker.url_for("server"), "ota.fleet": FLEET,
                                   "ota.public_key": public, "ota.cache_dir": str(tmp_path / "installed")})
    server = ServerThread(default_bundle, idle_timeout_s=2.0, config=config).start()
    www = tmp_path / "www"
    www.mkdir()
    try:
        assert http("GET", f"{server.url}/health")[1]["bundle_tag"] == old
        talk = speech_with_pauses(tmp_path, SENTENCES, "talk", pause_s=1.5)  # ~20 s, spoken in real time
        speaker = start_client(server.url, talk, "speaker")
        # Announced once 2 s of the first sentence (3.8 s long) have arrived, however long the session took to set
        # up: the switch then comes at a pause after it, with finals on both sides.
        server.wait_for(lambda: any(s.pipeline and s.source.buffer.received["audio"] > 100
                                    for s in server.server.sessions.values()), 30, "2 s of the speaker's audio")
        with ArchiveServer(www) as archives:
            archive, digest = pack_bundle(release, www)
            announce(broker.url_for("trainer"), FLEET, announcement_for(release, archive, archives.base_url, digest))
            # New sessions get the bundle once its engines load; `installed` is reported once the running streams
            # have their VADs too (a few ms later), so wait for both before reading /health.
            server.wait_for(lambda: server.server.engines.tag == new and (server.server.last_ota or {}).get("status")
                            == "installed", 60, "the announced bundle to be in use and reported installed")
        health = http("GET", f"{server.url}/health")[1]
        assert health["bundle_tag"] == new and health["ota"]["status"] == "installed", health
        assert (tmp_path / "installed" / new / "manifest.json").is_file()

        events = client_events(speaker)
        session = own_session(events, "speaker")
        mine = [e for e in events if e.get("session") == session]
        switched = [e for e in mine if e["type"] == "ota" and e.get("status") == "switched" and e["head"] == "speech"]
        assert switched and switched[0]["bundle"] == new, [e for e in mine if e["type"] == "ota"]
        at = mine.index(switched[0])
        tags = [(i < at, e["bundle"]) for i, e in enumerate(mine) if e["type"] == "final"]
        assert all(tag == (old if before else new) for before, tag in tags), tags
        assert {True, False} <= {before for before, _ in tags}, tags  # finals on both sides of the switch
        assert wer(" ".join(SENTENCES), finals_text(events, session)) <= 0.35

        wav = make_speech_wav(tmp_path / "after.wav", SENTENCES[1], voice="en-us", speed=145)
        events = client_events(start_client(server.url, wav, "late"))
        session = own_session(events, "late")
        finals = [e for e in events if e["type"] == "final" and e["session"] == session]
        assert finals and all(e["bundle"] == new for e in finals), [e.get("bundle") for e in finals]
        assert wer(SENTENCES[1], finals_text(events, session)) <= 0.35
    finally:
        server.stop()
