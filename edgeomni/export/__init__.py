"""Export stage: turns weights shipped in registry packages into a verified bundle (ONNX, INT8 calibration).

This is the only package allowed to import torch and onnx; the runtime never does.
"""

from edgeomni.export.default_bundle import build_default_bundle

__all__ = ["build_default_bundle"]
