"""Messages a broken or hostile device can send whose records passed the trainer's old checks and then failed at
storage (or stopped the JSON codec): shared by the ingest unit tests and the fault test against a real broker."""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

from edgeomni.sync.codec import encode_batch


def caption(fleet: str = "test", device: str = "dev-a", **data: Any) -> dict[str, Any]:
    return {"id": f"rec-{device}-{time.monotonic_ns()}", "kind": "caption", "fleet": fleet, "device": device,
            "ts": time.time(), "data": {"type": "final", "text": "hello", "start": 0.0, "end": 1.0,
                                        "latency_ms": 80.0, **data}}


def _raw(records_json: str) -> bytes:
    """A payload written by hand: JSON the device's encoder would never produce."""
    return zlib.compress(('{"v":1,"records":[' + records_json + "]}").encode())


def unstorable(fleet: str = "test", device: str = "dev-a") -> dict[str, bytes]:
    """name -> a payload for topic edgeomni/<fleet>/<device>/caption holding one such record."""
    def one(**data: Any) -> str:
        return json.dumps(caption(fleet, device, **data))

    return {
        "lone surrogate in a string": _raw(one(text="x").replace('"x"', '"\\ud800"')),
        "integer too large for a float": _raw(one().replace("80.0", "1" + "0" * 400)),
        "integer past Python's digit limit": _raw(one().replace("80.0", "1" * 5000)),
        "thumbnail that is not a string": encode_batch([caption(fleet, device, thumbnail_png_b64=12)]),
        "thumbnail badly padded": encode_batch([caption(fleet, device, thumbnail_png_b64="iVBORw0KGgo")]),
        "deep nesting": zlib.compress(b"[" * 100_000),
        "nesting deeper than a record needs": _raw(one(extra="N").replace('"N"', "[" * 900 + "]" * 900)),
    }
