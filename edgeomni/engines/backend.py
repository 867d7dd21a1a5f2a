"""Pick how one role's model runs here: TensorRT engine -> ORT TensorRT EP -> ORT CUDA EP -> ORT CPU.

A bundle built with the `tensorrt` export target holds `<role>-tensorrt` (where the export machine had TensorRT)
and `<role>-tensorrt-onnx` (the model in the form TensorRT's parser takes: symmetric int8 Q/DQ, float biases)
next to the ONNX `<role>`, which is quantized for CPUs. The serialized engine is fastest but tied to one
TensorRT version and GPU; the EP builds its own engine from `<role>-tensorrt-onnx` on any GPU and caches it.
Each step is tried in turn and
every step that cannot run here records one line saying why ("tensorrt engine skipped: tensorrt not
installed"). The choice and the reasons are logged once at load and reported in the run's `start` record
(`backend`). `[engine] backend` forces one step; a forced step that cannot run is an error, never a silent
CPU run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgeomni.bundle import VerifiedBundle, sha256_of
from edgeomni.bundle.manifest import Component
from edgeomni.engines.session import EngineProfile, create_session, hooked, tensorrt_ep_cache, tensorrt_ep_options
from edgeomni.engines.tensorrt_runner import BackendUnavailable, TensorRtEngine
from edgeomni.errors import EngineError
from edgeomni.paths import cache_root

log = logging.getLogger("edgeomni.engines")

AUTO_ORDER = ("tensorrt", "tensorrt-ep", "cuda", "cpu")
STEP_NAMES = {"tensorrt": "tensorrt engine", "tensorrt-ep": "onnxruntime TensorRT EP",
              "cuda": "onnxruntime CUDA EP", "cpu": "onnxruntime CPU"}
_PROVIDER = {"tensorrt-ep": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}


@dataclass(frozen=True)
class BackendChoice:
    """What one role runs on, and why each faster backend before it was skipped."""

    role: str
    backend: str
    skipped: tuple[str, ...] = ()
    engine_in_bundle: bool = False  # a `<role>-tensorrt` engine was shipped: skipping it is worth a warning

    def describe(self) -> str:
        reasons = f" ({'; '.join(self.skipped)})" if self.skipped else ""
        return f"{self.role} runs on {STEP_NAMES[self.backend]}{reasons}"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "skipped": list(self.skipped)}

    @property
    def summary(self) -> str:
        """One short line for the run header: the backend, plus why the shipped engine was not used."""
        engine_reason = f" ({self.skipped[0]})" if self.engine_in_bundle and self.skipped else ""
        return f"{self.role} on {STEP_NAMES[self.backend]}{engine_reason}"


def open_engine(bundle: VerifiedBundle, role: str, profile: EngineProfile | None = None,
                engine_optional: bool = False) -> tuple[Any, BackendChoice]:
    """A session-like object (`run`, `get_inputs`, `get_outputs`) for `role`, from the first backend that runs.
    `engine_optional`: bundles of this role often ship no TensorRT engine (OCR, the Whisper encoder); without
    one, a forced `tensorrt` backend leaves the role to the ONNX providers, as for models with no choice."""
    profile = profile or EngineProfile()
    engine_in_bundle = bundle.manifest.has_role(f"{role}-tensorrt")
    steps = AUTO_ORDER if profile.backend == "auto" else (profile.backend,)
    if profile.backend == "tensorrt" and engine_optional and not engine_in_bundle:
        steps = AUTO_ORDER[1:]
    skipped: list[str] = []
    for step in steps:
        try:
            session = _open_step(step, bundle, role, profile)
        except BackendUnavailable as exc:
            skipped.append(f"{STEP_NAMES[step]} skipped: {exc}")
            continue
        choice = BackendChoice(role, step, tuple(skipped), engine_in_bundle)
        # Once per load; a warning only when a shipped engine goes unused (the user built it to be used).
        (log.warning if engine_in_bundle and step != "tensorrt" else log.info)(choice.describe())
        return session, choice
    raise EngineError(f"{role}: [engine] backend = {profile.backend!r} cannot run here: {'; '.join(skipped)} "
                      f"(set backend = \"auto\" to fall back)")


def _open_step(step: str, bundle: VerifiedBundle, role: str, profile: EngineProfile) -> Any:
    if step == "tensorrt":
        return _open_tensorrt_engine(bundle, role)
    provider = _PROVIDER[step]
    if provider not in profile.providers:
        raise BackendUnavailable(f"{provider} is not in [engine] providers {list(profile.providers)}")
    offered = ort.get_available_providers()
    if provider not in offered:
        raise BackendUnavailable(f"this onnxruntime has no {provider} (it offers {', '.join(offered)})")
    # The CUDA EP behind the TensorRT EP takes the nodes TensorRT cannot (onnxruntime partitions the graph).
    chain = (provider, *(p for p in ("CUDAExecutionProvider",) if step == "tensorrt-ep" and p in offered),
             "CPUExecutionProvider") if provider != "CPUExecutionProvider" else (provider,)
    component, options = (_tensorrt_ep_model(bundle, role) if step == "tensorrt-ep" else
                          (bundle.manifest.by_role(role), {}))
    path = bundle.path / component.file
    try:
        session = create_session(path, EngineProfile(chain, profile.intra_op_threads), {provider: options})
    except Exception as exc:  # onnxruntime raises its own types (Fail, RuntimeException, ...)
        raise BackendUnavailable(f"onnxruntime could not start {provider}: {str(exc).splitlines()[0]}") from None
    if session.get_providers()[0] != provider:  # onnxruntime drops a provider that fails to initialise
        raise BackendUnavailable(f"onnxruntime could not initialise {provider} (driver/libraries missing?)")
    return session


def _tensorrt_ep_model(bundle: VerifiedBundle, role: str) -> tuple[Component, dict[str, Any]]:
    """The ONNX that onnxruntime's TensorRT EP gets for `role`, and its settings. The role's own INT8 ONNX is
    quantized for CPUs (uint8 activations, int32 biases), which TensorRT refuses; only the export's
    `<role>-tensorrt-onnx` copy, or an FP32 model, is worth handing to it."""
    ep_role = f"{role}-tensorrt-onnx"
    if bundle.manifest.has_role(ep_role):
        component = bundle.manifest.by_role(ep_role)
    else:
        component = bundle.manifest.by_role(role)
        if component.precision not in ("fp32", "fp16"):
            raise BackendUnavailable(f"no {ep_role} in bundle {bundle.manifest.name!r}, and its {component.precision} "
                                     f"ONNX is quantized for CPUs, which TensorRT refuses (export with the tensorrt "
                                     f"target)")
    # The export's profiles: the copy's own, or (an FP32 model the EP takes as shipped) the role's record of them.
    profiles = component.report.get("profiles") or component.report.get("tensorrt_profiles", [])
    return component, tensorrt_ep_options(_ep_cache(component.sha256), int8=component.precision == "int8",
                                          fp16=True, profiles=profiles)


def _ep_cache(sha256: str) -> Path:
    try:
        return tensorrt_ep_cache(sha256)
    except OSError as exc:  # without a cache the EP would rebuild its engine (minutes on a Jetson) at every start
        cache = cache_root() / "tensorrt-ep" / sha256[:16]
        raise BackendUnavailable(f"cannot keep its engine cache in {cache}: {exc.strerror or exc} "
                                 f"(set EDGEOMNI_CACHE to a writable folder)") from None


def _open_tensorrt_engine(bundle: VerifiedBundle, role: str) -> TensorRtEngine:
    if not bundle.manifest.has_role(f"{role}-tensorrt"):
        raise BackendUnavailable(f"no {role}-tensorrt engine in bundle {bundle.manifest.name!r}")
    component = bundle.manifest.by_role(f"{role}-tensorrt")
    path = bundle.path / component.file
    # The bundle was verified at load, but an OTA swap or a bad disk can change it since; a corrupt engine
    # can crash TensorRT rather than fail cleanly, so it is checked again before deserializing.
    if not path.is_file():
        raise BackendUnavailable(f"engine file {component.file} is missing from the bundle")
    if path.stat().st_size != component.size or sha256_of(path) != component.sha256:
        raise BackendUnavailable(f"engine file {component.file} does not match its manifest sha256/size "
                                  f"(changed since the bundle was built)")
    return hooked(path, TensorRtEngine.load(path, component.report))
