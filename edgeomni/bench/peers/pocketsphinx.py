"""pocketsphinx's streaming decoder with its own endpointer, as in the package's live-decoding example.

Each 30 ms endpointer frame goes through `Endpointer.process`; speech frames go to `Decoder.process_raw`
(start_utt at speech onset). After each chunk the hypothesis (`hyp()`) is a partial when its text
changed; when the endpointer leaves speech, `end_utt` and the final hypothesis is the final. Model: the
en-us acoustic model, language model and dictionary shipped in the pip package.
"""

from __future__ import annotations

from typing import Any

from edgeomni.bench.peers import Chunk, Peer, require, to_pcm16, version


class PocketsphinxPeer(Peer):
    name = "pocketsphinx"

    def load(self) -> dict[str, Any]:
        self._ps = require("pocketsphinx", "pocketsphinx")
        self._endpointer = self._ps.Endpointer()
        self._decoder = self._ps.Decoder(samprate=self._endpointer.sample_rate, loglevel="FATAL")
        return {"package": f"pocketsphinx=={version('pocketsphinx')}", "model": "en-us (bundled)",
                "endpointer": {"window_s": 0.3, "ratio": 0.9, "frame_s": self._endpointer.frame_length}}

    def begin(self) -> None:
        self._endpointer = self._ps.Endpointer()
        self._pending = b""
        self._in_utt = False
        self._last_partial = ""

    def feed(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            self._pending += to_pcm16(chunk.samples)
            size = self._endpointer.frame_bytes
            decoded = False
            while len(self._pending) >= size:
                frame, self._pending = self._pending[:size], self._pending[size:]
                speech = self._endpointer.process(frame)
                if speech is not None:
                    self._decode(speech)
                    decoded = True
                    if not self._endpointer.in_speech:
                        self._final(chunk.arrival)
            if decoded and self._in_utt:
                self._partial(chunk.arrival)

    def end(self, arrival: float) -> None:
        if self._endpointer.in_speech:
            tail = self._endpointer.end_stream(self._pending[: self._endpointer.frame_bytes])
            if tail is not None:
                self._decode(tail)
        if self._in_utt:
            self._final(arrival)

    def _decode(self, speech: bytes) -> None:
        if not self._in_utt:
            self._decoder.start_utt()
            self._in_utt, self._last_partial = True, ""
        self._decoder.process_raw(speech, False, False)

    def _partial(self, seen: float) -> None:
        hyp = self._decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        if text and text != self._last_partial:
            self._last_partial = text
            self.emit("partial", text, seen)

    def _final(self, seen: float) -> None:
        self._decoder.end_utt()
        self._in_utt = False
        hyp = self._decoder.hyp()
        if hyp is not None and hyp.hypstr:
            self.emit("final", hyp.hypstr, seen)
