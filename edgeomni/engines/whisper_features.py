"""Whisper's log-mel front end in numpy: 80 mels from 25 ms Hann windows every 10 ms, 30 s per call.

It follows Whisper's reference (and transformers' WhisperFeatureExtractor): audio zero-padded to 30 s, a
centred STFT with reflect padding, power spectrum, the last frame dropped, log10 clamped at 1e-10, values
floored at (max - 8) and scaled to (x + 4) / 4. The mel filterbank comes from the bundle (.npz).
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE
FRAMES = CHUNK_SAMPLES // HOP  # 3000


class LogMel:
    """Audio (float32, 16 kHz, <= 30 s) -> (n_mels, 3000) log-mel features, the Whisper encoder's input."""

    def __init__(self, filters: np.ndarray) -> None:
        if filters.ndim != 2 or filters.shape[0] != N_FFT // 2 + 1:
            raise ValueError(f"mel filterbank: expected shape ({N_FFT // 2 + 1}, n_mels), got {filters.shape}")
        self.filters = np.ascontiguousarray(filters.T, dtype=np.float32)  # (n_mels, bins)
        # Periodic Hann window, as torch.hann_window(400) gives.
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)

    @property
    def n_mels(self) -> int:
        return int(self.filters.shape[0])

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if len(audio) > CHUNK_SAMPLES:
            raise ValueError(f"Whisper features: at most {CHUNK_SAMPLES} samples (30 s), got {len(audio)}")
        padded = np.zeros(CHUNK_SAMPLES, dtype=np.float32)
        padded[: len(audio)] = audio
        framed = _frames(np.pad(padded, N_FFT // 2, mode="reflect"))
        spectrum = np.fft.rfft(framed * self._window, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)[:-1]  # (3000, 201)
        mel = self.filters @ power.T
        log_spec = np.log10(np.maximum(mel, 1e-10))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)


def _frames(signal: np.ndarray) -> np.ndarray:
    count = 1 + (len(signal) - N_FFT) // HOP
    return np.lib.stride_tricks.as_strided(signal, shape=(count, N_FFT),
                                           strides=(signal.strides[0] * HOP, signal.strides[0]))
