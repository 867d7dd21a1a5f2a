"""A reader for CTranslate2's model.bin (binary version 6), written from the format that CTranslate2's
python/ctranslate2/specs/model_spec.py writes: header, named variables (shape, dtype id, raw bytes), aliases.

CTranslate2's Python API loads a model for inference only and exposes no weights, hence this reader.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edgeomni.errors import ExportError

SUPPORTED_BINARY_VERSIONS = (5, 6)
# CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 is read as its upper float32 half.
_DTYPES: dict[int, np.dtype] = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
                                4: np.dtype("<f2"), 5: np.dtype("<u2")}
_BFLOAT16 = 5


class _Cursor:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.offset, self.path = data, 0, path

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise ExportError(f"{self.path}: truncated CTranslate2 model at byte {self.offset}")
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return int(value)

    def string(self) -> str:
        length = self.unpack("<H")  # includes the trailing NUL
        raw = self.take(length)
        return raw[:-1].decode("utf-8")

    def take(self, length: int) -> bytes:
        if self.offset + length > len(self.data):
            raise ExportError(f"{self.path}: truncated CTranslate2 model at byte {self.offset} "
                              f"(wanted {length} more bytes, file has {len(self.data)})")
        raw = self.data[self.offset : self.offset + length]
        self.offset += length
        return raw


def read_ct2_model(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Return (spec name, variables) of a CTranslate2 model.bin; aliases are resolved to their targets."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"CTranslate2 model file {path} does not exist")
    cursor = _Cursor(path.read_bytes(), path)
    version = cursor.unpack("<I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ExportError(f"{path}: CTranslate2 binary version {version}, this reader knows "
                          f"{SUPPORTED_BINARY_VERSIONS}")
    spec = cursor.string()
    cursor.unpack("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(cursor.unpack("<I")):
        name = cursor.string()
        shape = [cursor.unpack("<I") for _ in range(cursor.unpack("<B"))]
        dtype_id = cursor.unpack("<B")
        nbytes = cursor.unpack("<I")
        if dtype_id not in _DTYPES:
            raise ExportError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        dtype = _DTYPES[dtype_id]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise ExportError(f"{path}: variable {name!r} shape {shape} {dtype} needs {expected} bytes, "
                              f"the file says {nbytes}")
        array = np.frombuffer(cursor.take(nbytes), dtype=dtype).reshape(shape)
        if dtype_id == _BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
    for _ in range(cursor.unpack("<I")):
        alias, target = cursor.string(), cursor.string()
        if target not in variables:
            raise ExportError(f"{path}: alias {alias!r} points at missing variable {target!r}")
        variables[alias] = variables[target]
    if cursor.offset != len(cursor.data):
        raise ExportError(f"{path}: {len(cursor.data) - cursor.offset} unexpected trailing bytes")
    return spec, variables
