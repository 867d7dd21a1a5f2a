"""Test helpers for the WebRTC server: run it in-process on a free port, in its own event-loop thread.

In-process (not a subprocess) so that tests can look inside: its sessions, its asyncio tasks, the threads
it leaves behind. Clients are real aiortc peers (the Python client as a subprocess, or in-process).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from aiohttp import web

from edgeomni.config import RunConfig
from edgeomni.webrtc.guard import IDLE_TIMEOUT_S, GuardedSite, tls_context
from edgeomni.webrtc.server import CaptionServer, ServeConfig, load_server

TOKEN = "test-token-1234"
ROOT = Path(__file__).resolve().parents[1]
# Sentences the default bundle transcribes well from espeak-ng's en-us voice at 145 wpm (checked with
# `edgeomni run`), each with words the others do not share, so cross-talk would show.
SENTENCES = [
    "Good morning everyone, thank you for joining the call today.",
    "The new office will open in the city center next spring.",
    "Please send me the report before the end of the week.",
    "I think we should hire two more engineers for the project.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """`edgeomni serve` in a background thread: start() -> url; stop() shuts it down cleanly."""

    def __init__(self, bundle: Path, idle_timeout_s: float = 2.0, token: str | None = TOKEN,
                 config: RunConfig | None = None, tls: tuple[Path, Path] | None = None, **serve: Any) -> None:
        """`serve`: more ServeConfig fields (header_timeout_s, max_connections_per_ip, ...)."""
        config = config or RunConfig()
        self.serve = ServeConfig(port=free_port(), token=token, bundle=bundle, idle_timeout_s=idle_timeout_s,
                                 tls_cert=tls[0] if tls else None, tls_key=tls[1] if tls else None, **serve)
        self.server: CaptionServer = load_server(self.serve, config)
        self._tls = tls_context(*tls) if tls else None
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.serve.port}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-webrtc-server", daemon=True)
        self._runner: Any = None

    def start(self) -> ServerThread:
        self._thread.start()

        async def up() -> None:
            self._runner = web.AppRunner(self.server.app(), keepalive_timeout=IDLE_TIMEOUT_S)
            await self._runner.setup()
            await GuardedSite(self._runner, "127.0.0.1", self.serve.port, self.server.guard, self._tls).start()

        self.call(up())
        return self

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def tasks(self) -> set[str]:
        async def names() -> set[str]:
            return {t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()}

        return self.call(names())

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def http(method: str, url: str, body: bytes | None = None, token: str | None = TOKEN,
         content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    """One request; returns (status, JSON body) for success and error statuses alike."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if body is not None:
        headers["Content-Type"] = content_type
    status, reply = raw_request(url, method, body, headers)
    return status, json.loads(reply or b"{}")


def raw_request(url: str, method: str = "GET", body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request with exactly these headers (a Host or Origin of one's choosing); (status, body bytes)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_client(url: str, wav: Path, name: str, extra: list[str] | None = None) -> subprocess.Popen[str]:
    """The Python client as a participant would run it; events come out as JSON lines on stdout."""
    cmd = [sys.executable, "-m", "edgeomni.webrtc.client", "--url", url, "--token", TOKEN, "--file", str(wav),
           "--name", name, "--json", "--all", "--timeout", "60", *(extra or [])]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def client_events(proc: subprocess.Popen[str], timeout: float = 90.0) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"client exited {proc.returncode}: {err[-2000:]}"
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def own_session(events: list[dict[str, Any]], name: str) -> str:
    starts = [e for e in events if e["type"] == "start" and e.get("participant") == name]
    assert starts, f"no start event for {name}: {events[:3]}"
    return starts[0]["session"]


def finals_text(events: list[dict[str, Any]], session: str) -> str:
    return " ".join(e["text"] for e in events if e["type"] == "final" and e.get("session") == session)
