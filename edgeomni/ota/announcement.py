"""The bundle announcement: what the trainer publishes (retained, QoS 1) and a device trusts only after checking.

Topic: ``edgeomni/<fleet>/bundles/<name>``. Payload (JSON)::

    {"name": "default", "version": "1.1.0", "url": "http://host:port/default-1.1.0.tar",
     "sha256": "<64 hex digits of the archive>", "signature": "<base64 Ed25519 over manifest.json>",
     "size": 63012352}

`size` is required: the download stops at exactly that many bytes (and never past the device's own limit).
Nothing in it is trusted by itself: the archive must hash to `sha256`, its manifest must carry this name and
version, and the signature must verify under the device's configured public key.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from edgeomni.errors import OtaError

TOPIC_PREFIX = "edgeomni"
MAX_ANNOUNCEMENT_BYTES = 16_384
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a path and topic component: no / + # or ..
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def bundle_topic(fleet: str, name: str) -> str:
    check_name("fleet", fleet)
    check_name("name", name)
    return f"{TOPIC_PREFIX}/{fleet}/bundles/{name}"


def check_name(field: str, value: Any, where: str = "announcement") -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
        raise OtaError(f"{where}.{field}: expected 1-64 characters of [A-Za-z0-9._-] starting with a letter or "
                       f"digit, got {value!r}")
    return value


@dataclass(frozen=True)
class Announcement:
    name: str
    version: str
    url: str
    sha256: str
    signature: str
    size: int

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, payload: bytes, where: str = "announcement") -> Announcement:
        if len(payload) > MAX_ANNOUNCEMENT_BYTES:
            raise OtaError(f"{where}: {len(payload)} bytes, expected at most {MAX_ANNOUNCEMENT_BYTES}")
        try:
            raw = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise OtaError(f"{where}: not valid JSON ({exc})") from None
        return cls.from_dict(raw, where)

    @classmethod
    def from_dict(cls, raw: Any, where: str = "announcement") -> Announcement:
        if not isinstance(raw, dict):
            raise OtaError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        missing = [k for k in ("name", "version", "url", "sha256", "signature", "size") if k not in raw]
        if missing:
            raise OtaError(f"{where}: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(raw) - {"name", "version", "url", "sha256", "signature", "size"})
        if unknown:
            raise OtaError(f"{where}: unknown field(s) {', '.join(unknown)}")
        check_name("name", raw["name"], where)
        check_name("version", raw["version"], where)
        url = raw["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise OtaError(f"{where}.url: expected an http:// or https:// URL, got {url!r}")
        if not isinstance(raw["sha256"], str) or not _SHA256.match(raw["sha256"]):
            raise OtaError(f"{where}.sha256: expected 64 lowercase hex digits, got {raw['sha256']!r}")
        if not isinstance(raw["signature"], str) or not raw["signature"]:
            raise OtaError(f"{where}.signature: expected a base64 string, got {raw['signature']!r}")
        size = raw["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise OtaError(f"{where}.size: expected a positive integer (bytes), got {size!r}")
        return cls(raw["name"], raw["version"], url, raw["sha256"], raw["signature"], size)


_SEMVER = re.compile(r"^v?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")

VersionKey = tuple[int, tuple[int, ...], int, tuple[tuple[int, int | str], ...]]


def version_key(version: str) -> VersionKey:
    """SemVer precedence: numeric parts compare as numbers (1.9.0 < 1.10.0, 1.0 == 1.0.0), a pre-release sorts
    below its release (1.0.0-rc1 < 1.0.0; its dot-separated parts numerically where both are numbers, numbers
    below words), build metadata (+...) is ignored. A version that is not SemVer-like at all ("dev",
    "nightly") sorts below every release: an unnumbered build never counts as newer than a numbered one."""
    match = _SEMVER.match(version)
    if match is None:
        return (0, (), 0, ((1, version),))
    numbers = tuple(int(p) for p in match.group(1).split("."))
    while len(numbers) > 1 and numbers[-1] == 0:  # 1.0 and 1.0.0 are one version
        numbers = numbers[:-1]
    pre = match.group(2)
    if pre is None:
        return (1, numbers, 1, ())
    return (1, numbers, 0, tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")))
