"""TensorRT's real Python API on a machine without TensorRT or a GPU.

NVIDIA's bindings wheel (`tensorrt-cu12-bindings`, a plain wheel on PyPI) holds the whole Python API as a
pybind11 module; only its native libraries (libnvinfer, its plugins, the ONNX parser) come from NVIDIA's own
index. The module needs ten C entry points from them and nothing else at import time, so `load_bindings`
compiles stub libraries exporting exactly the symbols the module imports, preloads them, and imports the real
module: every class, enum, method signature and property TensorRT's Python API has, with nothing behind it.

`CheckedModule` is then a `tensorrt` module for our code whose objects accept only what the real bindings
accept: a method that does not exist, an argument the signature does not have, a value of the wrong type or
an assignment to a read-only property fails with `ApiMisuse` naming the TensorRT version. What the calls *do*
(parse a model, build, run) is up to a `world` object (see trt_simulated_gpu.py); enums, Dims and other value
types are the real ones.
"""

from __future__ import annotations

import ctypes
import importlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

NATIVE_LIBS = ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser")
VALUE_TYPES = ("Dims", "Dims2", "Dims3", "Dims4", "DimsHW", "DimsExprs", "Permutation", "Weights")


class ApiMisuse(AssertionError):
    """Our code used TensorRT's Python API in a way the real bindings would refuse."""


def load_bindings(wheel: Path, work: Path) -> ModuleType:
    """Import the real `tensorrt_bindings` module from `wheel` with stub native libraries (built in `work`)."""
    unpacked = work / "wheel"
    if not unpacked.is_dir():
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
    module_so = next(unpacked.glob("tensorrt_bindings/tensorrt*.so"))
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", _tool("readelf", "-d", module_so))
    sonames = [n for n in needed if n.startswith(NATIVE_LIBS)]
    undefined = re.findall(r"^\s+U (\S+)$", _tool("nm", "-D", "--undefined-only", module_so), re.MULTILINE)
    symbols = sorted(s for s in undefined if "@" not in s and not s.startswith(("Py", "_Py", "dl")))
    source = work / "stub.c"
    source.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
    for soname in sonames:
        library = work / soname
        if not library.is_file():
            _tool("gcc", "-shared", "-fPIC", "-o", library, f"-Wl,-soname,{soname}", source)
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)  # satisfies the module's NEEDED entry by soname
    sys.path.insert(0, str(unpacked))
    return importlib.import_module("tensorrt_bindings")


def _tool(*argv: Any) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


# --- signatures from pybind11 docstrings ----------------------------------------------------------------------

def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([<{":
            depth += 1
        elif ch in ")]>}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


class Signature:
    """One overload: parameter names, their type strings, which have defaults, and the return type."""

    def __init__(self, params: list[tuple[str, str, bool]], returns: str) -> None:
        self.params, self.returns = params, returns

    @classmethod
    def all_of(cls, name: str, doc: str | None) -> list[Signature]:
        found = []
        for line in (doc or "").splitlines():
            match = re.match(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> (.+)$", line.strip())
            if not match or match.group(1) == "*args, **kwargs":
                continue
            params = []
            for part in _split_top(match.group(1)):
                head, _, default = part.partition(" = ")
                pname, _, ptype = head.partition(": ")
                params.append((pname.strip(), ptype.strip(), bool(default)))
            found.append(cls(params, match.group(2).strip()))
        return found

    @staticmethod
    def first_match(signatures: list[Signature], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> tuple[Signature, dict[str, Any]] | None:
        """The first overload that takes these arguments, with them bound by name."""
        for signature in signatures:
            bound = signature.bind(args, kwargs)
            if bound is not None:
                return signature, bound
        return None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """Arguments by name (self excluded), or None when this overload does not take them."""
        params = self.params[1:] if self.params and self.params[0][0] == "self" else self.params
        if len(args) > len(params):
            return None
        bound = {p[0]: a for p, a in zip(params, args, strict=False)}
        for key, value in kwargs.items():
            if key in bound or key not in {p[0] for p in params}:
                return None
            bound[key] = value
        if any(p[0] not in bound and not p[2] for p in params):
            return None
        types = {p[0]: p[1] for p in params}
        return bound if all(_accepts(types[k], v) for k, v in bound.items()) else None


def _accepts(type_text: str, value: Any) -> bool:
    """Would pybind11 convert `value` to this parameter type? (Unknown container types are not checked.)"""
    text = type_text.strip()
    optional = re.fullmatch(r"(?:typing\.)?Optional\[(.+)\]", text) or re.fullmatch(r"(.+) \| None", text)
    if optional:
        return value is None or _accepts(optional.group(1), value)
    if text in ("typing.SupportsInt", "int"):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if text in ("typing.SupportsFloat", "float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if text == "str":
        return isinstance(value, str)
    if text == "bool":
        return isinstance(value, bool)
    if text in ("bytes", "buffer", "collections.abc.Buffer", "typing_extensions.Buffer"):
        return isinstance(value, (bytes, bytearray, memoryview))
    if text in ("tuple", "list"):
        return isinstance(value, {"tuple": tuple, "list": list}[text])  # py::tuple refuses a list, and back
    match = re.fullmatch(r"tensorrt(?:_bindings)?\.tensorrt\.([\w.]+)", text)
    if not match:
        return True  # containers, callables, numpy arrays: not modelled
    return _is_instance(match.group(1), value)


_REAL: dict[str, Any] = {}  # the loaded module, for type checks


def _is_instance(class_path: str, value: Any) -> bool:
    real: Any = _REAL["trt"]
    for part in class_path.split("."):
        real = getattr(real, part)
    class_name = class_path.rsplit(".", 1)[-1]
    if isinstance(value, Checked):
        return issubclass(value.cls, real)
    if isinstance(value, real):
        return True
    if class_name in VALUE_TYPES and isinstance(value, (tuple, list)):
        try:
            real(value)  # pybind11's implicit conversion for value types
        except TypeError:
            return False
        return True
    return False


# --- checked stand-ins -----------------------------------------------------------------------------------------

class Checked:
    """An instance of TensorRT class `cls` as the real bindings define it; behaviour comes from `world`."""

    def __init__(self, cls: type, world: Any, **state: Any) -> None:
        object.__setattr__(self, "cls", cls)
        object.__setattr__(self, "world", world)
        object.__setattr__(self, "state", dict(state))

    def _where(self, name: str) -> str:
        return f"{self.cls.__name__}.{name} (TensorRT {_REAL['trt'].__version__})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        real = getattr(self.cls, name, None)
        if real is None:
            raise ApiMisuse(f"{self._where(name)} does not exist")
        if isinstance(real, property):
            if name in self.state:
                return self.state[name]
            return self.world.get(self, name)
        signatures = Signature.all_of(name, real.__doc__)

        def method(*args: Any, **kwargs: Any) -> Any:
            match = Signature.first_match(signatures, args, kwargs)
            if match is not None:
                return self.world.call(self, name, match[1], match[0].returns)
            raise ApiMisuse(f"{self._where(name)} takes no such arguments: args={args!r} kwargs={kwargs!r}; "
                            f"the bindings say: {[s.params for s in signatures]}")
        return method

    def __setattr__(self, name: str, value: Any) -> None:
        real = getattr(self.cls, name, None)
        if not isinstance(real, property):
            raise ApiMisuse(f"{self._where(name)} is not a property")
        if real.fset is None:
            raise ApiMisuse(f"{self._where(name)} is read-only")
        setter_doc = real.fset.__doc__ or ""
        match = re.search(r"\(\w+: [^,]+, \w+: (.+)\) -> None", setter_doc)
        if match and not _accepts(match.group(1), value):
            raise ApiMisuse(f"{self._where(name)} = {value!r}: expected {match.group(1)}")
        self.state[name] = value

    def __bytes__(self) -> bytes:
        if "buffer" not in self.state:
            raise ApiMisuse(f"{self.cls.__name__} has no buffer")
        return bytes(self.state["buffer"])

    def __str__(self) -> str:
        return str(self.state.get("text", f"<{self.cls.__name__}>"))


class CheckedModule(ModuleType):
    """`import tensorrt` for our code: real enums, value types, base classes and functions; instances of the
    interface classes as Checked, created through the real constructors' signatures."""

    def __init__(self, trt: ModuleType, world: Any, subclassable: tuple[str, ...] = ("IProgressMonitor",)) -> None:
        super().__init__("tensorrt")
        _REAL["trt"] = trt
        self._trt, self._world, self._subclassable = trt, world, subclassable
        self.__version__ = trt.__version__

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        real = getattr(self._trt, name, None)
        if real is None:
            raise ApiMisuse(f"tensorrt.{name} does not exist in TensorRT {self._trt.__version__}")
        if isinstance(real, type) and name not in self._subclassable and name not in VALUE_TYPES \
                and "__members__" not in vars(real):
            return _CheckedClass(real, self._world)
        return real  # enums, Dims, nptype, the monitor base our code subclasses


class _CheckedClass:
    """A TensorRT class: its enums/constants are the real ones; calling it checks the constructor signature."""

    def __init__(self, cls: type, world: Any) -> None:
        self.cls, self.world = cls, world

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.cls, name, None)
        if real is None:
            raise ApiMisuse(f"tensorrt.{self.cls.__name__}.{name} does not exist in TensorRT "
                            f"{_REAL['trt'].__version__}")
        return real

    def __call__(self, *args: Any, **kwargs: Any) -> Checked:
        signatures = Signature.all_of("__init__", self.cls.__init__.__doc__)
        match = Signature.first_match(signatures, args, kwargs)
        if match is not None:
            return self.world.construct(self.cls, match[1])
        raise ApiMisuse(f"tensorrt.{self.cls.__name__}{args!r} matches no constructor: "
                        f"{[s.params for s in signatures]}")
