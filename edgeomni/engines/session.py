"""One place that turns an engine file into an inference session, with provider fallback.

TensorRT -> CUDA -> CPU: the first provider that this onnxruntime build offers wins, so the same
bundle runs on a Jetson (TensorRT EP), a desktop GPU (CUDA EP) and a laptop (CPU EP).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgeomni.paths import cache_root

SessionHook = Callable[[Path, Any], Any]
"""Given a model file and the session opened on it, the object the engine will call instead (e.g. a timer)."""
_session_hook: ContextVar[SessionHook | None] = ContextVar("edgeomni_session_hook", default=None)

EP_CACHE_KEEP_DAYS = 30
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


def tensorrt_ep_options(cache_dir: Path, *, int8: bool, fp16: bool,
                        profiles: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """onnxruntime's TensorRT EP settings for one model (option names as in libonnxruntime_providers_tensorrt).

    The EP builds a TensorRT engine for this GPU when the session starts, which takes seconds to minutes on a
    Jetson: the engine and timing caches keep it for the next start (`cache_dir` is per model content, since the
    EP keys its cache files by model path). A Q/DQ model needs INT8 enabled, or TensorRT refuses its Q/DQ layers
    ("int8 is not configured in the builder"); a model without Q/DQ must not have it (TensorRT would then want a
    calibration table). Explicit profiles (the export's, min/opt/max per input) spare the EP rebuilding the engine
    each time an input shape leaves the range it has seen."""
    options: dict[str, Any] = {
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir),
        "trt_int8_enable": int8, "trt_fp16_enable": fp16,
    }
    if profiles:
        for key in ("min", "opt", "max"):
            options[f"trt_profile_{key}_shapes"] = ",".join(
                f"{p['input']}:{'x'.join(str(int(d)) for d in p[key])}" for p in profiles)
    return options


def create_session(path: Path, profile: EngineProfile | None = None,
                   provider_options: Mapping[str, Mapping[str, Any]] | None = None) -> ort.InferenceSession:
    """`provider_options`: settings per provider name (e.g. `tensorrt_ep_options` for the TensorRT EP)."""
    profile = profile or EngineProfile()
    provider_options = provider_options or {}
    options = ort.SessionOptions()
    # One thread per session by default: several engines share 2 cores, and the pipeline already runs
    # them concurrently in a thread pool; inner parallelism would only fight over the same cores.
    options.intra_op_num_threads = profile.intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    chosen = profile.available()
    if "TensorrtExecutionProvider" in chosen and "TensorrtExecutionProvider" not in provider_options:
        # A model with no engine choice (VAD, ASR, faces) that the TensorRT EP takes: same precision as ever, but
        # its engine cached, or a Jetson rebuilds it at every start. Keyed by file identity, not content (no
        # hashing tens of MB at start-up): a replaced file has another size or mtime.
        stat = Path(path).stat()
        identity = hashlib.sha256(f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        try:
            cache = tensorrt_ep_cache(identity)
        except OSError:  # (an unwritable cache: the EP still runs, rebuilding its engine each start)
            pass
        else:
            provider_options = {**provider_options, "TensorrtExecutionProvider": tensorrt_ep_options(
                cache, int8=False, fp16=False)}
    providers = [(p, dict(provider_options[p])) if p in provider_options else p for p in chosen]
    return hooked(path, ort.InferenceSession(str(path), sess_options=options, providers=providers))


@contextlib.contextmanager
def session_hook(hook: SessionHook) -> Iterator[None]:
    """Every session opened inside the block (`create_session`, a TensorRT engine) is passed through `hook`; the
    runtime uses it to time inference per model. Outside such a block sessions are returned as they are."""
    token = _session_hook.set(hook)
    try:
        yield
    finally:
        _session_hook.reset(token)


def hooked(path: Path, session: Any) -> Any:
    hook = _session_hook.get()
    return session if hook is None else hook(Path(path), session)


def tensorrt_ep_cache(key: str) -> Path:
    """The TensorRT EP cache directory of one model (`key`: its content hash or file identity), marked as used
    now; the caches of models no session has opened for `EP_CACHE_KEEP_DAYS` (bundles replaced by updates) are
    removed, since an engine is tens of MB. Raises OSError where the cache folder cannot be written."""
    root = cache_root() / "tensorrt-ep"
    cache = root / key[:16]
    cache.mkdir(parents=True, exist_ok=True)
    os.utime(cache)
    stale_before = time.time() - EP_CACHE_KEEP_DAYS * 86400
    for other in root.iterdir():
        try:
            if other != cache and other.is_dir() and other.stat().st_mtime < stale_before:
                shutil.rmtree(other, ignore_errors=True)
        except OSError:  # another process pruning the same folder
            continue
    return cache
