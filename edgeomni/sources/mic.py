"""Microphones through PyAudio (PortAudio). PyAudio is optional: only `mic` sources need it."""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any

import av
import numpy as np

from edgeomni.errors import SourceError
from edgeomni.sources.base import Emit, Source
from edgeomni.sources.convert import AudioConverter
from edgeomni.sources.devices import describe_devices, import_pyaudio, list_mics, open_pyaudio

BLOCK_S = 0.02
"""Samples are read in 20 ms blocks: short enough for the 200 ms caption budget, long enough that
Python's per-read overhead stays negligible."""


class MicSource(Source):
    """Capture from one input device at its native rate; resampled to 16 kHz mono like any audio."""

    def __init__(self, spec: str, index: str | None) -> None:
        super().__init__(spec, spec, live=True, paced=False)
        self._pa = open_pyaudio()
        try:
            self.device = self._find_device(index)
        except BaseException:
            self._pa.terminate()
            raise
        self.rate = int(self.device["defaultSampleRate"])
        self.channels = 1
        self.has_audio = True
        self.name = f"mic:{self.device['index']}"
        self._streams = [f"audio pyaudio {self.rate} Hz {self.channels} ch ({self.device['name']})"]

    def _find_device(self, index: str | None) -> dict[str, Any]:
        mics = list_mics(self._pa)
        if not mics:
            raise SourceError(f"{self.spec}: no microphone found (input devices: none found)")
        if index is None:
            try:
                return dict(self._pa.get_default_input_device_info())
            except OSError:  # no default input: take the first that exists
                return dict(self._pa.get_device_info_by_index(int(mics[0].index)))
        if not index.isdigit() or int(index) not in {int(m.index) for m in mics}:
            raise SourceError(f"{self.spec}: no such microphone; input devices: {describe_devices(mics)}")
        return dict(self._pa.get_device_info_by_index(int(index)))

    def _run(self, emit: Emit, stop: threading.Event) -> None:
        pyaudio = import_pyaudio()
        block = max(1, round(self.rate * BLOCK_S))
        # Mono where the device allows it; some raw ALSA devices only open in stereo, which the
        # resampler then downmixes.
        for channels in (1, min(2, int(self.device["maxInputChannels"]))):
            try:
                stream = self._pa.open(
                    format=pyaudio.paFloat32,
                    channels=channels,
                    rate=self.rate,
                    input=True,
                    input_device_index=int(self.device["index"]),
                    frames_per_buffer=block,
                )
                self.channels = channels
                break
            except OSError as exc:
                error = exc
        else:
            raise SourceError(f"{self.name}: cannot open {self.device['name']!r}: {error}")
        convert = AudioConverter()
        layout = "mono" if self.channels == 1 else "stereo"
        read = 0
        try:
            while not stop.is_set():
                try:
                    # An overflow means we were late; dropping PortAudio's error keeps the samples it has.
                    data = stream.read(block, exception_on_overflow=False)
                except OSError as exc:
                    raise SourceError(f"{self.name}: capture failed after {read / self.rate:.2f} s: {exc}") from exc
                samples = np.frombuffer(data, dtype=np.float32).reshape(-1, self.channels).T
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
                frame.sample_rate = self.rate
                frame.pts, frame.time_base = read, Fraction(1, self.rate)
                read += samples.shape[1]
                if not all(emit(f) for f in convert.push(frame)):
                    return
        finally:
            stream.stop_stream()
            stream.close()

    def _release(self) -> None:
        self._pa.terminate()
