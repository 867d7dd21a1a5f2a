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

from edgeomni.engines.whisper_asr import window_frames
from edgeomni.export.steps.quantize_whisper import quantize_encoder
from edgeomni.export.steps.tensorrt_engine import TensorRtSettings, model_input_dims, profile_for_range
from edgeomni.export.steps.tensorrt_target import Gate, TensorRtTarget, build_tensorrt_target

DECODER_NOTE = ("the decoder stays on onnxruntime (CUDA EP where offered): its dynamic INT8 MatMulInteger has no "
                "TensorRT form")


def encoder_profile(encoder: Path, windows_s: tuple[int, ...], clips: list[np.ndarray]) -> Any:
    """The encoder input's profile: every window from the shortest to the longest, tuned for the calibration
    clips' median window (a fixed-window encoder gets its one shape)."""

    name, dims = next(iter(model_input_dims(encoder).items()))
    if isinstance(dims[2], int):  # an encoder exported before the frame axis was freed: 3000 frames only
        examples = [(1, int(dims[1] or 80), dims[2])]
    else:
        examples = [(1, int(dims[1] or 80), window_frames(len(clip), windows_s)) for clip in clips]
    shortest, longest = (window_frames(0, (w,)) for w in (min(windows_s), max(windows_s)))
    return profile_for_range(name, dims, examples, {0: (1, 1), 2: (shortest, longest)})


def encoder_target(fp32: Path, int8: Path, features: np.ndarray, clips: list[np.ndarray], windows_s: tuple[int, ...],
                   method: str, activations: str, kept_fp32: list[str], work: Path,
                   progress: Callable[[str], None], gate: Gate | None = None) -> TensorRtTarget:
    """The encoder's engine where TensorRT is installed (elsewhere, none and the reason) and its TensorRT-EP ONNX.
    The CPU bundle's uint8 activations are quantized again as symmetric int8, same method, same nodes kept FP32."""

    source = int8
    if activations != "int8-symmetric":
        source = work / "encoder_int8_symmetric.onnx"
        quantize_encoder(fp32, source, features, method, "int8-symmetric", progress, keep_fp32=kept_fp32, work=work)
    settings = TensorRtSettings(profiles=[encoder_profile(source, windows_s, clips)])
    target = build_tensorrt_target(source, int8, work, "whisper_encoder", settings, progress, gate, fp32)
    target.record["decoder"] = DECODER_NOTE
    return target
