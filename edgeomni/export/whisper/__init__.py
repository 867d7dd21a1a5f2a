"""Whisper tiny.en export: CTranslate2 -> transformers -> ONNX (KV cache) -> INT8 -> bundle (issue 6).

Export-time only (torch, transformers, onnx). The runtime side is edgeomni/engines/whisper_asr.py.
"""

from edgeomni.export.whisper.build import WhisperExportOptions, build_whisper_bundle

__all__ = ["WhisperExportOptions", "build_whisper_bundle"]
