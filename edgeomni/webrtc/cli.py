"""`edgeomni serve` arguments. Imports nothing heavy: aiortc/aiohttp load only when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeomni.config import RunConfig
from edgeomni.credentials import SERVE_TOKEN_ENV, secret
from edgeomni.errors import ConfigError
from edgeomni.paths import default_bundle_dir
from edgeomni.webrtc.ice import IceServer


def _cmd_serve(args: argparse.Namespace) -> int:
    try:  # the server needs aiohttp and aiortc, the optional webrtc extra
        from edgeomni.webrtc.server import ServeConfig, run_server
    except ImportError as exc:
        raise ConfigError(f"edgeomni serve needs the webrtc extra (pip install 'edgeomni[webrtc]'): {exc}") from None
    config = RunConfig.load(args.config).override(
        {"visual.enabled": False if args.no_visual else None, "ota.broker": args.ota}, source="command line")
    token = secret(args.token, args.token_file, SERVE_TOKEN_ENV, "serve --token-file")
    serve = ServeConfig(host=args.host, port=args.port, token=token, metrics_token=args.metrics_token,
                        bundle=args.bundle,
                        ice_servers=[IceServer.parse(s) for s in args.ice_server or []],
                        idle_timeout_s=args.idle_timeout, max_sessions=args.max_sessions,
                        tls_cert=args.tls_cert, tls_key=args.tls_key)
    if args.page is not None:
        serve.page_dir = args.page
    run_server(serve, config)
    return 0


def add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser("serve", help="WebRTC meeting server: live captions for every participant")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; "
                       "without --token only loopback is allowed)")
    serve.add_argument("--port", type=int, default=8080, help="TCP port for signaling and the page (default: 8080)")
    serve.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on signaling")
    serve.add_argument("--token-file", metavar="FILE", help=f"--token from FILE's first line, out of `ps` (default: "
                       f"${SERVE_TOKEN_ENV})")
    serve.add_argument("--metrics-token", default=None, help="the Bearer token GET /metrics needs when the server "
                       "is not bound to loopback (default: --token); on loopback /metrics is open")
    serve.add_argument("--bundle", type=Path, default=default_bundle_dir(),
                       help="bundle directory (default: $EDGEOMNI_BUNDLE or %(default)s)")
    serve.add_argument("--ice-server", action="append", metavar="URL[,USER,CREDENTIAL]",
                       help="STUN/TURN server, repeatable (default: none, host candidates only: LAN/loopback)")
    serve.add_argument("--idle-timeout", type=float, default=10.0, metavar="S",
                       help="end a session whose media stopped arriving for this long (default: %(default)s)")
    serve.add_argument("--max-sessions", type=int, default=16, help="participants at once (default: %(default)s)")
    serve.add_argument("--config", type=Path, help="TOML config file (see `edgeomni config show`)")
    serve.add_argument("--no-visual", action="store_true", help="caption only speech, ignore video tracks")
    serve.add_argument("--ota", metavar="URL", help="follow signed bundle updates from this MQTT broker "
                       "(overrides [ota] broker; needs [ota] public_key): new sessions start on the newest bundle, "
                       "running ones move at their next pause")
    serve.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve the page and signaling over https with "
                       "this certificate chain (with --tls-key; browsers allow the microphone only on https pages, "
                       "localhost excepted)")
    serve.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    serve.add_argument("--page", type=Path, default=None, help="directory of the meeting page (default: the demo)")
    serve.set_defaults(func=_cmd_serve)
