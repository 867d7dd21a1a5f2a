"""moonshine-voice 0.1.0's own streaming transcriber: the same Moonshine tiny-en model as EdgeOmni's default
bundle, run by the package's C++ runtime (libmoonshine.so) with its own VAD and line segmentation.

Driven as its MicTranscriber drives it: `Stream.add_audio` per chunk, which runs an update every
`update_interval` of audio (0.5 s, the package default); LineStarted/LineUpdated of an incomplete line
are partials, LineCompleted is a final. Model files: the package's bundled `assets/tiny-en` (no download).
"""

from __future__ import annotations

from typing import Any

from edgeomni.bench.peers import Chunk, Peer, package_file, require, version
from edgeomni.frames import AUDIO_RATE

UPDATE_INTERVAL_S = 0.5


class MoonshineVoicePeer(Peer):
    name = "moonshine-voice"

    def load(self) -> dict[str, Any]:
        model = package_file("moonshine-voice", "moonshine_voice/assets/tiny-en")
        # Its package __init__ imports the downloader (requests, tqdm, platformdirs): they must be installed
        # even though nothing is downloaded here.
        transcriber = require("moonshine_voice.transcriber", "moonshine-voice (and requests, tqdm, platformdirs)")
        self._events = transcriber
        self._transcriber = transcriber.Transcriber(str(model), transcriber.ModelArch.TINY,
                                                    update_interval=UPDATE_INTERVAL_S)
        self._stream: Any = None
        self._seen = 0.0
        return {"package": f"moonshine-voice=={version('moonshine-voice')}", "model": "tiny-en (bundled assets)",
                "update_interval_s": UPDATE_INTERVAL_S}

    def begin(self) -> None:
        self._stream = self._transcriber.create_stream(UPDATE_INTERVAL_S)
        self._stream.add_listener(self._on_event)
        self._stream.start()

    def feed(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            self._seen = chunk.arrival  # an update triggered inside add_audio has seen this chunk
            self._stream.add_audio(chunk.samples.tolist(), AUDIO_RATE)

    def end(self, arrival: float) -> None:
        self._seen = arrival
        self._stream.stop()  # transcribes what is left and completes the open line
        self._stream.close()
        self._stream = None

    def _on_event(self, event: Any) -> None:
        line = event.line
        if isinstance(event, self._events.LineCompleted):
            self.emit("final", line.text, self._seen)
        elif isinstance(event, self._events.LineStarted | self._events.LineUpdated) and not line.is_complete:
            self.emit("partial", line.text, self._seen)
