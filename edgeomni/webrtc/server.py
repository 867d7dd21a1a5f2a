"""`edgeomni serve`: the aiohttp app. Signaling over HTTP (non-trickle offer/answer), the meeting page at `/`.

Routes (see docs/WEBRTC_PROTOCOL.md): POST /offer, DELETE /session/{id}, GET /sessions, GET /health,
GET /ready, GET /metrics (Prometheus), GET /config, GET / (the meeting page) and /static/*.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import signal
import ssl
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from edgeomni.config import RunConfig
from edgeomni.engines.bundle_engines import Engines
from edgeomni.errors import ConfigError
from edgeomni.events import OtaEvent
from edgeomni.observability.metrics import RuntimeMetrics
from edgeomni.observability.tegrastats import JetsonTelemetry
from edgeomni.paths import default_bundle_dir
from edgeomni.runtime import Runtime
from edgeomni.webrtc.guard import (
    IDLE_TIMEOUT_S,
    ConnectionGuard,
    GuardedSite,
    guard_middleware,
    is_loopback_host,
    raise_open_files_limit,
    tls_context,
)
from edgeomni.webrtc.ice import IceServer, allow_loopback_candidates, rtc_configuration
from edgeomni.webrtc.room import Room
from edgeomni.webrtc.session import CONNECT_GRACE_S, OfferError, Session

PAGE_DIR = Path(__file__).resolve().parents[2] / "demos" / "webrtc_meeting"
MAX_BODY_BYTES = 256 * 1024  # an SDP offer is a few kB; anything far bigger is not one
MAX_NAME_CHARS = 64
BODY_TIMEOUT_S = 10.0  # the whole request body must arrive within this (a slow body holds a handler)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    metrics_token: str | None = None  # for GET /metrics off loopback (default: the signaling token)
    bundle: Path | None = None
    ice_servers: list[IceServer] = field(default_factory=list)
    idle_timeout_s: float = 10.0  # no media for this long: the participant is gone (closed without a word)
    max_sessions: int = 16
    page_dir: Path = PAGE_DIR
    connect_timeout_s: float = CONNECT_GRACE_S  # ICE + DTLS must complete within this, or the session ends
    header_timeout_s: float = 10.0  # a connection must finish its request headers within this
    max_connections_per_ip: int = 64  # open connections one peer address may hold
    tls_cert: Path | None = None  # with tls_key: serve the page and signaling over https
    tls_key: Path | None = None

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve: --port must be 0..65535, got {self.port}")
        for flag, token in (("--token", self.token), ("--metrics-token", self.metrics_token)):
            if token is not None and len(token) < 8:
                raise ConfigError(f"serve: {flag} must be at least 8 characters, got {len(token)}")
        if self.idle_timeout_s <= 0:
            raise ConfigError(f"serve: idle timeout must be > 0 s, got {self.idle_timeout_s}")
        if self.max_sessions < 1:
            raise ConfigError(f"serve: --max-sessions must be >= 1, got {self.max_sessions}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("serve: give both --tls-cert and --tls-key, or neither")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"serve: {flag} {path}: no such file")

    def effective_host(self) -> tuple[str, str | None]:
        """Without a token anyone who can reach the port could join, so only this machine may."""
        if self.token is not None or is_loopback_host(self.host):
            return self.host, None
        return "127.0.0.1", (f"no --token given: binding to 127.0.0.1 instead of {self.host}; "
                             "pass --token to accept other machines")


class CaptionServer:
    """The runtime (shared engines and inference pool); the sessions and rooms of every participant."""

    def __init__(self, serve: ServeConfig, runtime: Runtime) -> None:
        self.serve, self.runtime = serve, runtime
        # /metrics serves the runtime's metrics (load_server always opens it with some).
        self.metrics = runtime.metrics or RuntimeMetrics()
        self.rtc_config = rtc_configuration(serve.ice_servers)
        self.sessions: dict[str, Session] = {}
        self.rooms: dict[str, Room] = {}
        self.closed: list[dict[str, Any]] = []  # the last sessions' final status, for /sessions
        self.started = time.monotonic()
        self.last_ota: dict[str, Any] | None = None  # the last OTA update event (refused, installed ...), for /health
        self._ota = contextlib.AsyncExitStack()
        self.shutting_down = False
        self.metrics.track_sessions(lambda: len(self.sessions))
        self.telemetry = JetsonTelemetry(runtime.config.telemetry)
        self.metrics.registry.register(self.telemetry)
        self.guard = ConnectionGuard(serve.header_timeout_s, serve.max_connections_per_ip)

    @property
    def engines(self) -> Engines:
        """The engines new sessions start on (the newest bundle installed)."""
        return self.runtime.engines

    def app(self) -> web.Application:
        # Without a token the server is this machine's only: the middleware also refuses foreign Hosts/Origins.
        app = web.Application(client_max_size=MAX_BODY_BYTES,
                              middlewares=[guard_middleware(self.guard, lambda: self.serve.token is None)])
        app.add_routes([web.post("/offer", self.offer), web.delete("/session/{id}", self.delete),
                        web.get("/sessions", self.list_sessions), web.get("/health", self.health),
                        web.get("/ready", self.ready), web.get("/metrics", self.prometheus),
                        web.get("/config", self.client_config), web.get("/", self.page)])
        if self.serve.page_dir.is_dir():
            app.router.add_static("/static", self.serve.page_dir)
        app.on_startup.append(self._start_updates)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _start_updates(self, _: web.Application) -> None:
        """With [ota] on: install signed bundles as they are announced; new sessions start on the newest, and
        running ones move at their next pause (each session's channel carries its `ota` switched events)."""
        await self._ota.enter_async_context(self.runtime.updates(self._ota_report))
        self.telemetry.start()  # Jetson power and temperatures where tegrastats exists

    async def _ota_report(self, event: OtaEvent) -> None:
        self.last_ota = event.to_dict()
        detail = " ".join(str(value) for value in (event.bundle, event.reason) if value)
        print(f"edgeomni serve: ota {event.status} {detail}".rstrip(), flush=True)

    # -- handlers -------------------------------------------------------------------------------------------
    async def offer(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await _json_body(request)
        sdp, kind = body.get("sdp"), body.get("type")
        name = body.get("name", f"participant-{len(self.sessions) + 1}")
        room_name = body.get("room", "main")
        burn_in = body.get("burn_in", False)
        for fieldname, value, ok in (("sdp", sdp, isinstance(sdp, str) and sdp.strip()),
                                     ("burn_in", burn_in, isinstance(burn_in, bool)),
                                     ("type", kind, kind == "offer"),
                                     ("name", name, isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS),
                                     ("room", room_name, isinstance(room_name, str) and 0 < len(room_name) <= 64)):
            if not ok:
                expected = {"sdp": "a non-empty SDP string", "type": '"offer"',
                            "name": f"a string of 1..{MAX_NAME_CHARS} characters",
                            "room": "a string of 1..64 characters", "burn_in": "true or false"}[fieldname]
                raise _bad_request(f"field {fieldname!r}: expected {expected}, got {_show(value)}")
        if len(self.sessions) >= self.serve.max_sessions:
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": f"server full: {len(self.sessions)} "
                                             f"sessions (max {self.serve.max_sessions})"}),
                                             content_type="application/json")
        room = self.rooms.setdefault(room_name, Room(room_name))
        session = Session(uuid.uuid4().hex[:12], name, room, self.runtime, self.rtc_config,
                          self.serve.idle_timeout_s, self._forget, connect_timeout_s=self.serve.connect_timeout_s)
        self.sessions[session.id] = session  # the slot is taken before the first await: concurrent offers count it
        try:
            answer = await session.accept(sdp, burn_in=burn_in)
        except OfferError as exc:
            self._release(session)
            self.metrics.error("offer")
            raise _bad_request(str(exc)) from None
        except BaseException:  # the client went away mid-answer (cancelled): nothing may stay behind
            await session.close("offer abandoned")
            raise
        return web.json_response({"sdp": answer, "type": "answer", "session": session.id, "participant": name})

    async def delete(self, request: web.Request) -> web.Response:
        self._authorize(request)
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no session {request.match_info['id']!r}"}),
                                   content_type="application/json")
        await session.close("deleted by the client")
        return web.json_response({"session": session.id, "closed": True, "reason": session.closed_reason})

    async def list_sessions(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.json_response({"sessions": [s.status() for s in self.sessions.values()],
                                  "recently_closed": self.closed[-16:]})

    async def health(self, _: web.Request) -> web.Response:
        """Liveness and load, without names: safe to expose to a monitor."""
        statuses = [s.status() for s in self.sessions.values()]
        finals = [s["sent_latency_ms"].get("final", {}).get("p95") for s in statuses]
        # The OTA step and bundle, never a URL, path or reason (those go to the server's own log).
        ota = {"status": self.last_ota["status"], "bundle": self.last_ota.get("bundle")} if self.last_ota else None
        return web.json_response({
            "status": "ok", "uptime_s": round(time.monotonic() - self.started, 1), "sessions": len(statuses),
            "max_sessions": self.serve.max_sessions, "bundle_tag": self.engines.tag, "ota": ota,
            "final_sent_latency_p95_ms": max((f for f in finals if f is not None), default=None),
            "channel_drops": sum(s["channel_drops"] for s in statuses),
            "frames_dropped": sum(s["audio_frames_dropped"] + s["video_frames_dropped"] for s in statuses),
            "bitrate_kbps": round(sum(s["bitrate_kbps"] for s in statuses), 1),
        })

    async def ready(self, _: web.Request) -> web.Response:
        """Readiness for a load balancer or systemd: engines loaded, not shutting down, room for a session."""
        engines = {"ok": not self.runtime.closed and not self.shutting_down, "bundle": self.engines.tag}
        capacity = {"ok": len(self.sessions) < self.serve.max_sessions, "sessions": len(self.sessions),
                    "max_sessions": self.serve.max_sessions}
        ok = engines["ok"] and capacity["ok"]
        return web.json_response({"ready": ok, "checks": {"engines": engines, "capacity": capacity}},
                                 status=200 if ok else 503)

    async def prometheus(self, request: web.Request) -> web.Response:
        """The runtime's Prometheus metrics. Open on a loopback-only server; otherwise it needs the metrics token
        (`--metrics-token`) or, without one, the signaling token."""
        if not is_loopback_host(self.serve.effective_host()[0]):
            self._authorize(request, self.serve.metrics_token or self.serve.token)
        body, content_type = self.metrics.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def client_config(self, request: web.Request) -> web.Response:
        """ICE servers for the page; TURN credentials only to a caller that has the token."""
        try:
            self._authorize(request)
            servers = self.serve.ice_servers
        except web.HTTPUnauthorized:
            servers = [s for s in self.serve.ice_servers if s.username is None]
        return web.json_response({"iceServers": [s.to_browser() for s in servers],
                                  "auth": self.serve.token is not None})

    async def page(self, _: web.Request) -> web.StreamResponse:
        index = self.serve.page_dir / "index.html"
        if not index.is_file():
            raise web.HTTPNotFound(text=f"meeting page not found: {index} (pass --page DIR)")
        return web.FileResponse(index)

    # -- helpers --------------------------------------------------------------------------------------------
    def _authorize(self, request: web.Request, token: str | None = None) -> None:
        token = token if token is not None else self.serve.token
        if token is None:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise _unauthorized("missing 'Authorization: Bearer TOKEN' header")
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise _unauthorized("wrong token")

    def _forget(self, session: Session) -> None:
        self.closed.append({**session.status(), "reason": session.closed_reason})
        del self.closed[:-64]
        self._release(session)

    def _release(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        room = session.room
        if not room.channels and not any(s.room is room for s in self.sessions.values()):
            self.rooms.pop(room.name, None)

    async def _shutdown(self, _: web.Application) -> None:
        self.shutting_down = True
        await self._ota.aclose()  # first: no bundle switch while the sessions close
        self.telemetry.close()
        await asyncio.gather(*(s.close("server shutting down") for s in list(self.sessions.values())))
        self.runtime.close()


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await asyncio.wait_for(request.json(), BODY_TIMEOUT_S)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=json.dumps({"error": f"request body not received within "
                                                              f"{BODY_TIMEOUT_S:g} s"}),
                                     content_type="application/json") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise _bad_request(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad_request(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _unauthorized(message: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(text=json.dumps({"error": message}), content_type="application/json",
                                headers={"WWW-Authenticate": 'Bearer realm="edgeomni"'})


def load_server(serve: ServeConfig, run_config: RunConfig) -> CaptionServer:
    """Verify the bundle and load the engines once (shared by every participant)."""
    serve.validate()
    allow_loopback_candidates()
    return CaptionServer(serve, Runtime.open(serve.bundle or default_bundle_dir(), run_config, RuntimeMetrics()))


def run_server(serve: ServeConfig, run_config: RunConfig) -> None:
    server = load_server(serve, run_config)
    host, warning = serve.effective_host()
    if warning:
        print(f"edgeomni serve: {warning}", flush=True)
    soft, _hard = raise_open_files_limit()  # every participant costs descriptors: sockets, decoders, threads
    context = tls_context(serve.tls_cert, serve.tls_key) if serve.tls_cert and serve.tls_key else None
    print(f"edgeomni serve: meeting page {'https' if context else 'http'}://{host}:{serve.port}/ · bundle "
          f"{server.engines.bundle.path} · {'token required' if serve.token else 'no token'} · "
          f"open files {soft}", flush=True)
    asyncio.run(_serve_forever(server, host, serve.port, context))


async def _serve_forever(server: CaptionServer, host: str, port: int, context: ssl.SSLContext | None) -> None:
    """web.run_app, with every connection behind the server's ConnectionGuard; Ctrl+C / SIGTERM end it."""
    runner = web.AppRunner(server.app(), keepalive_timeout=IDLE_TIMEOUT_S, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await GuardedSite(runner, host, port, server.guard, context).start()
        await stop.wait()
    finally:
        await runner.cleanup()
