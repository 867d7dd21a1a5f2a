"""Shared fixtures. The default bundle is built once per session (or reused from the cache) and shared."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from mqtt_broker import mqtt_broker  # noqa: F401 - private Mosquitto fixture factory for the sync/OTA tests
from trt_bindings import CheckedModule, load_bindings
from trt_simulated_gpu import SimulatedCudart, SimulatedGpu

from edgeomni.engines import tensorrt_runner


@pytest.fixture(scope="session")
def default_bundle() -> Path:
    """The default bundle at edgeomni.paths.default_bundle_dir() (EDGEOMNI_BUNDLE / EDGEOMNI_CACHE honoured).

    Built on first use (about 25 s on 2 cores) and reused afterwards; tests must not modify it, use
    tmp_bundle_copy for that.
    """
    from edgeomni.export.default.build import build_default_bundle  # the export extra: imports torch and onnx

    return build_default_bundle()


@pytest.fixture
def tmp_bundle_copy(default_bundle: Path, tmp_path: Path) -> Path:
    """A private full copy (no hard links, so corrupting it cannot touch the shared bundle)."""
    target = tmp_path / "bundle"
    shutil.copytree(default_bundle, target, copy_function=shutil.copyfile)
    return target


# --- TensorRT's real Python API on a simulated GPU (tests/trt_bindings.py, tests/trt_simulated_gpu.py) ---------
TRT_BINDINGS_DIR = Path(__file__).resolve().parents[1] / ".venv" / "tensorrt-bindings"
TRT_RELEASES_FILE = Path(__file__).resolve().parents[1] / "requirements" / "tensorrt-bindings.txt"


def tensorrt_releases() -> list[str]:
    """The TensorRT releases the engine code is checked against (requirements/tensorrt-bindings.txt)."""
    return [line.strip() for line in TRT_RELEASES_FILE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def pinned_tensorrt() -> str:
    """The release of the `tensorrt` extra (pyproject.toml): the one checked in the main test process."""
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    return re.search(r'"tensorrt-cu12==([\d.]+)"', pyproject).group(1)


@pytest.fixture(scope="session")
def tensorrt_bindings(tmp_path_factory: pytest.TempPathFactory):
    """NVIDIA's real `tensorrt` Python module (EDGEOMNI_TRT_BINDINGS picks the release; default: the pinned one),
    imported with stub native libraries. One release per process: the others run in subprocesses."""
    release = os.environ.get("EDGEOMNI_TRT_BINDINGS", pinned_tensorrt())
    wheels = sorted(TRT_BINDINGS_DIR.glob(f"tensorrt_cu12_bindings-{release}-*.whl"))
    if not wheels:
        pytest.fail(f"no TensorRT {release} bindings wheel in {TRT_BINDINGS_DIR}: `make test` downloads them")
    return load_bindings(wheels[0], tmp_path_factory.mktemp(f"tensorrt-{release}"))


@pytest.fixture
def simulated_gpu(tensorrt_bindings, monkeypatch: pytest.MonkeyPatch):
    """`import tensorrt` gives the checked real API and the CUDA runtime a simulated H200, for this test only."""
    from cuda.bindings import runtime  # the `tensorrt` extra's cuda-python: absent on a runtime-only install

    cudart = SimulatedCudart(runtime)
    gpu = SimulatedGpu(tensorrt_bindings, cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", CheckedModule(tensorrt_bindings, gpu))
    monkeypatch.setattr(tensorrt_runner, "_cudart", lambda: cudart)
    return gpu
