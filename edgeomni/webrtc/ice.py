"""ICE configuration: explicit (possibly empty) server lists, and loopback-only hosts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeomni.errors import ConfigError

_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


@dataclass(frozen=True)
class IceServer:
    """One STUN/TURN server, as `URL` or `URL,USERNAME,CREDENTIAL` on the command line."""

    url: str
    username: str | None = None
    credential: str | None = None

    @classmethod
    def parse(cls, spec: str) -> IceServer:
        url, *auth = spec.split(",")
        if not url.startswith(_SCHEMES):
            raise ConfigError(f"--ice-server {spec!r}: expected a URL starting with one of {', '.join(_SCHEMES)}")
        if auth and len(auth) != 2:
            raise ConfigError(f"--ice-server {spec!r}: expected URL or URL,USERNAME,CREDENTIAL")
        return cls(url, *auth) if auth else cls(url)

    def to_browser(self) -> dict[str, Any]:
        """The RTCIceServer dictionary a browser's RTCPeerConnection takes."""
        entry: dict[str, Any] = {"urls": [self.url]}
        if self.username is not None:
            entry.update(username=self.username, credential=self.credential)
        return entry


def rtc_configuration(servers: list[IceServer]) -> Any:
    from aiortc import RTCConfiguration, RTCIceServer

    # An explicit empty list: with None, aiortc falls back to a public Google STUN server, which an offline
    # LAN cannot reach (gathering then waits for its timeout before every answer).
    return RTCConfiguration(iceServers=[RTCIceServer(urls=s.url, username=s.username, credential=s.credential)
                                        for s in servers])


def allow_loopback_candidates() -> None:
    """Offer 127.0.0.1 as a host candidate when it is the only address this machine has.

    aioice skips loopback addresses, so in a loopback-only network namespace (CI sandboxes, a meeting box
    with its network down) no candidate at all would be gathered and no peer could connect, not even one on
    the same machine. With any real interface present, nothing changes.
    """
    import aioice.ice

    original = aioice.ice.get_host_addresses
    if getattr(original, "edgeomni_loopback", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return addresses or (["127.0.0.1"] if use_ipv4 else [])

    get_host_addresses.edgeomni_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses
