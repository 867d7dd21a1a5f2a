"""What keeps strangers from using or exhausting `edgeomni serve` before any handler runs.

- Connections: each one must finish its request headers within `header_timeout_s` of connecting (or of the
  first byte of its next request); an idle keep-alive connection is closed after `IDLE_TIMEOUT_S`; one peer
  address holds at most `max_per_ip` connections. Half-sent requests (slowloris) cannot pile up until the
  process runs out of file descriptors, and `raise_open_files_limit` lifts that limit to the hard one.
- Without a token (the loopback-only mode), a browser page of another site is a stranger too: requests must
  name a loopback Host (a rebound DNS name pointing at 127.0.0.1 is refused) and unsafe methods must come from
  the same origin, POSTs as `application/json` (which a cross-site form cannot send without a preflight).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import resource
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from edgeomni.errors import ConfigError

IDLE_TIMEOUT_S = 15.0  # a keep-alive connection without a new request (aiohttp's own default is an hour)
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_OPEN_FILES_TARGET = 65536

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionGuard:
    """Per-connection header deadline and a per-address connection cap, shared by every listening socket."""

    def __init__(self, header_timeout_s: float, max_per_ip: int) -> None:
        self.header_timeout_s, self.max_per_ip = header_timeout_s, max_per_ip
        self.open: Counter[str] = Counter()
        self.refused = 0
        self._by_transport: dict[Any, _Guarded] = {}

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        return _Guarded(inner, self)

    def request_started(self, transport: Any) -> None:
        conn = self._by_transport.get(transport)
        if conn is not None:
            conn.disarm()

    def request_finished(self, transport: Any) -> None:
        conn = self._by_transport.get(transport)
        if conn is not None:
            conn.idle = True


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: admission, the header deadline, bookkeeping."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner, self.guard = inner, guard
        self.transport: Any = None
        self.ip = ""
        self.admitted = False
        self.idle = False  # between requests: the next byte starts a new header deadline
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        if self.guard.open[self.ip] >= self.guard.max_per_ip:
            self.guard.refused += 1
            transport.abort()
            return
        self.admitted = True
        self.guard.open[self.ip] += 1
        self.guard._by_transport[transport] = self
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if self.idle:
            self.idle = False
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.disarm()
        self.guard._by_transport.pop(self.transport, None)
        self.guard.open[self.ip] -= 1
        if self.guard.open[self.ip] <= 0:
            del self.guard.open[self.ip]
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _arm(self) -> None:
        self.disarm()
        self._timer = asyncio.get_running_loop().call_later(self.guard.header_timeout_s, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        with contextlib.suppress(Exception):
            self.transport.abort()


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site with every connection behind a ConnectionGuard."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self.guard.protocol(server()), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def guard_middleware(guard: ConnectionGuard, loopback_only: Callable[[], bool]) -> Any:
    """Ends the connection's header deadline once a request arrives; in the loopback-only mode (no token),
    refuses a foreign Host, a foreign Origin on unsafe methods and a POST that is not application/json."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        guard.request_started(request.transport)
        try:
            if loopback_only():
                _check_same_origin(request)
            return await handler(request)
        finally:
            guard.request_finished(request.transport)

    return middleware


def _check_same_origin(request: web.Request) -> None:
    host = request.headers.get("Host")
    if host is not None and not _loopback_authority(host):
        raise _refuse(web.HTTPForbidden, f"Host {host!r} is not this machine: without --token the server "
                      "answers only requests addressed to localhost or a loopback address")
    if request.method in _SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is not None and (host is None or _authority(origin) != host.lower()):
        raise _refuse(web.HTTPForbidden, f"Origin {origin!r} is another site: without --token only the page "
                      "served here may send requests")
    if request.method == "POST" and request.content_type != "application/json":
        raise _refuse(web.HTTPUnsupportedMediaType, f"Content-Type {request.content_type!r}: expected "
                      "application/json")


def _authority(origin: str) -> str | None:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()


def _loopback_authority(authority: str) -> bool:
    host = authority.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def _refuse(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}), content_type="application/json")


def raise_open_files_limit() -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE to the hard limit (at most 65536; the default soft limit of 1024, or the 256
    of some shells, is what a slow-client flood exhausts first). Returns the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _OPEN_FILES_TARGET if hard == resource.RLIM_INFINITY else min(hard, _OPEN_FILES_TARGET)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server side of TLS for the page and signaling (a browser grants the microphone to https pages only,
    localhost excepted)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"serve: --tls-cert {cert} / --tls-key {key}: cannot load ({exc})") from None
    return context
