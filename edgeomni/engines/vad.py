"""Silero VAD: one model shared by every stream, its recurrent state kept per stream (`SileroVad.stream()`)."""

from __future__ import annotations

import numpy as np

from edgeomni.bundle import VerifiedBundle
from edgeomni.engines.session import EngineProfile, create_session


class SileroVad:
    """Speech probability per 32 ms frame (512 samples at 16 kHz). The ONNX session is shared (onnxruntime runs it
    from several threads at once); the LSTM state and the previous frame's tail live in each `VadStream`."""

    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None) -> None:
        component = bundle.manifest.by_role("vad")
        self.frame_samples = int(component.preprocess.get("frame_samples", 512))
        self.context_samples = int(component.preprocess.get("context_samples", 64))
        self.sample_rate = int(component.preprocess.get("sample_rate", 16_000))
        self.session = create_session(bundle.path / component.file, profile)
        state_spec = component.state[0]
        self.state_in, self.state_out = state_spec.input, state_spec.output
        self.state_shape = tuple(int(d) for d in state_spec.shape)
        self.rate_input = np.array(self.sample_rate, dtype=np.int64)

    def stream(self) -> VadStream:
        """Fresh state for one audio stream (costs nothing: the model is not loaded again)."""
        return VadStream(self)


class VadStream:
    """The model wants the last 64 samples of the previous frame prepended (its context) and its LSTM state fed
    back; both live here, so one instance serves exactly one audio stream."""

    def __init__(self, model: SileroVad) -> None:
        self.model = model
        self.frame_samples = model.frame_samples
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros(self.model.state_shape, dtype=np.float32)
        self._context = np.zeros(self.model.context_samples, dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"VAD frame: expected {self.frame_samples} samples, got shape {frame.shape}")
        window = np.concatenate([self._context, frame])[None, :]
        model = self.model
        prob, self._state = model.session.run(
            None, {"input": window, model.state_in: self._state, "sr": model.rate_input}
        )
        self._context = frame[-model.context_samples :]
        return float(prob[0, 0])
