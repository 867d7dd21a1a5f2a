"""Silero VAD with its recurrent state kept across frames (stateful streaming, never recomputed)."""

from __future__ import annotations

import numpy as np

from edgeomni.bundle import VerifiedBundle
from edgeomni.engines.session import EngineProfile, create_session


class SileroVad:
    """Speech probability per 32 ms frame (512 samples at 16 kHz).

    The model wants the last 64 samples of the previous frame prepended (its context) and its LSTM
    state fed back; both live here, so one instance serves exactly one audio stream.
    """

    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None) -> None:
        component = bundle.manifest.by_role("vad")
        self.frame_samples = int(component.preprocess.get("frame_samples", 512))
        self.context_samples = int(component.preprocess.get("context_samples", 64))
        self.sample_rate = int(component.preprocess.get("sample_rate", 16_000))
        self._session = create_session(bundle.path / component.file, profile)
        state_spec = component.state[0]
        self._state_in, self._state_out = state_spec.input, state_spec.output
        self._state_shape = tuple(int(d) for d in state_spec.shape)
        self._sr = np.array(self.sample_rate, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros(self._state_shape, dtype=np.float32)
        self._context = np.zeros(self.context_samples, dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"VAD frame: expected {self.frame_samples} samples, got shape {frame.shape}")
        window = np.concatenate([self._context, frame])[None, :]
        prob, self._state = self._session.run(
            None, {"input": window, self._state_in: self._state, "sr": self._sr}
        )
        self._context = frame[-self.context_samples :]
        return float(prob[0, 0])
