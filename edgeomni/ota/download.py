"""Fetching an announced archive: a size cap, a wall-clock deadline, and redirects only to http(s).

The deadline does not depend on the server sending anything: a watchdog thread shuts the socket down when it
passes (or when the installer is cancelled at shutdown), so a server trickling one byte a second cannot keep a
download — or the process exit that waits for the install thread — going past it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgeomni.errors import OtaError

_CHUNK = 1 << 20
_SOCKET_TIMEOUT_S = 30.0
_WATCH_INTERVAL_S = 0.05
_MAX_REDIRECTS = 5


class DownloadError(OtaError):
    """The archive could not be fetched (network, HTTP error, timeout): worth retrying when announced again."""


class _Watchdog:
    """Shuts down every socket of one download once the deadline passes or `cancelled` is set."""

    def __init__(self, deadline: float, cancelled: threading.Event) -> None:
        self.deadline, self.cancelled = deadline, cancelled
        self.fired: str | None = None  # "deadline" or "cancelled"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ota-download-deadline", daemon=True)
        self._thread.start()

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                _shutdown(sock)

    def _run(self) -> None:
        while not self._done.wait(min(_WATCH_INTERVAL_S, max(0.0, self.deadline - time.monotonic()))):
            if self.cancelled.is_set() or time.monotonic() >= self.deadline:
                with self._lock:
                    self.fired = "cancelled" if self.cancelled.is_set() else "deadline"
                    for sock in self._sockets:
                        _shutdown(sock)
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def connection(self, base: type[http.client.HTTPConnection]) -> Any:
        """A connection class for urllib's `do_open` whose socket this watchdog can cut."""
        watchdog = self

        class Watched(base):  # type: ignore[valid-type, misc]
            def connect(self) -> None:
                super().connect()
                watchdog.register(self.sock)

        return Watched


def _shutdown(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for TLS: a blocked read in the download thread returns at once.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = _MAX_REDIRECTS

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        old, new = urlsplit(req.full_url).scheme, urlsplit(newurl).scheme.lower()
        if new not in ("http", "https") or (old == "https" and new == "http"):
            raise DownloadError(f"{req.full_url} redirected to {newurl!r}: only http(s) redirects are followed, "
                                "never from https to http")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(watchdog.connection(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(watchdog.connection(http.client.HTTPSConnection), req,
                                context=ssl.create_default_context())

    return urllib.request.build_opener(_Redirects(), Http(), Https())


def fetch(url: str, dest: Path, size: int, timeout_s: float, cancelled: threading.Event, where: str) -> str:
    """Stream exactly `size` bytes from `url` into `dest` within `timeout_s`; return their sha256.

    Raises DownloadError for network trouble and the deadline (worth a retry), OtaError for a size that does
    not match and for cancellation."""
    deadline = time.monotonic() + timeout_s
    watchdog = _Watchdog(deadline, cancelled)
    digest, received = hashlib.sha256(), 0

    def stopped() -> OtaError | None:
        if watchdog.fired == "deadline":
            return DownloadError(f"{where}: download from {url} took longer than {timeout_s:.0f} s "
                                 "(ota.download_timeout_s); aborted")
        if watchdog.fired == "cancelled":
            return OtaError(f"{where}: download cancelled (shutting down)")
        return None

    try:
        request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
        with _opener(watchdog).open(request, timeout=min(_SOCKET_TIMEOUT_S, timeout_s)) as response, \
                dest.open("wb") as out:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) != size:
                raise OtaError(f"{where}: {url} is {int(declared)} bytes, the announcement says {size}")
            while received < size and (block := response.read(min(_CHUNK, size - received))):
                received += len(block)
                digest.update(block)
                out.write(block)
            if received == size and response.read(1):
                raise OtaError(f"{where}: {url} sends more than the announced {size} bytes")
    except OtaError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise stopped() or DownloadError(f"{where}: download from {url} failed ({exc})") from None
    finally:
        watchdog.stop()
    if (error := stopped()) is not None and received < size:
        raise error
    if received != size:
        raise DownloadError(f"{where}: download from {url} ended after {received} of the announced {size} bytes")
    return digest.hexdigest()
