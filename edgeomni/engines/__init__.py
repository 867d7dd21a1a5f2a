"""Inference engines loaded from a verified bundle (ONNX Runtime; TensorRT/CUDA providers where present)."""

from edgeomni.engines.session import EngineProfile, create_session

__all__ = ["EngineProfile", "create_session"]
