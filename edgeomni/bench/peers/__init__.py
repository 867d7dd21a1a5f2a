"""Peers that `bench speech` measures EdgeOmni against, each driven the way its own project streams.

Every peer is fed the same 16 kHz mono audio in 32 ms chunks by the harness's pacer and reports its
outputs through `emit(kind, text, seen_arrival)`: `seen_arrival` is the arrival time of the last chunk
the output had seen when its computation started, so every system's latency is measured alike.

The peers' packages are optional (`pip install -r requirements/bench.txt`); each module imports its
package only in `load()` and the runtime never imports this package.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.errors import EdgeOmniError

Emit = Callable[[str, str, float], None]
"""emit(kind, text, seen_arrival): kind is "partial" or "final"."""

BENCH_HINT = "pip install -r requirements/bench.txt"


class PeerUnavailable(EdgeOmniError):
    """A peer's package (or the model inside it) is not installed."""


@dataclass(slots=True)
class Chunk:
    samples: np.ndarray  # float32, 16 kHz mono
    pts: float  # media seconds of the first sample
    arrival: float  # time.monotonic() when the pacer delivered it (when its last sample was due)


class Peer(ABC):
    name: str = "peer"

    def __init__(self) -> None:
        self.emit: Emit = lambda kind, text, seen: None

    @abstractmethod
    def load(self) -> dict[str, Any]:
        """Load the model (not timed as streaming work); return what the report should say about it."""

    @abstractmethod
    def begin(self) -> None:
        """A new stream starts: reset every per-stream state."""

    @abstractmethod
    def feed(self, chunks: list[Chunk]) -> None:
        """Chunks delivered since the last call (more than one when the peer is behind), oldest first."""

    @abstractmethod
    def end(self, arrival: float) -> None:
        """End of stream: emit the final for any speech still in progress."""


PEERS: dict[str, str] = {
    "moonshine-voice": "edgeomni.bench.peers.moonshine_voice:MoonshineVoicePeer",
    "faster-whisper": "edgeomni.bench.peers.faster_whisper:FasterWhisperPeer",
    "pocketsphinx": "edgeomni.bench.peers.pocketsphinx:PocketsphinxPeer",
}


def make_peer(name: str) -> Peer:
    if name not in PEERS:
        raise EdgeOmniError(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
    module, _, cls = PEERS[name].partition(":")
    peer: Peer = getattr(importlib.import_module(module), cls)()
    return peer


def require(module: str, package: str) -> Any:
    """Import a peer's package, or fail with a message that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerUnavailable(f"peer needs the {package} package ({exc}); {BENCH_HINT}") from exc


def package_file(distribution: str, relative: str) -> Path:
    """A file shipped inside an installed distribution, found without importing it."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise PeerUnavailable(f"the {distribution} package is not installed; {BENCH_HINT}") from exc
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise PeerUnavailable(f"{path} is missing from {distribution} {dist.version}; {BENCH_HINT}")
    return path


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


__all__ = ["BENCH_HINT", "PEERS", "Chunk", "Emit", "Peer", "PeerUnavailable", "make_peer", "package_file",
           "require", "to_pcm16", "version"]
