"""OTA timings: `python -m edgeomni.bench.ota [--bundle DIR] [--repeat N] [--speech WAV]`.

Times what an update costs, per stage, on a re-versioned copy of a bundle (the default one unless --bundle):
publishing (verify + sign + tar + sha256), a device install over loopback HTTP (download + sha256 + unpack +
signature + every file's sha256) and loading the new engines. With --speech, also runs that file real-time
paced through a pipeline twice, without and with an update installed and switched to mid-run, and compares
caption latency, so the cost of an update to the caption path is measured rather than assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeomni.bundle import verify_bundle
from edgeomni.bundle.manifest import MANIFEST_NAME
from edgeomni.config import RunConfig
from edgeomni.engines.bundle_engines import Engines
from edgeomni.events import CaptionEvent, Event, FinalEvent, OtaEvent
from edgeomni.ota.announcement import Announcement
from edgeomni.ota.install import BundleInstaller, background_executor
from edgeomni.ota.publish import ArchiveServer, pack_bundle
from edgeomni.ota.signing import generate_keypair, load_private_key, load_public_key, sign_manifest
from edgeomni.paths import default_bundle_dir
from edgeomni.runtime import Runtime
from edgeomni.sinks.base import Sink
from edgeomni.sources import open_source
from edgeomni.telemetry import percentiles


def _release(source: Path, work: Path) -> tuple[Path, Path, str]:
    key_path, _, public = generate_keypair(work / "keys")
    release = work / "release"
    shutil.copytree(source, release, copy_function=shutil.copyfile)
    raw = json.loads((release / MANIFEST_NAME).read_text())
    raw["version"] = f"{raw['version']}.1"
    (release / MANIFEST_NAME).write_text(json.dumps(raw, indent=2) + "\n")
    return release, key_path, public


def time_stages(source: Path, repeat: int, work: Path) -> dict[str, Any]:
    release, key_path, public = _release(source, work)
    stages: dict[str, list[float]] = {"publish_ms": [], "install_ms": [], "engine_load_ms": []}
    config = RunConfig()
    www = work / "www"
    with ArchiveServer(www) as server:
        for i in range(repeat):
            started = time.perf_counter()
            signature = sign_manifest(release, load_private_key(key_path))
            archive, digest = pack_bundle(release, www)
            stages["publish_ms"].append((time.perf_counter() - started) * 1000)
            manifest = verify_bundle(release).manifest
            announcement = Announcement(manifest.name, manifest.version, f"{server.base_url}/{archive.name}", digest,
                                        signature, archive.stat().st_size)
            installer = BundleInstaller(work / f"cache-{i}", load_public_key(public), 10**10, 600)
            started = time.perf_counter()
            installed = installer.install(announcement)
            stages["install_ms"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            Engines.load(installed, config)
            stages["engine_load_ms"].append((time.perf_counter() - started) * 1000)
            shutil.rmtree(installed.path)
    return {"archive_mb": round(archive.stat().st_size / 1e6, 1), **{k: percentiles(v) for k, v in stages.items()}}


class _Collect(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        self.events.append(event)


async def _caption_run(bundle: Path, speech: Path, update: tuple[Path, str, Announcement] | None) -> dict[str, Any]:
    """One real-time paced run; with `update`, the bundle is installed and switched to after the first final."""
    config = RunConfig().override({"visual.enabled": False})
    sink = _Collect()
    with Runtime.open(bundle, config) as runtime:
        pipeline = runtime.stream(open_source(str(speech), realtime=True), [sink])
        running = asyncio.create_task(pipeline.run())
        if update is not None:
            cache, public, announcement = update
            while not any(isinstance(e, FinalEvent) for e in sink.events) and not running.done():
                await asyncio.sleep(0.02)
            installer = BundleInstaller(cache, load_public_key(public), 10**10, 600)
            with background_executor() as pool:  # as the updater does it
                installed = await asyncio.get_running_loop().run_in_executor(pool, installer.install, announcement)
            await runtime.switch(installed)
        await running
        await pipeline.sinks.close()
    if update is not None and not any(isinstance(e, OtaEvent) and e.status == "switched" for e in sink.events):
        raise RuntimeError("the update was installed but no stream switched to it")
    return {kind: [e.latency_ms for e in sink.events if isinstance(e, CaptionEvent) and e.type == kind]
            for kind in ("partial", "final")}


def compare_latency(source: Path, speech: Path, work: Path, rounds: int) -> dict[str, Any]:
    """Runs alternate (without, with, without, with, ...) so that a change in background load hits both."""
    release, key_path, public = _release(source, work / "latency")
    signature = sign_manifest(release, load_private_key(key_path))
    samples: dict[str, dict[str, list[float]]] = {"without_update": {}, "with_update_mid_run": {}}
    with ArchiveServer(work / "latency-www") as server:
        archive, digest = pack_bundle(release, work / "latency-www")
        manifest = verify_bundle(release).manifest
        announcement = Announcement(manifest.name, manifest.version, f"{server.base_url}/{archive.name}", digest,
                                    signature, archive.stat().st_size)
        for i in range(rounds):
            for label, update in (("without_update", None),
                                  ("with_update_mid_run", (work / f"latency-cache-{i}", public, announcement))):
                for kind, values in asyncio.run(_caption_run(source, speech, update)).items():
                    samples[label].setdefault(kind, []).extend(values)
    return {label: {kind: percentiles(v) for kind, v in kinds.items()} for label, kinds in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.bench.ota", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=default_bundle_dir())
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--speech", type=Path, help="a speech recording for the caption-latency comparison")
    parser.add_argument("--rounds", type=int, default=2, help="latency runs with and without an update, each")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeomni-ota-bench-") as scratch:
        report: dict[str, Any] = {"stages": time_stages(args.bundle, args.repeat, Path(scratch))}
        if args.speech:
            report["caption_latency"] = compare_latency(args.bundle, args.speech, Path(scratch), args.rounds)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
