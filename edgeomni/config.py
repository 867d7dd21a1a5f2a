"""Typed run configuration. Every section validates itself and prints itself (sherpa-onnx style).

A config file is TOML with one table per section (``[speech]``, ``[visual]``, ``[engine]``); any
field left out keeps its default, and an unknown or bad field is an error that names it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgeomni.credentials import redact_url
from edgeomni.errors import ConfigError
from edgeomni.observability.config import MetricsConfig, TelemetryConfig
from edgeomni.ota.config import OtaConfig
from edgeomni.outbox.config import OutboxConfig
from edgeomni.sync.config import SyncConfig
from edgeomni.typed import build
from edgeomni.typed import check as _check


@dataclass(frozen=True)
class SpeechConfig:
    """VAD gating and endpointing: when an utterance starts, ends, and how long it may grow."""

    enabled: bool = True
    threshold: float = 0.5  # VAD probability that starts speech
    release: float = 0.35  # probability under which a frame counts as silence (hysteresis)
    min_silence_ms: int = 250  # silence that ends an utterance (context carry-over keeps short cuts accurate)
    silence_db: float = 20.0  # a frame this far below the utterance's loud frames is silence, whatever the VAD says
    min_speech_ms: int = 250  # shorter bursts are noise, not speech
    pad_ms: int = 150  # audio kept before and after speech so word edges are not clipped
    max_utterance_s: float = 12.0  # longer speech is split at its quietest point, never dropped
    long_speech_s: float = 6.0  # past this, a shorter pause ends the utterance, before a forced split is due
    long_speech_silence_ms: int = 96  # read speech pauses only 64-96 ms at commas
    context_s: float = 8.0  # previous utterance (audio + its text as forced prefix) kept as ASR context; 0 = off
    partials: bool = True  # emit partial captions while the person is still speaking
    partial_interval_ms: int = 250  # new audio between partial updates (widened automatically when behind)
    commit_lag_s: float = 2.5  # words are committed only once about this much audio has been heard after them
    budget_ms: int = 200  # a partial is due this long after the last audio it reflects
    min_confidence: float = -0.8  # mean token log-prob under which a transcript is noise, not speech
    stall_ms: int = 1000  # a stream silent this long mid-utterance (network stall, unplugged mic) is finalised

    def validate(self, section: str = "speech") -> None:
        _check(0.0 < self.threshold < 1.0, f"{section}.threshold", "a probability in (0, 1)", self.threshold)
        _check(0.0 < self.release <= self.threshold, f"{section}.release", f"in (0, threshold={self.threshold}]",
               self.release)
        _check(32 <= self.min_silence_ms <= 5000, f"{section}.min_silence_ms", "32..5000 ms", self.min_silence_ms)
        _check(self.silence_db == 0 or 6.0 <= self.silence_db <= 60.0, f"{section}.silence_db",
               "0 (off) or 6..60 dB", self.silence_db)
        _check(0 <= self.min_speech_ms <= 5000, f"{section}.min_speech_ms", "0..5000 ms", self.min_speech_ms)
        _check(0 <= self.pad_ms <= 1000, f"{section}.pad_ms", "0..1000 ms", self.pad_ms)
        _check(2.0 <= self.max_utterance_s <= 50.0, f"{section}.max_utterance_s", "2..50 s (the ASR limit is 64 s)",
               self.max_utterance_s)
        _check(1.0 <= self.long_speech_s <= self.max_utterance_s, f"{section}.long_speech_s",
               f"1..max_utterance_s ({self.max_utterance_s})", self.long_speech_s)
        _check(32 <= self.long_speech_silence_ms <= self.min_silence_ms, f"{section}.long_speech_silence_ms",
               f"32..min_silence_ms ({self.min_silence_ms})", self.long_speech_silence_ms)
        _check(0.0 <= self.context_s <= 10.0, f"{section}.context_s", "0..10 s", self.context_s)
        _check(100 <= self.partial_interval_ms <= 5000, f"{section}.partial_interval_ms", "100..5000 ms",
               self.partial_interval_ms)
        _check(0.0 <= self.commit_lag_s <= 5.0, f"{section}.commit_lag_s", "0..5 s", self.commit_lag_s)
        _check(50 <= self.budget_ms <= 5000, f"{section}.budget_ms", "50..5000 ms", self.budget_ms)
        _check(100 <= self.stall_ms <= 60_000, f"{section}.stall_ms", "100..60000 ms", self.stall_ms)
        _check(-10.0 <= self.min_confidence <= 0.0, f"{section}.min_confidence", "a log-probability in [-10, 0]",
               self.min_confidence)


@dataclass(frozen=True)
class VisualConfig:
    """What is on screen: sampled frames grouped into blocks; the expensive models run only on change."""

    enabled: bool = True
    block_frames: int = 16
    sample_fps: float = 15.0  # frames kept per media second (every 2nd at 30 fps); 0 keeps every frame
    block_stride: int = 0  # new frames between block starts; 0 = block_frames (no overlap)
    top_k: int = 3
    min_score: float = 0.15  # a label below this is not worth telling the viewer
    frame_width: int = 640  # frames are scaled once at decode time to at most this width
    change_threshold: float = 0.01  # share of grey-thumbnail cells changed, above which a frame is re-analysed
    scene_threshold: float = 0.3  # share changed against the scene's reference thumbnail that marks a new scene
    labeller: str = "int8"  # "int8" (image-labeller) or "fp32" (image-labeller-fp32, the reference)
    faces: bool = True  # count faces (needs a face-detector in the bundle)
    face_hold_s: float = 1.0  # within a scene, a new face count is reported once it has held this long
    ocr: bool = True  # read on-screen text on scene changes (needs ocr-detector/recognizer in the bundle)
    budget_ms: int = 200  # a visual event is due this long after its block's last frame
    max_sample_step: int = 4  # when behind, sampling slows down to at most 1/max_sample_step of sample_fps

    def validate(self, section: str = "visual") -> None:
        _check(1 <= self.block_frames <= 256, f"{section}.block_frames", "1..256", self.block_frames)
        _check(self.sample_fps == 0 or 0.5 <= self.sample_fps <= 120, f"{section}.sample_fps",
               "0 (every frame) or 0.5..120", self.sample_fps)
        _check(0 <= self.block_stride <= self.block_frames, f"{section}.block_stride",
               f"0..block_frames ({self.block_frames})", self.block_stride)
        _check(1 <= self.top_k <= 10, f"{section}.top_k", "1..10", self.top_k)
        _check(0.0 <= self.min_score < 1.0, f"{section}.min_score", "in [0, 1)", self.min_score)
        _check(64 <= self.frame_width <= 3840, f"{section}.frame_width", "64..3840 pixels", self.frame_width)
        _check(0.0 <= self.change_threshold < 1.0, f"{section}.change_threshold", "in [0, 1)", self.change_threshold)
        _check(self.change_threshold <= self.scene_threshold < 1.0, f"{section}.scene_threshold",
               f"in [change_threshold ({self.change_threshold}), 1)", self.scene_threshold)
        _check(self.labeller in ("int8", "fp32"), f"{section}.labeller", "'int8' or 'fp32'", self.labeller)
        _check(0.0 <= self.face_hold_s <= 10.0, f"{section}.face_hold_s", "0..10 s (0 = report every change)",
               self.face_hold_s)
        _check(20 <= self.budget_ms <= 10_000, f"{section}.budget_ms", "20..10000 ms", self.budget_ms)
        _check(1 <= self.max_sample_step <= 32, f"{section}.max_sample_step", "1..32", self.max_sample_step)


# `[engine] backend`: "auto" walks TensorRT engine -> TensorRT EP -> CUDA EP -> CPU (edgeomni.engines.backend);
# any other value forces that one backend and fails loudly where it cannot run.
BACKENDS = ("auto", "tensorrt", "tensorrt-ep", "cuda", "cpu")


@dataclass(frozen=True)
class EngineConfig:
    providers: list[str] = field(
        default_factory=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    threads_per_engine: int = 1
    workers: int = 2  # inference threads shared by all engines
    backend: str = "auto"  # one of BACKENDS

    def validate(self, section: str = "engine") -> None:
        _check(bool(self.providers) and all(p.endswith("ExecutionProvider") for p in self.providers),
               f"{section}.providers", "a non-empty list of onnxruntime provider names", self.providers)
        _check(1 <= self.threads_per_engine <= 64, f"{section}.threads_per_engine", "1..64", self.threads_per_engine)
        _check(1 <= self.workers <= 64, f"{section}.workers", "1..64", self.workers)
        _check(self.backend in BACKENDS, f"{section}.backend", f"one of {', '.join(BACKENDS)}", self.backend)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run is configured by. Immutable once validated: a change is a new config (`override`)."""

    speech: SpeechConfig = field(default_factory=SpeechConfig)
    visual: VisualConfig = field(default_factory=VisualConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)  # the device's record of captions and hard examples
    sync: SyncConfig = field(default_factory=SyncConfig)  # outbox -> MQTT
    ota: OtaConfig = field(default_factory=OtaConfig)  # signed bundle updates
    metrics: MetricsConfig = field(default_factory=MetricsConfig)  # /metrics, /health, /ready of `edgeomni run`
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)  # Jetson power, temperatures, load

    def validate(self) -> RunConfig:
        self.speech.validate()
        self.visual.validate()
        self.engine.validate()
        self.outbox.validate()
        self.sync.validate()
        self.ota.validate()
        self.metrics.validate()
        self.telemetry.validate()
        return self

    def override(self, changes: dict[str, Any], source: str = "override") -> RunConfig:
        """A validated copy with `{"section.field": value}` changed (command-line flags over the file); a value of
        None leaves the field as it is (a flag not given)."""
        sections: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            name, _, item = key.partition(".")
            if value is not None:
                sections.setdefault(name, {})[item] = value
        raw = {name: {**_section_dict(getattr(self, name)), **values} for name, values in sections.items()}
        updated = type(self).from_dict(raw, source)
        return replace(self, **{name: getattr(updated, name) for name in sections}).validate()

    def to_toml(self, redact: bool = False) -> str:
        """The whole config as TOML; `redact` hides secrets (passwords, a password inside a broker URL), for
        `edgeomni config show` whose output ends up in terminals, logs and bug reports."""
        lines: list[str] = []
        for section in fields(self):
            lines.append(f"[{section.name}]")
            value = getattr(self, section.name)
            for f in fields(value):
                item = getattr(value, f.name)
                if redact and isinstance(item, str) and item:
                    item = _redacted(f.name, item)
                lines.append(f"{f.name} = {_toml_value(item)}")
            lines.append("")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        """Sections as TOML tables; a field left out keeps its default; unknown or mistyped fields are named."""
        return build(cls, raw, source, ConfigError).validate()

    @classmethod
    def load(cls, path: Path | None) -> RunConfig:
        if path is None:
            return cls().validate()
        if not path.is_file():
            raise ConfigError(f"config file {path}: no such file")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
        return cls.from_dict(raw, source=str(path))


def _section_dict(section: Any) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in fields(section)}


def _redacted(name: str, value: str) -> str:
    if name.endswith(("password", "secret", "token")):  # not `password_file`: a path is no secret
        return "***"
    return redact_url(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
