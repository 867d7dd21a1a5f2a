"""The `tensorrt` target of a Whisper recipe: an engine of the encoder, built from its static INT8 QDQ graph.

Only the encoder: it is static QDQ (TensorRT's explicit quantization) and costs most of a call. The decoder is
dynamic INT8 (DynamicQuantizeLinear + MatMulInteger), which has no TensorRT form; it stays on onnxruntime
(CUDA EP where offered). The encoder's frame axis is free (15 s and 30 s windows), so the profile spans the
windows the runtime may run, tuned for the window the calibration clips get.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DECODER_NOTE = ("the decoder stays on onnxruntime (CUDA EP where offered): its dynamic INT8 MatMulInteger has no "
                "TensorRT form")


def encoder_profile(encoder: Path, windows_s: tuple[int, ...], clips: list[np.ndarray]) -> Any:
    """The encoder input's profile: every window from the shortest to the longest, tuned for the calibration
    clips' median window (a fixed-window encoder gets its one shape)."""
    from edgeomni.engines.whisper_asr import window_frames
    from edgeomni.export.tensorrt import model_input_dims, profile_for_range

    name, dims = next(iter(model_input_dims(encoder).items()))
    if isinstance(dims[2], int):  # an encoder exported before the frame axis was freed: 3000 frames only
        examples = [(1, int(dims[1] or 80), dims[2])]
    else:
        examples = [(1, int(dims[1] or 80), window_frames(len(clip), windows_s)) for clip in clips]
    shortest, longest = (window_frames(0, (w,)) for w in (min(windows_s), max(windows_s)))
    return profile_for_range(name, dims, examples, {0: (1, 1), 2: (shortest, longest)})


def encoder_engine(fp32: Path, int8: Path, features: np.ndarray, clips: list[np.ndarray], windows_s: tuple[int, ...],
                   method: str, activations: str, kept_fp32: list[str], work: Path,
                   progress: Callable[[str], None]) -> tuple[Path | None, dict[str, Any]]:
    """Build the encoder engine where TensorRT is installed (the CPU bundle's uint8 activations are quantized
    again as symmetric int8, same method and the same nodes kept FP32); elsewhere, no engine and the reason."""
    from edgeomni.export.tensorrt import TensorRtSettings, available, build_target
    from edgeomni.export.whisper.quantize import quantize_encoder

    source = int8
    if available() is not None and activations != "int8-symmetric":
        source = work / "encoder_int8_symmetric.onnx"
        quantize_encoder(fp32, source, features, method, "int8-symmetric", progress, keep_fp32=kept_fp32, work=work)
    settings = TensorRtSettings(profiles=[encoder_profile(source, windows_s, clips)])
    engine, record = build_target(source, work / "whisper_encoder.engine", settings, progress)
    return engine, {**record, "from": f"static INT8 QDQ encoder ({source.name})", "decoder": DECODER_NOTE}
