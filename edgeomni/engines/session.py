"""One place that turns an engine file into an inference session, with provider fallback.

TensorRT -> CUDA -> CPU: the first provider that this onnxruntime build offers wins, so the same
bundle runs on a Jetson (TensorRT EP), a desktop GPU (CUDA EP) and a laptop (CPU EP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# Providers a forced backend leaves to the models that have no choice of backend (VAD, ASR, ...).
_BACKEND_PROVIDERS = {"cpu": ("CPUExecutionProvider",), "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider")}


@dataclass(frozen=True)
class EngineProfile:
    """How engines are run on this device: which providers are allowed and how many threads each uses."""

    providers: tuple[str, ...] = PROVIDER_ORDER
    intra_op_threads: int = 1
    backend: str = "auto"

    def available(self) -> list[str]:
        offered = set(ort.get_available_providers())
        allowed = _BACKEND_PROVIDERS.get(self.backend, PROVIDER_ORDER)
        chosen = [p for p in self.providers if p in offered and p in allowed]
        return chosen or ["CPUExecutionProvider"]


def create_session(path: Path, profile: EngineProfile | None = None) -> ort.InferenceSession:
    profile = profile or EngineProfile()
    options = ort.SessionOptions()
    # One thread per session by default: several engines share 2 cores, and the pipeline already runs
    # them concurrently in a thread pool; inner parallelism would only fight over the same cores.
    options.intra_op_num_threads = profile.intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=profile.available())
