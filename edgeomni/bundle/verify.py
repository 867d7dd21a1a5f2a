"""Bundle verification: the runtime loads nothing that fails these checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgeomni.bundle.manifest import Manifest
from edgeomni.errors import BundleError

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose manifest parsed and whose every file matched its size and sha256."""

    path: Path
    manifest: Manifest

    def file(self, component: str) -> Path:
        return self.path / self.manifest.component(component).file

    def role_file(self, role: str) -> Path:
        return self.path / self.manifest.by_role(role).file


def verify_bundle(directory: Path | str) -> VerifiedBundle:
    """Check the manifest schema and every file's size and sha256; raise BundleError naming the first bad one.

    All components are checked, and every problem is reported in one message, so that a user fixing a
    broken bundle sees the whole list at once.
    """
    path = Path(directory).expanduser()
    manifest = Manifest.load(path)
    root = path.resolve()
    problems: list[str] = []
    for name, comp in manifest.components.items():
        target = path / comp.file
        if not target.resolve().is_relative_to(root):
            # A link out of the bundle: the sha256 matches today, but whoever can write there changes the bundle.
            problems.append(f"component {name!r} ({comp.role}): {comp.file} leads outside the bundle "
                            f"(to {target.resolve()}); bundle files must live inside it")
            continue
        if not target.is_file():
            problems.append(f"component {name!r} ({comp.role}): file {comp.file} is missing")
            continue
        size = target.stat().st_size
        if size != comp.size:
            problems.append(f"component {name!r} ({comp.role}): {comp.file} size expected {comp.size}, got {size}")
            continue
        digest = sha256_of(target)
        if digest != comp.sha256:
            problems.append(
                f"component {name!r} ({comp.role}): {comp.file} sha256 expected {comp.sha256[:16]}…, "
                f"got {digest[:16]}… (the file was changed)"
            )
    if problems:
        raise BundleError(f"bundle {path} failed verification:\n  " + "\n  ".join(problems))
    return VerifiedBundle(path=path, manifest=manifest)
