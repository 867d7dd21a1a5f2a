"""The bundle manifest: what a bundle holds and how each engine file is to be driven.

A bundle is a directory with ``manifest.json`` plus the files it names. The export stage writes it,
the runtime verifies and loads it, the trainer publishes it. The schema is checked field by field so
that a bad manifest fails with a message naming the component and field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeomni.errors import BundleError

FORMAT = "edgeomni-bundle/1"
MANIFEST_NAME = "manifest.json"

ENGINE_FORMATS = ("onnx", "ort", "tensorrt")
DATA_FORMATS = ("json", "txt", "npz")  # npz: numpy arrays (the glyph atlas of the video sink)
PRECISIONS = ("fp32", "fp16", "int8", "mixed", "n/a")


@dataclass
class TensorSpec:
    name: str
    shape: list[int | str]  # ints for fixed dims, strings for symbolic ones
    dtype: str

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> TensorSpec:
        if not isinstance(raw, dict):
            raise BundleError(f"{where}: expected an object with name/shape/dtype, got {raw!r}")
        _require(raw, ("name", "shape", "dtype"), where)
        if not isinstance(raw["shape"], list):
            raise BundleError(f"{where}.shape: expected a list, got {raw['shape']!r}")
        return cls(name=str(raw["name"]), shape=list(raw["shape"]), dtype=str(raw["dtype"]))


@dataclass
class StateSpec:
    """A recurrent tensor fed back from an output to an input between calls (e.g. VAD hidden state)."""

    input: str
    output: str
    shape: list[int | str]
    dtype: str = "float32"


@dataclass
class Component:
    name: str
    role: str
    file: str
    sha256: str
    size: int
    format: str
    precision: str
    license: str
    provenance: dict[str, Any]
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    state: list[StateSpec] = field(default_factory=list)
    preprocess: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def is_engine(self) -> bool:
        return self.format in ENGINE_FORMATS

    @classmethod
    def from_dict(cls, name: str, raw: Any) -> Component:
        where = f"component {name!r}"
        if not isinstance(raw, dict):
            raise BundleError(f"{where}: expected an object, got {type(raw).__name__}")
        _require(raw, ("role", "file", "sha256", "size", "format", "precision", "license", "provenance"), where)
        if raw["format"] not in ENGINE_FORMATS + DATA_FORMATS:
            raise BundleError(
                f"{where}.format: expected one of {ENGINE_FORMATS + DATA_FORMATS}, got {raw['format']!r}"
            )
        if raw["precision"] not in PRECISIONS:
            raise BundleError(f"{where}.precision: expected one of {PRECISIONS}, got {raw['precision']!r}")
        sha = raw["sha256"]
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise BundleError(f"{where}.sha256: expected 64 lowercase hex digits, got {sha!r}")
        if not isinstance(raw["size"], int) or raw["size"] < 0:
            raise BundleError(f"{where}.size: expected a non-negative integer, got {raw['size']!r}")
        file = raw["file"]
        if not isinstance(file, str) or file.startswith("/") or ".." in Path(file).parts:
            raise BundleError(f"{where}.file: expected a relative path inside the bundle, got {file!r}")
        provenance = raw["provenance"]
        if not isinstance(provenance, dict) or "package" not in provenance or "version" not in provenance:
            raise BundleError(f"{where}.provenance: expected {{package, version, ...}}, got {provenance!r}")
        if raw["format"] in ENGINE_FORMATS and not raw.get("inputs"):
            raise BundleError(f"{where}.inputs: an engine component must list its inputs")
        return cls(
            name=name,
            role=str(raw["role"]),
            file=file,
            sha256=sha,
            size=raw["size"],
            format=raw["format"],
            precision=raw["precision"],
            license=str(raw["license"]),
            provenance=dict(provenance),
            inputs=[TensorSpec.from_dict(t, f"{where}.inputs[{i}]") for i, t in enumerate(raw.get("inputs", []))],
            outputs=[
                TensorSpec.from_dict(t, f"{where}.outputs[{i}]") for i, t in enumerate(raw.get("outputs", []))
            ],
            state=[_state_from_dict(s, f"{where}.state[{i}]") for i, s in enumerate(raw.get("state", []))],
            preprocess=dict(raw.get("preprocess", {})),
            report=dict(raw.get("report", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        del raw["name"]
        return raw


@dataclass
class Manifest:
    name: str
    version: str
    created: str
    components: dict[str, Component]
    format: str = FORMAT
    calibration: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    # A release counter the publisher raises with every bundle it signs (`bundle sign --sequence N`); signed with
    # the manifest, it lets a device refuse an older bundle whatever its version string says. Absent: none.
    sequence: int | None = None

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            raise BundleError(
                f"bundle {self.name!r} has no component {name!r} (it has: {', '.join(sorted(self.components))})"
            ) from None

    def by_role(self, role: str) -> Component:
        matches = [c for c in self.components.values() if c.role == role]
        if not matches:
            roles = sorted({c.role for c in self.components.values()})
            raise BundleError(f"bundle {self.name!r} has no component with role {role!r} (roles: {roles})")
        return matches[0]

    def has_role(self, role: str) -> bool:
        return any(c.role == role for c in self.components.values())

    @classmethod
    def from_dict(cls, raw: Any, source: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(raw, dict):
            raise BundleError(f"{source}: expected a JSON object at the top level")
        _require(raw, ("format", "name", "version", "created", "components"), source)
        if raw["format"] != FORMAT:
            raise BundleError(f"{source}.format: expected {FORMAT!r}, got {raw['format']!r}")
        if not isinstance(raw["components"], dict) or not raw["components"]:
            raise BundleError(f"{source}.components: expected a non-empty object")
        components = {name: Component.from_dict(name, c) for name, c in raw["components"].items()}
        sequence = raw.get("sequence")
        if sequence is not None and (isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0):
            raise BundleError(f"{source}.sequence: expected a non-negative integer, got {sequence!r}")
        return cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            created=str(raw["created"]),
            components=components,
            calibration=dict(raw.get("calibration", {})),
            notes=str(raw.get("notes", "")),
            sequence=sequence,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            **({"sequence": self.sequence} if self.sequence is not None else {}),
            "created": self.created,
            "notes": self.notes,
            "calibration": self.calibration,
            "components": {name: c.to_dict() for name, c in self.components.items()},
        }

    def save(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)  # atomic: a half-written manifest never exists
        return path

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_NAME
        if not directory.is_dir():
            raise BundleError(f"bundle directory {directory} does not exist (build one: edgeomni bundle build-default)")
        if not path.is_file():
            raise BundleError(f"{path}: missing; {directory} is not a bundle")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(raw, source=str(path))


def _require(raw: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in raw]
    if missing:
        raise BundleError(f"{where}: missing field(s) {', '.join(missing)}")


def _state_from_dict(raw: Any, where: str) -> StateSpec:
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: expected an object, got {raw!r}")
    _require(raw, ("input", "output", "shape"), where)
    return StateSpec(input=raw["input"], output=raw["output"], shape=list(raw["shape"]),
                     dtype=str(raw.get("dtype", "float32")))
