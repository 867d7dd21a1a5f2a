"""Signed bundle updates end to end: real Mosquitto (passwords + ACLs), real HTTP, real bundles and models.

A running `edgeomni run --ota` device, fed real-time paced espeak-ng speech, is sent a bundle with a changed
file (refused, it keeps captioning on the old one) and then a good one (installed; the next utterance after
the switch is captioned by it, seen in the `bundle` field of its final events).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import mqtt_broker  # noqa: F401 - the fixture
from ota_factory import announcement_for, bumped, first_engine_file, identity, make_keys, pack, versioned_copy

from edgeomni.bundle import VerifiedBundle, verify_bundle
from edgeomni.errors import OtaError
from edgeomni.events import Event, OtaEvent
from edgeomni.ota.config import OtaConfig
from edgeomni.ota.publish import ArchiveServer, announce, pack_bundle
from edgeomni.ota.updater import bundle_updates
from edgeomni.sinks import Sink

pytest.importorskip("paho.mqtt", reason="paho-mqtt (the ota extra) is not installed")

FLEET = "test"


@pytest.fixture
def release(default_bundle: Path, tmp_path: Path):  # -> (next-version bundle, key, public b64, www dir, base url)
    key, public = make_keys(tmp_path / "keys")
    bundle = versioned_copy(default_bundle, tmp_path / "release", bumped(identity(default_bundle)[1]), key)
    www = tmp_path / "www"
    www.mkdir()
    with ArchiveServer(www) as server:
        yield bundle, key, public, www, server.base_url


async def _wait_for(events: list[dict[str, Any]], match: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
                    what: str = "event") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events:
            if match(event):
                return event
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s; events: {events}")


def test_updater_refuses_bad_bundles_then_installs_the_good_one(default_bundle: Path, tmp_path: Path, release,
                                                                mqtt_broker) -> None:  # noqa: F811
    bundle, _key, public, www, base = release
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet=FLEET)
    trainer_url = broker.url_for("trainer")
    running = verify_bundle(default_bundle)
    old, new = "{}@{}".format(*identity(default_bundle)), "{}@{}".format(*identity(bundle))

    bad_changed = www / "changed.tar"
    bad_changed_sha = pack(bundle, bad_changed, changed=first_engine_file(bundle))
    good_archive, good_sha = pack_bundle(bundle, www)
    stranger_key, _ = make_keys(tmp_path / "stranger")  # same bundle, signed by a key the device does not trust
    forged = versioned_copy(bundle, tmp_path / "forged", identity(bundle)[1], stranger_key)
    forged_archive = www / "forged.tar"
    forged_sha = pack(forged, forged_archive)

    bad = [
        ("bad signature", announcement_for(forged, forged_archive, base, forged_sha), "does not match its manifest"),
        ("changed file", announcement_for(bundle, bad_changed, base, bad_changed_sha), "the file was changed"),
        ("wrong sha256", announcement_for(bundle, good_archive, base, "f" * 64), "archive sha256 is"),
    ]
    good = announcement_for(bundle, good_archive, base, good_sha)

    async def scenario() -> None:
        events: list[dict[str, Any]] = []
        switched: list[VerifiedBundle] = []

        async def report(event: OtaEvent) -> None:
            events.append(event.to_dict())

        async def switch(new: VerifiedBundle) -> None:
            switched.append(new)

        config = OtaConfig(broker=broker.url_for("dev-a"), fleet=FLEET, public_key=public,
                           cache_dir=str(tmp_path / "cache"))
        async with bundle_updates(config, running, switch, report) as updater:
            assert updater is not None and updater.topic == f"edgeomni/{FLEET}/bundles/{identity(bundle)[0]}"
            for what, announcement, reason in bad:
                await asyncio.to_thread(announce, trainer_url, FLEET, announcement)
                refused = await _wait_for(events, lambda e, r=reason: e.get("status") == "refused" and r in e["reason"],
                                          what=f"refusal of the {what} bundle")
                assert refused["running"] == old and refused["bundle"] == new
                assert switched == [] and updater.running is running
            assert not (tmp_path / "cache" / new).exists()

            # a failed download is reported but retried when announced again (a bad bundle is not)
            unreachable = announcement_for(bundle, good_archive, base + "/gone", good_sha)
            for attempt in (1, 2):
                await asyncio.to_thread(announce, trainer_url, FLEET, unreachable)
                await _wait_for(events, lambda _e, n=attempt: sum("/gone/" in e.get("reason", "") for e in events) >= n,
                                what=f"download failure #{attempt}")

            # a device's credentials cannot announce bundles (ACL), so a stolen device cannot push one
            with pytest.raises(OtaError, match="refused the announcement"):
                await asyncio.to_thread(announce, broker.url_for("dev-a"), FLEET, good)

            await asyncio.to_thread(announce, trainer_url, FLEET, good)
            installed = await _wait_for(events, lambda e: e.get("status") == "installed", what="installation")
            assert installed["bundle"] == new and installed["previous"] == old
            assert [f"{b.manifest.name}@{b.manifest.version}" for b in switched] == [new]
            assert updater.running.path == tmp_path / "cache" / new

        # the announcement is retained: a device that connects later gets it at once
        late_events: list[dict[str, Any]] = []
        late_switched: list[VerifiedBundle] = []

        async def late_report(event: OtaEvent) -> None:
            late_events.append(event.to_dict())

        async def late_switch(new: VerifiedBundle) -> None:
            late_switched.append(new)

        config = OtaConfig(broker=broker.url_for("dev-a"), fleet=FLEET, public_key=public,
                           cache_dir=str(tmp_path / "late-cache"))
        async with bundle_updates(config, running, late_switch, late_report):
            await _wait_for(late_events, lambda e: e.get("status") == "installed", what="retained announcement")
        assert [b.path.name for b in late_switched] == [new]

    asyncio.run(scenario())


# -- a running device ------------------------------------------------------------------------------------------
class _Device:
    """`edgeomni run` in a subprocess; its JSONL events are collected line by line as they are written."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ})
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((e for e in list(self.events) if match(e)), None)
            if found is not None:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {what} (exit {self.proc.poll()}); events: {self.events}; "
                             f"stderr: {self.stderr()[-3000:]}")

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read() if self.proc.stderr else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.slow
def test_running_device_refuses_a_changed_bundle_then_switches_between_utterances(
        default_bundle: Path, tmp_path: Path, release, mqtt_broker) -> None:  # noqa: F811
    from test_run_e2e import SENTENCES, speech_with_pauses

    from edgeomni.wer import wer

    bundle, _key, public, www, base = release
    old, new = "{}@{}".format(*identity(default_bundle)), "{}@{}".format(*identity(bundle))
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet=FLEET)
    texts = [*SENTENCES, "The next utterance is captioned by the new bundle.", SENTENCES[0]]
    wav = speech_with_pauses(tmp_path, texts, "ota", pause_s=1.5)
    config = tmp_path / "device.toml"
    config.write_text(f'[ota]\nfleet = "{FLEET}"\npublic_key = "{public}"\ncache_dir = "{tmp_path / "cache"}"\n')
    device = _Device([sys.executable, "-m", "edgeomni", "run", "--bundle", str(default_bundle), "--source", str(wav),
                      "--no-visual", "--sink", "jsonl:-", "--config", str(config), "--ota", broker.url_for("dev-a")])
    try:
        device.wait_for(lambda e: e["type"] == "final", 60, "first final caption")
        changed = www / "changed.tar"
        sha = pack(bundle, changed, changed=first_engine_file(bundle))
        announce(broker.url_for("trainer"), FLEET, announcement_for(bundle, changed, base, sha))
        refused = device.wait_for(lambda e: e.get("status") == "refused", 30, "refusal of the changed bundle")
        assert "the file was changed" in refused["reason"]

        archive, digest = pack_bundle(bundle, www)
        announce(broker.url_for("trainer"), FLEET, announcement_for(bundle, archive, base, digest))
        device.wait_for(lambda e: e.get("status") == "installed", 60, "installation of the good bundle")
        switch = device.wait_for(lambda e: e.get("status") == "switched", 60, "switch at a pause")
        code = device.finish(timeout=120)
        assert code == 0, device.stderr()[-3000:]
    finally:
        device.kill()

    events = device.events
    finals = [e for e in events if e["type"] == "final"]
    assert events[0]["type"] == "start" and events[0]["bundle"] == old
    assert events[-1]["type"] == "end" and events[-1]["error"] is None
    # the stream went on through the refusal and the switch: every utterance is captioned
    assert wer(" ".join(texts), " ".join(f["text"] for f in finals)) <= 0.25, [f["text"] for f in finals]
    tags = [f["bundle"] for f in finals]
    switch_at = events.index(switch)
    assert all(e["bundle"] == old for e in events[:switch_at] if e["type"] == "final"), tags
    after = [e for e in events[switch_at:] if e["type"] == "final"]
    assert after and all(e["bundle"] == new for e in after), tags
    assert tags[0] == old and tags[-1] == new and switch["bundle"] == new
    # the switch happened between utterances: no final after it covers audio from before it
    assert all(e["start"] >= switch["emitted"] - 0.5 for e in after), (switch, after[0])
    assert (tmp_path / "cache" / new / "manifest.json").is_file()


# -- the swap itself, in process: both heads of a running pipeline -----------------------------------------------
class _ListSink(Sink):
    name = "list"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def send(self, event: Event) -> None:
        self.events.append(event.to_dict())


def test_engine_switch_moves_every_model_of_both_heads_of_a_running_stream(default_bundle: Path, tmp_path: Path,
                                                                           release) -> None:
    """Speech moves its ASR and VAD, vision its labeller, face detector and OCR reader, all at once: a visual event
    stamped with the new bundle must come from the new bundle's models only."""
    from media_factory import make_video_file

    from edgeomni.captions import VisualTagger
    from edgeomni.config import RunConfig
    from edgeomni.runtime import Runtime
    from edgeomni.sources import open_source

    bundle = release[0]
    new = "{}@{}".format(*identity(bundle))
    # Long enough that blocks still come however long loading the new engines takes; the stream is stopped as soon
    # as both heads have switched.
    clip = make_video_file(tmp_path / "clip.mp4", seconds=20.0)
    sink = _ListSink()
    runtime = Runtime.open(default_bundle, RunConfig())
    old_vision = runtime.engines.vision
    assert old_vision.labeller and old_vision.faces and old_vision.reader  # the default bundle has all three

    def switched_heads() -> set[str]:
        return {e["head"] for e in sink.events if e["type"] == "ota" and e["status"] == "switched"}

    async def scenario() -> tuple[dict[str, Any], Any]:
        pipeline = runtime.stream(open_source(str(clip), realtime=True, video_size=(320, -1)), [sink])
        running = asyncio.create_task(pipeline.run())
        await asyncio.sleep(1.0)  # mid-stream
        await runtime.switch(verify_bundle(bundle))
        while switched_heads() != {"speech", "visual"} and not running.done():
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # a visual block or so on the new models
        pipeline.stop()
        end = await running
        await pipeline.sinks.close()
        [visual] = [head for head in pipeline.heads if isinstance(head, VisualTagger)]
        return end.to_dict(), visual

    with runtime:
        end, visual = asyncio.run(scenario())
    running_vision = visual._analyzer.engines
    assert running_vision is runtime.engines.vision and runtime.engines.bundle.path == verify_bundle(bundle).path
    for model in ("labeller", "faces", "reader"):  # every visual model is the new bundle's, none the old one's
        assert getattr(running_vision, model) is not getattr(old_vision, model), model
    assert end["error"] is None and end["counters"]["video_blocks"] >= 3
    switched = {e["head"]: e for e in sink.events if e["type"] == "ota" and e["status"] == "switched"}
    # a tone is not speech: the speech head is never mid-utterance, so it switches at once; vision at its next block
    assert set(switched) == {"speech", "visual"} and all(e["bundle"] == new for e in switched.values()), sink.events
    at = sink.events.index(switched["visual"])
    assert all(e["bundle"] != new for e in sink.events[:at] if e["type"] == "visual"), sink.events
    assert all(e["bundle"] == new for e in sink.events[at:] if e["type"] == "visual"), sink.events


def test_context_carries_over_a_switch_only_between_identical_tokenizers_of_one_kind(default_bundle: Path) -> None:
    """Moonshine -> Moonshine with the same tokenizer file keeps the context; Whisper -> Whisper too (its tokenizer
    has its own role); a changed file, or Moonshine -> Whisper, drops it."""
    from types import SimpleNamespace

    from edgeomni.bundle.manifest import Manifest
    from edgeomni.engines.bundle_engines import Engines

    raw = json.loads((default_bundle / "manifest.json").read_text())

    def engines(role: str, sha: str | None = None) -> Any:
        changed = json.loads(json.dumps(raw))
        for component in changed["components"].values():
            if component["role"] == "asr-tokenizer":
                component["role"] = role
                component["sha256"] = sha or component["sha256"]
        return SimpleNamespace(bundle=SimpleNamespace(manifest=Manifest.from_dict(changed)),
                               asr=SimpleNamespace(tokenizer_role=role))

    moonshine, whisper = engines("asr-tokenizer"), engines("asr-whisper-tokenizer")
    assert Engines.same_tokenizer(moonshine, engines("asr-tokenizer"))
    assert Engines.same_tokenizer(whisper, engines("asr-whisper-tokenizer"))
    assert not Engines.same_tokenizer(moonshine, whisper)
    assert not Engines.same_tokenizer(whisper, engines("asr-whisper-tokenizer", sha="0" * 64))
