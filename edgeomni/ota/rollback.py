"""The newest bundle a device ever installed, per bundle name, kept on disk so a restart does not forget it.

Without it, a device restarted on its old bundle would accept a replayed, older signed announcement again:
the version check only knew the running bundle. `installed.json` in the OTA cache directory holds, per name,
the highest version (SemVer order, `version_key`) and the highest signed release `sequence` installed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edgeomni.bundle.manifest import Manifest
from edgeomni.errors import OtaError
from edgeomni.ota.announcement import version_key

log = logging.getLogger("edgeomni.ota")

RECORD_NAME = "installed.json"


@dataclass(frozen=True)
class Newest:
    version: str
    sequence: int | None


class ReleaseFloor:
    """Refuses what is older than the newest installed (or running) bundle of a name; records installs."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = Path(cache_dir) / RECORD_NAME

    def newest(self, name: str, running: Manifest | None = None) -> Newest | None:
        raw = self._load().get(name)
        seen = [Newest(str(raw["version"]), raw.get("sequence"))] if isinstance(raw, dict) and "version" in raw else []
        if running is not None and running.name == name:
            seen.append(Newest(running.version, running.sequence))
        if not seen:
            return None
        sequences = [s.sequence for s in seen if isinstance(s.sequence, int)]
        return Newest(max((s.version for s in seen), key=version_key), max(sequences) if sequences else None)

    def check_version(self, name: str, version: str, running: Manifest) -> None:
        """Before downloading: the announced version must not be older than the running or newest installed."""
        newest = self.newest(name, running)
        assert newest is not None  # the running bundle counts
        if version_key(version) >= version_key(newest.version):
            return
        if version_key(newest.version) == version_key(running.version):
            raise OtaError(f"announcement.version: {version} is older than the running {running.version} "
                           "(set ota.allow_downgrade = true to accept rollbacks)")
        raise OtaError(f"announcement.version: {version} is older than {newest.version}, the newest this device "
                       "installed (set ota.allow_downgrade = true to accept rollbacks)")

    def check_sequence(self, manifest: Manifest, running: Manifest) -> None:
        """After the signature verified: the signed release sequence must not go back."""
        newest = self.newest(manifest.name, running)
        if newest is None or newest.sequence is None:
            return
        if manifest.sequence is None or manifest.sequence < newest.sequence:
            raise OtaError(f"{manifest.name}@{manifest.version}: release sequence {manifest.sequence} is older than "
                           f"{newest.sequence}, the newest this device installed (a replayed old bundle; set "
                           "ota.allow_downgrade = true to accept rollbacks)")

    def record(self, manifest: Manifest) -> None:
        newest = self.newest(manifest.name, manifest)
        assert newest is not None
        records = self._load()
        records[manifest.name] = {"version": newest.version, "sequence": newest.sequence}
        tmp = self.path.with_name(f".{RECORD_NAME}.{os.getpid()}.tmp")
        with tmp.open("w") as fh:
            json.dump(records, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())  # the record must survive the power cut a rollback attack would follow
        tmp.replace(self.path)

    def _load(self) -> dict[str, object]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): only the running bundle's version counts", self.path, exc)
            return {}
        return raw if isinstance(raw, dict) else {}
