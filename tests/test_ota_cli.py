"""The OTA command line: `bundle keygen`, `bundle sign`, `trainer publish --serve` -> a device installs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import mqtt_broker  # noqa: F401 - the fixture
from ota_factory import bumped, identity

from edgeomni.bundle import VerifiedBundle, verify_bundle
from edgeomni.events import OtaEvent
from edgeomni.ota.config import OtaConfig
from edgeomni.ota.updater import bundle_updates

pytest.importorskip("paho.mqtt", reason="paho-mqtt (the ota extra) is not installed")


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "edgeomni", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_keygen_sign_publish_and_a_device_installs_it(tmp_bundle_copy: Path, tmp_path: Path,
                                                     mqtt_broker) -> None:  # noqa: F811
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    out = _cli("bundle", "keygen", "--out", str(tmp_path / "keys")).stdout
    public = next(line.split('"')[1] for line in out.splitlines() if line.startswith("public_key = "))
    key = tmp_path / "keys" / "ota-signing.key"
    assert "refusing to overwrite" in _cli("bundle", "keygen", "--out", str(tmp_path / "keys"), check=False).stderr

    running = verify_bundle(tmp_bundle_copy)  # what the device runs: the version before the bump below
    release = tmp_bundle_copy
    raw = json.loads((release / "manifest.json").read_text())
    raw["version"] = bumped(raw["version"])
    (release / "manifest.json").write_text(json.dumps(raw, indent=2))
    assert "signed" in _cli("bundle", "sign", str(release), "--key", str(key)).stdout
    name, version = identity(release)

    # a device's credentials may not announce (ACL): a clear one-line error, exit 2
    denied = _cli("trainer", "publish", str(release), "--key", str(key), "--broker", broker.url_for("dev-a"),
                  "--fleet", "test", "--url", "http://127.0.0.1:9/", check=False)
    assert denied.returncode == 2 and "refused the announcement" in denied.stderr and "pw-a" not in denied.stderr

    publisher = subprocess.Popen([sys.executable, "-m", "edgeomni", "trainer", "publish", str(release), "--key",
                                  str(key), "--broker", broker.url_for("trainer"), "--fleet", "test", "--serve",
                                  "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert publisher.stdout is not None
        line = publisher.stdout.readline()
        assert line.startswith(f"announced {name}@{version} on edgeomni/test/bundles/{name}"), (
            line, publisher.stderr.read() if publisher.poll() is not None else "")

        async def device() -> list[dict[str, Any]]:
            events: list[dict[str, Any]] = []
            switched: list[VerifiedBundle] = []

            async def report(event: OtaEvent) -> None:
                events.append(event.to_dict())

            async def switch(bundle: VerifiedBundle) -> None:
                switched.append(bundle)

            config = OtaConfig(broker=broker.url_for("dev-a"), fleet="test", public_key=public,
                               cache_dir=str(tmp_path / "cache"))
            async with bundle_updates(config, running, switch, report):
                deadline = time.monotonic() + 60
                while not switched and time.monotonic() < deadline and not any(
                        e["status"] == "refused" for e in events):
                    await asyncio.sleep(0.05)
            assert [b.path.name for b in switched] == [f"{name}@{version}"], events
            return events

        events = asyncio.run(device())
        assert [e["status"] for e in events] == ["downloading", "verified", "installed"]
    finally:
        publisher.send_signal(signal.SIGTERM)
        code = publisher.wait(30)
    assert code == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]"])
def test_publish_serving_on_every_interface_needs_the_address_devices_use(tmp_bundle_copy: Path, tmp_path: Path,
                                                                          host: str) -> None:
    """A device cannot download from http://0.0.0.0:PORT/...: announcing that would reach no one."""
    _cli("bundle", "keygen", "--out", str(tmp_path / "keys"))
    proc = _cli("trainer", "publish", str(tmp_bundle_copy), "--key", str(tmp_path / "keys" / "ota-signing.key"),
                "--broker", "mqtt://127.0.0.1:1", "--serve", f"{host}:0", check=False)
    assert proc.returncode == 2 and "--url" in proc.stderr and "every interface" in proc.stderr, proc.stderr
