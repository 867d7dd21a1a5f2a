"""systemd's notify protocol, without libsystemd: under a `Type=notify` unit with `WatchdogSec=`, `edgeomni run`
says READY=1 once /ready first holds (engines loaded, frames arriving) and pings WATCHDOG=1 only while /ready holds.
A source that stalls, or a runtime that hangs, stops the pings, and systemd restarts the service after
`WatchdogSec`. Outside systemd (no `$NOTIFY_SOCKET`) nothing runs.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from edgeomni.observability.health import Probe


class SystemdNotifier:
    def __init__(self, address: str, ready: Probe, watchdog_s: float | None) -> None:
        # An address starting with "@" is in the abstract namespace (a leading NUL byte on the wire).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.ready, self.watchdog_s = ready, watchdog_s
        # Ping well inside the watchdog period (systemd's advice: at half of it, or more often).
        self.period = min(1.0, watchdog_s / 3) if watchdog_s else 1.0
        self.sent_ready = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgeomni-sd-notify", daemon=True)
        self._status = ""

    @classmethod
    def from_env(cls, ready: Probe, environ: dict[str, str] | None = None) -> SystemdNotifier | None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        if not address:
            return None
        watchdog = env.get("WATCHDOG_USEC")
        # WATCHDOG_PID names the process the watchdog is for; another one (a child we started) must not ping.
        mine = env.get("WATCHDOG_PID") in (None, str(os.getpid()))
        watchdog_s = int(watchdog) / 1e6 if watchdog and watchdog.isdigit() and mine else None
        return cls(address, ready, watchdog_s)

    def start(self) -> SystemdNotifier:
        self._thread.start()
        return self

    def notify(self, *fields: str) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError:
            pass  # systemd gone (shutting down): nothing to tell

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.notify("STOPPING=1")

    def _loop(self) -> None:
        while not self._stop.is_set():
            ok, detail = self.ready()
            self.beat(ok, detail)
            self._stop.wait(self.period)

    def beat(self, ok: bool, detail: dict[str, Any]) -> None:
        status = "ready" if ok else _reason(detail)
        fields = []
        if ok and not self.sent_ready:
            self.sent_ready = True
            fields.append("READY=1")
        if ok and self.watchdog_s:
            fields.append("WATCHDOG=1")
        if status != self._status:
            self._status = status
            fields.append(f"STATUS={status}")
        if fields:
            self.notify(*fields)


def _reason(detail: dict[str, Any]) -> str:
    for check in detail.get("checks", {}).values():
        if not check.get("ok") and check.get("reason"):
            return f"not ready: {check['reason']}"
    return "not ready"


__all__ = ["SystemdNotifier"]
