"""Typed settings: dataclasses built from parsed TOML/YAML, each field checked against its type hint.

One loader for every settings file (run config, export recipes): an unknown field, a wrong type or a value out
of range is an error naming where it is (`recipe r.yaml: quantize.method: expected one of [...], got 'x'`), raised
as the caller's own error class so the CLI reports it as one clean line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, get_type_hints

from edgeomni.errors import ConfigError, EdgeOmniError


def check(ok: bool, where: str, expected: str, got: Any, error: type[EdgeOmniError] = ConfigError) -> None:
    """Raise `error("WHERE: expected EXPECTED, got GOT")` unless `ok`."""
    if not ok:
        raise error(f"{where}: expected {expected}, got {got!r}")


def one_of(value: Any, allowed: Iterable[Any], where: str, error: type[EdgeOmniError] = ConfigError) -> None:
    allowed = list(allowed)
    check(value in allowed, where, f"one of {allowed}", value, error)


def build(kind: type, raw: dict[str, Any], where: str, error: type[EdgeOmniError] = ConfigError,
          skip: Iterable[str] = (), numbers_as_text: bool = False) -> Any:
    """`kind(**raw)` with every field checked against `kind`'s type hints, nested dataclasses built the same way.
    `skip`: fields that never come from a file (set by the caller afterwards). `numbers_as_text`: a number given
    for a text field is taken as its text (YAML's `version: 2`); otherwise it is an error."""
    hints = get_type_hints(kind)
    skipped = set(skip)
    known = {f.name for f in dataclasses.fields(kind) if f.name not in skipped and not f.name.startswith("_")}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise error(f"{where}: unknown field(s) {unknown} (known: {sorted(known)})")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        hint = hints[name]
        spot = f"{where}: {name}" if ":" not in where else f"{where}.{name}"
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise error(f"{spot}: expected a mapping, got {value!r}")
            values[name] = build(hint, value, spot, error, numbers_as_text=numbers_as_text)
        else:
            values[name] = coerce(value, hint, spot, error, numbers_as_text)
    return kind(**values)


def coerce(value: Any, hint: Any, where: str, error: type[EdgeOmniError] = ConfigError,
           numbers_as_text: bool = False) -> Any:
    """`value` as the type `hint` names (int -> float and number -> str where meant), or `error` naming `where`."""
    origin = getattr(hint, "__origin__", None)
    if origin is dict:
        key_type, item = hint.__args__
        if item is Any:  # checked by the section's own spec
            if not isinstance(value, dict):
                raise error(f"{where}: expected a mapping, got {value!r}")
            return value
        if not isinstance(value, dict):
            raise error(f"{where}: expected a mapping of {key_type.__name__} to {item.__name__}, got {value!r}")
        return {coerce(k, key_type, f"{where} key", error, numbers_as_text):
                coerce(v, item, f"{where}.{k}", error, numbers_as_text) for k, v in value.items()}
    if origin in (list, tuple):
        item = hint.__args__[0]
        if not isinstance(value, list | tuple):
            raise error(f"{where}: expected a list of {item.__name__}, got {value!r}")
        items = [coerce(v, item, f"{where}[{i}]", error, numbers_as_text) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if numbers_as_text and hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise error(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


__all__ = ["build", "check", "coerce", "one_of"]
