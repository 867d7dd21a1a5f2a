"""The record schema the trainer accepts: common fields, then fields per kind. Reasons name the field.

A record that passes is one the dataset can store: its text is valid UTF-8 (JSON lets a lone surrogate through),
its numbers fit a float, it nests no deeper than `MAX_DEPTH`, and every media field is a base64 string.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
import time
from typing import Any

from edgeomni.sync.config import TOPIC_SAFE
from edgeomni.trainer.media import png_size, wav_info

NUMBER = (int, float)
# kind -> {field: expected type(s)} inside `data`
REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "caption": {"type": str, "text": str, "start": NUMBER, "end": NUMBER, "latency_ms": NUMBER},
    "metrics": {"scope": str, "latency_ms": dict},
    "counters": {"counters": dict},
    "error": {"message": str},
    "hard_example": {"text": str, "confidence": NUMBER, "start": NUMBER, "end": NUMBER},
}
# hard_example data.modality (absent = "speech", as devices before the vision side sent) -> its own fields
HARD_EXAMPLE_MODALITIES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "speech": {"audio_wav_b64": str},
    "vision": {"image_png_b64": str, "labels": list},
}
MAX_FUTURE_S = 86400.0  # device clocks drift, but a record from tomorrow is a bug
MAX_DEPTH = 16  # a record's data nests 4 levels deep; deeper is a device bug or an attack on the JSON codec
# data fields holding media (base64) -> the dataset's binary column
BLOB_FIELDS = {"audio_wav_b64": "audio_wav", "thumbnail_png_b64": "thumbnail_png", "image_png_b64": "image_png"}
_MEDIA_CHECKS = {"audio_wav_b64": wav_info, "thumbnail_png_b64": png_size, "image_png_b64": png_size}
# hard_example fields that `build-sets` groups frames by: a scene number, and the source and stream names
_SCENE_FIELDS: dict[str, tuple[type, ...]] = {"scene": (int, type(None)), "source": (str, type(None)),
                                               "stream": (str, type(None))}


class SchemaError(ValueError):
    pass


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SchemaError(message)


def _typed(value: Any, expected: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # bool is an int subclass; never a valid number or string here
        return expected is bool
    if not isinstance(value, expected):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return not isinstance(value, int) or abs(value) <= sys.float_info.max  # stored as a float


def validate_record(record: Any, fleet: str, device: str, kind: str) -> dict[str, Any]:
    """Check one record from topic edgeomni/<fleet>/<device>/<kind>; returns it, or raises SchemaError."""
    _require(isinstance(record, dict), f"record is {type(record).__name__}, expected an object")
    for name, expected in (("id", str), ("kind", str), ("fleet", str), ("device", str), ("ts", NUMBER),
                           ("data", dict)):
        _require(name in record, f"missing field {name!r}")
        _require(_typed(record[name], expected), f"field {name!r}: expected {_name(expected)}, "
                 f"got {type(record[name]).__name__} {str(record[name])[:40]!r}")
    _require(8 <= len(record["id"]) <= 64 and TOPIC_SAFE.match(record["id"]) is not None,
             f"field 'id': expected 8-64 of [A-Za-z0-9._-], got {record['id'][:70]!r}")
    _require(record["kind"] in REQUIRED, f"field 'kind': unknown {record['kind']!r} (known: {', '.join(REQUIRED)})")
    _require(record["kind"] == kind, f"field 'kind' is {record['kind']!r} but the topic says {kind!r}")
    _require(record["fleet"] == fleet, f"field 'fleet' is {record['fleet']!r} but the topic says {fleet!r}")
    _require(record["device"] == device, f"field 'device' is {record['device']!r} but the topic says {device!r}")
    _require(0 < record["ts"] < time.time() + MAX_FUTURE_S, f"field 'ts': {record['ts']!r} is not a plausible time")
    data = record["data"]
    for name, expected in REQUIRED[kind].items():
        _require(name in data, f"{kind} record: missing data.{name}")
        _require(_typed(data[name], expected), f"{kind} record: data.{name} expected {_name(expected)}, "
                 f"got {type(data[name]).__name__}")
    _check_storable(data, "data", 0)
    for name in BLOB_FIELDS:
        if name in data:
            blob = _blob(data, name)
            try:
                _MEDIA_CHECKS[name](blob)
            except ValueError as exc:
                raise SchemaError(f"{kind} record: data.{name}: {exc}") from None
    if kind == "hard_example":
        _check_hard_example(data)
    return record


def _check_storable(value: Any, where: str, depth: int) -> None:
    """Text the dataset can write as UTF-8, nesting its JSON codec can take (numbers are checked by type)."""
    _require(depth <= MAX_DEPTH, f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _require(value.isascii() or _utf8(value), f"{where}: text that is not valid UTF-8 (a lone surrogate)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, f"{where} key", depth + 1)
            _check_storable(item, f"{where}.{key[:40]}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        _require(abs(value) <= sys.float_info.max, f"{where}: integer too large for a number column")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_hard_example(data: dict[str, Any]) -> None:
    modality = data.get("modality", "speech")
    _require(modality in HARD_EXAMPLE_MODALITIES, f"hard_example record: data.modality {str(modality)[:20]!r} "
             f"is not one of {', '.join(HARD_EXAMPLE_MODALITIES)}")
    for name, expected in HARD_EXAMPLE_MODALITIES[modality].items():
        _require(name in data, f"hard_example record ({modality}): missing data.{name}")
        _require(_typed(data[name], expected), f"hard_example record ({modality}): data.{name} expected "
                 f"{_name(expected)}, got {type(data[name]).__name__}")
    check_scene_fields(data)
    if modality == "vision":
        _require(all(isinstance(item, dict) and isinstance(item.get("label"), str) and _typed(item.get("score"), NUMBER)
                     for item in data["labels"]),
                 "hard_example record: data.labels expected a list of {label: string, score: number}")


def check_scene_fields(data: dict[str, Any]) -> None:
    """What `build-sets` groups frames by: a scene number and the source and stream names, each optional."""
    for name, expected in _SCENE_FIELDS.items():
        _require(not isinstance(data.get(name), bool) and isinstance(data.get(name), expected),
                 f"hard_example record: data.{name} expected {' or '.join(_name(t) for t in expected)}, "
                 f"got {type(data.get(name)).__name__}")


def _blob(data: dict[str, Any], name: str) -> bytes:
    _require(isinstance(data[name], str), f"data.{name} expected base64 text, got {type(data[name]).__name__}")
    try:
        return base64.b64decode(data[name], validate=True)
    except (binascii.Error, ValueError):
        raise SchemaError(f"data.{name} is not base64") from None


def _name(expected: type | tuple[type, ...]) -> str:
    if expected == NUMBER:
        return "number"
    return "null" if expected is type(None) else getattr(expected, "__name__", str(expected))
