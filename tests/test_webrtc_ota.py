"""`edgeomni serve` follows signed bundle updates: a real Mosquitto broker and HTTP archive, a real bundle.

The server starts on the default bundle; a newer signed one is announced; /health reports it installed and
in use, and a participant who joins afterwards is captioned by it (the `bundle` field of its finals).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from media_factory import make_speech_wav
from mqtt_broker import mqtt_broker  # noqa: F401 - the fixture
from ota_factory import announcement_for, bumped, identity, make_keys, versioned_copy
from webrtc_support import SENTENCES, ServerThread, client_events, finals_text, http, own_session, start_client

from edgeomni.config import RunConfig
from edgeomni.ota.publish import ArchiveServer, announce, pack_bundle
from edgeomni.wer import wer

pytest.importorskip("paho.mqtt", reason="paho-mqtt (the ota extra) is not installed")

FLEET = "meeting"


@pytest.mark.slow
def test_server_installs_an_announced_bundle_and_new_participants_use_it(
        default_bundle: Path, tmp_path: Path, mqtt_broker) -> None:  # noqa: F811
    key, public = make_keys(tmp_path / "keys")
    release = versioned_copy(default_bundle, tmp_path / "release", bumped(identity(default_bundle)[1]), key)
    old, new = "{}@{}".format(*identity(default_bundle)), "{}@{}".format(*identity(release))
    broker = mqtt_broker(users={"server": "pw-s"}, fleet=FLEET)
    config = RunConfig()
    config.ota.broker, config.ota.fleet, config.ota.public_key = broker.url_for("server"), FLEET, public
    config.ota.cache_dir = str(tmp_path / "installed")
    config.ota.validate()
    server = ServerThread(default_bundle, idle_timeout_s=2.0, config=config).start()
    www = tmp_path / "www"
    www.mkdir()
    try:
        assert http("GET", f"{server.url}/health")[1]["bundle_tag"] == old
        with ArchiveServer(www) as archives:
            archive, digest = pack_bundle(release, www)
            announce(broker.url_for("trainer"), FLEET, announcement_for(release, archive, archives.base_url, digest))
            server.wait_for(lambda: server.server.engines.tag == new, 90, "the announced bundle to be in use")
        health = http("GET", f"{server.url}/health")[1]
        assert health["bundle_tag"] == new and health["ota"]["status"] == "installed", health
        assert (tmp_path / "installed" / new / "manifest.json").is_file()

        wav = make_speech_wav(tmp_path / "after.wav", SENTENCES[1], voice="en-us", speed=145)
        events = client_events(start_client(server.url, wav, "late"))
        session = own_session(events, "late")
        finals = [e for e in events if e["type"] == "final" and e["session"] == session]
        assert finals and all(e["bundle"] == new for e in finals), [e.get("bundle") for e in finals]
        assert wer(SENTENCES[1], finals_text(events, session)) <= 0.35
    finally:
        server.stop()
