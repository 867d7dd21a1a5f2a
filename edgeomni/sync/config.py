"""`[sync]` config and broker URLs: mqtt://user:pass@host:port (plain) or mqtts://... (TLS)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, replace
from urllib.parse import unquote, urlsplit

from edgeomni.credentials import MQTT_PASSWORD_ENV, read_secret, redact_url, secret
from edgeomni.errors import ConfigError
from edgeomni.sync.codec import MAX_RECORDS, TRAINER_MAX_KB
from edgeomni.typed import check

TOPIC_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # no MQTT wildcards or separators in fleet/device names
COMPRESSIONS = ("zlib", "none")


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str
    password: str

    @classmethod
    def parse(cls, url: str, where: str = "broker URL") -> BrokerAddress:
        parts = urlsplit(url)
        shown = f"{where} {redact_url(url)!r}"  # an error message must not carry the password
        check(parts.scheme in ("mqtt", "mqtts"), shown, "scheme mqtt:// or mqtts://", parts.scheme)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{shown}: port is not a number 1..65535") from None
        check(bool(parts.hostname), shown, "a host name", parts.hostname)
        check(parts.path in ("", "/"), shown, "no path after host:port",
              parts.path if "@" not in parts.path else "a path (not shown: a password with '/' in it?)")
        tls = parts.scheme == "mqtts"
        return cls(str(parts.hostname), port or (8883 if tls else 1883), tls,
                   unquote(parts.username or ""), unquote(parts.password or ""))

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def with_password(self, password_file: str | None, where: str) -> BrokerAddress:
        """A user named without a password gets it from `password_file`, else $EDGEOMNI_MQTT_PASSWORD."""
        if not self.username or self.password:
            return self
        return replace(self, password=secret(None, password_file, MQTT_PASSWORD_ENV, where) or "")


@dataclass(frozen=True)
class SyncConfig:
    """Outbox -> MQTT. Credentials in the broker URL win over username/password here; a user without a password
    gets it from `password_file`, else $EDGEOMNI_MQTT_PASSWORD (never on the command line, where `ps` shows it)."""

    broker: str = ""  # mqtt://[user:pass@]host[:port] or mqtts://...; "" = sync off
    fleet: str = "default"
    device: str = ""  # "" = this machine's host name
    username: str = ""
    password: str = ""
    password_file: str = ""  # a file holding the password (first line)
    ca_file: str = ""  # TLS: CA bundle that signed the broker's certificate
    cert_file: str = ""  # TLS client certificate (per-device credentials), with key_file
    key_file: str = ""
    batch_size: int = 200  # records per MQTT message
    max_batch_kb: int = 512  # and at most this much JSON per message, envelopes included (one bigger record goes alone)
    compression: str = "zlib"
    inflight: int = 16  # messages published but not yet acknowledged
    keepalive_s: int = 30
    backoff_min_s: float = 0.5  # reconnect delay doubles from this ...
    backoff_max_s: float = 60.0  # ... up to this
    drain_timeout_s: float = 10.0  # at the end of `edgeomni run`, wait this long for the outbox to empty

    def validate(self, section: str = "sync") -> None:
        if self.broker:
            BrokerAddress.parse(self.broker, f"{section}.broker")
        if self.password_file:
            read_secret(self.password_file, f"{section}.password_file")
        check(bool(TOPIC_SAFE.match(self.fleet)), f"{section}.fleet", "1-64 of [A-Za-z0-9._-]", self.fleet)
        check(self.device == "" or (bool(TOPIC_SAFE.match(self.device)) and self.device != "bundles"),
              f"{section}.device", "1-64 of [A-Za-z0-9._-], not 'bundles'", self.device)
        check(bool(self.cert_file) == bool(self.key_file), f"{section}.cert_file/key_file", "both or neither",
              (self.cert_file, self.key_file))
        check(1 <= self.batch_size <= MAX_RECORDS, f"{section}.batch_size", f"1..{MAX_RECORDS}", self.batch_size)
        check(1 <= self.max_batch_kb <= TRAINER_MAX_KB, f"{section}.max_batch_kb",
              f"1..{TRAINER_MAX_KB} (the trainer refuses bigger messages by default)", self.max_batch_kb)
        check(self.compression in COMPRESSIONS, f"{section}.compression", f"one of {COMPRESSIONS}", self.compression)
        check(1 <= self.inflight <= 1000, f"{section}.inflight", "1..1000", self.inflight)
        check(5 <= self.keepalive_s <= 3600, f"{section}.keepalive_s", "5..3600", self.keepalive_s)
        check(0.05 <= self.backoff_min_s <= self.backoff_max_s <= 3600, f"{section}.backoff_min_s/backoff_max_s",
              "0.05 <= min <= max <= 3600", (self.backoff_min_s, self.backoff_max_s))
        check(0.0 <= self.drain_timeout_s <= 3600, f"{section}.drain_timeout_s", "0..3600", self.drain_timeout_s)

    def device_id(self) -> str:
        device = self.device or socket.gethostname().split(".")[0]
        if not TOPIC_SAFE.match(device):
            raise ConfigError(f"sync.device: host name {device!r} is not topic-safe; set [sync] device or --device")
        return device

    def address(self) -> BrokerAddress:
        address = BrokerAddress.parse(self.broker, "sync.broker")
        if not address.username and self.username:
            address = replace(address, username=self.username, password=self.password)
        return address.with_password(self.password_file, "sync.password_file")
