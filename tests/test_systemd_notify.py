"""systemd's notify protocol: READY=1 once ready, WATCHDOG=1 only while ready (so systemd restarts a stalled
device after WatchdogSec), STATUS with the reason, STOPPING=1 at the end; nothing outside systemd."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from edgeomni.observability.systemd import SystemdNotifier

STALLED = {"checks": {"engines": {"ok": True}, "source": {"ok": False, "reason": "1 stream(s) stalled"}}}


def _receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    return sock


def _messages(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return out


def test_ready_then_watchdog_pings_only_while_ready(tmp_path: Path) -> None:
    sock = _receiver(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier.from_env(lambda: (True, {}), env)
    assert notifier is not None and notifier.watchdog_s == 3.0 and notifier.period == 1.0
    notifier.beat(False, STALLED)
    notifier.beat(True, {})
    notifier.beat(True, {})
    notifier.beat(False, STALLED)
    notifier.beat(False, STALLED)
    assert _messages(sock) == ["STATUS=not ready: 1 stream(s) stalled", "READY=1\nWATCHDOG=1\nSTATUS=ready",
                               "WATCHDOG=1", "STATUS=not ready: 1 stream(s) stalled"]
    sock.close()


def test_the_thread_reports_and_says_stopping(tmp_path: Path) -> None:
    sock = _receiver(tmp_path / "notify")
    state: dict[str, Any] = {"ok": True}
    notifier = SystemdNotifier(str(tmp_path / "notify"), lambda: (state["ok"], {}), watchdog_s=0.3)
    notifier.start()
    assert sock.recv(4096) == b"READY=1\nWATCHDOG=1\nSTATUS=ready"
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.close()
    time.sleep(0.05)
    assert _messages(sock)[-1] == "STOPPING=1"
    sock.close()


def test_abstract_socket_and_no_systemd() -> None:
    name = f"@edgeomni-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(10)
    notifier = SystemdNotifier.from_env(lambda: (True, {}), {"NOTIFY_SOCKET": name})
    assert notifier is not None and notifier.watchdog_s is None
    notifier.beat(True, {})
    assert sock.recv(4096) == b"READY=1\nSTATUS=ready"  # no watchdog configured: no pings
    sock.close()
    assert SystemdNotifier.from_env(lambda: (True, {}), {}) is None
    other_pid = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert SystemdNotifier.from_env(lambda: (True, {}), other_pid).watchdog_s is None
