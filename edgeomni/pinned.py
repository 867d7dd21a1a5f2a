"""Files that ship inside pinned registry packages (wheels): weights for the export stage, sample media for the
data sets. Where a file is in the installed wheel, checked against the pin, and the provenance a manifest records
for it. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeomni.errors import ExportError


@dataclass(frozen=True)
class PinnedFile:
    package: str
    version: str
    relpath: str
    license: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"



# The voice activity detector the default and the speech bundles both carry.
VAD = PinnedFile("silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx", "MIT")


def locate(pinned: PinnedFile) -> Path:
    """Path of a file inside an installed wheel, checked against the pin, without importing the package.

    Importing is avoided on purpose: silero_vad's __init__ imports torch, and moonshine_voice loads a
    native library; only the data files are wanted.
    """
    try:
        dist = importlib.metadata.distribution(pinned.package)
    except importlib.metadata.PackageNotFoundError:
        raise ExportError(
            f"weights package {pinned.package}=={pinned.version} is not installed; install it with: {pinned.install}"
        ) from None
    if dist.version != pinned.version:
        raise ExportError(
            f"weights package {pinned.package} is version {dist.version}, the bundle needs {pinned.version} "
            f"(other versions ship different or no weights); install it with: {pinned.install}"
        )
    path = Path(str(dist.locate_file(pinned.relpath)))
    if not path.is_file():
        raise ExportError(
            f"{pinned.package}=={pinned.version} is installed but {pinned.relpath} is missing from it; "
            f"reinstall it with: {pinned.install} --force-reinstall"
        )
    return path


def provenance(pinned: PinnedFile, **extra: Any) -> dict[str, Any]:
    return {"package": pinned.package, "version": pinned.version, "file": pinned.relpath, **extra}
