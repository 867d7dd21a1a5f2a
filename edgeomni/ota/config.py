"""`[ota]` config: where a device listens for bundle announcements and which signer it trusts."""

from __future__ import annotations

from dataclasses import dataclass

from edgeomni.errors import ConfigError, OtaError
from edgeomni.ota.announcement import check_name
from edgeomni.ota.signing import load_public_key
from edgeomni.sync.config import BrokerAddress
from edgeomni.typed import check


@dataclass(frozen=True)
class OtaConfig:
    """Signed bundle updates. Off unless `broker` is set (here or with `edgeomni run --ota URL`).

    The device trusts only announcements on `edgeomni/<fleet>/bundles/<bundle>` whose bundle is signed by
    `public_key`; everything else about an announcement is checked, never believed.
    """

    broker: str = ""  # mqtt://[user:pass@]host[:port] or mqtts://...; "" = OTA off
    fleet: str = "default"  # the trusted fleet: only edgeomni/<fleet>/bundles/... is subscribed
    bundle: str = ""  # bundle name to follow; "" = the name of the bundle the device is running
    public_key: str = ""  # Ed25519 public key: base64 of its 32 raw bytes, or a PEM file path
    ca_file: str = ""  # CA certificate for mqtts:// (empty: the system's trust store)
    cache_dir: str = ""  # where new bundles are installed, one directory per name@version; "" = <cache>/bundles
    max_mb: float = 2048.0  # a larger download is aborted
    download_timeout_s: float = 600.0  # the whole download must finish within this
    allow_downgrade: bool = False  # accept a version older than the running one (rollback by re-announcing)

    @property
    def enabled(self) -> bool:
        return bool(self.broker)

    def validate(self, section: str = "ota") -> None:
        if self.broker:
            BrokerAddress.parse(self.broker, f"{section}.broker")
        for name in ("fleet", "bundle"):
            value = getattr(self, name)
            if value or name == "fleet":
                try:
                    check_name(name, value, where=section)
                except OtaError as exc:
                    raise ConfigError(str(exc)) from None
        check(1.0 <= self.max_mb <= 100_000, f"{section}.max_mb", "1..100000 MB", self.max_mb)
        check(1.0 <= self.download_timeout_s <= 86_400, f"{section}.download_timeout_s", "1..86400 s",
              self.download_timeout_s)
        if self.enabled:
            check(bool(self.public_key), f"{section}.public_key",
                  "the publisher's Ed25519 public key when ota.broker is set (from `edgeomni bundle keygen`)",
                  self.public_key)
        if self.public_key:
            try:
                load_public_key(self.public_key)
            except OtaError as exc:
                raise ConfigError(f"{section}.public_key: {exc}") from None
