"""The `distill:` section of a speech recipe: how distill.py trains the Whisper student. Built and validated
without torch, so the recipe loader (and `edgeomni export --check`) can check it in the first second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.engines.whisper_asr import WINDOWS_RULE, valid_windows
from edgeomni.errors import ExportError

TEACHER_DECODER_LAYERS = 4  # Whisper tiny.en
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class DistillSpec:
    decoder_layers: int = 2
    init_layers: tuple[int, ...] | None = None  # teacher layers copied into the student (default: spread, 0 and 3)
    temperature: float = 2.0
    kd_weight: float = 0.8  # KL weight; the rest of the logit loss is CE on the pseudo-labels
    hidden_weight: float = 0.0  # MSE between student layer i and its init teacher layer (0: off)
    clips: int = 600  # espeak-ng clips synthesised (plus the package-shipped real clips)
    package_clips: bool = True
    audio: str = ""  # more unlabeled speech for the teacher to label: "trainer:DIR" (build-sets' distillation set)
    #                  or a folder of audio files (sub-folders are strata); every file is used, cut at 30 s
    noise_fraction: float = 0.3
    # Share of clips of 4-7 sentences (15-30 s, the 30 s window and long transcripts). Off by default: at 0.2
    # (101 of 489 clips at 30 s instead of 11) the bench WER did not move (26.6% vs 26.8%): docs/BENCHMARKS.md.
    long_fraction: float = 0.0
    label_filter_wer: float | None = 0.5  # drop clips whose pseudo-label is this far from the script
    held_out: float = 0.1  # fraction of clips kept out of training for the per-epoch held-out loss
    epochs: int = 6
    max_steps: int | None = None  # stop early (tests, smoke runs)
    batch_size: int = 8  # per process
    lr: float = 3e-4
    train_embeddings: bool = False  # the tied token embedding / output head stays the teacher's by default
    seed: int = 0
    device: str = "auto"  # cuda when available, else cpu
    cache_dir: Path | None = None  # encoder outputs + pseudo-labels (default: the edgeomni cache)
    # Encoder windows (s) the student trains on and then runs: each clip is encoded in the window the runtime
    # would pick for it (WhisperDecoding.windows_s, the teacher's). A decoder that learnt only on 30 s encoder
    # outputs lost 4.5 WER points on 15 s windows, and 30 s windows made it slower than its teacher.
    windows_s: tuple[int, ...] = (15, 30)
    # Gaussian noise on the student's view of the encoder output during training, as a fraction of each clip's
    # RMS (the teacher labels the clean one): a decoder trained on exact FP32 encoder outputs misread the INT8
    # encoder's (SQNR 30-35 dB, a few % of the RMS) where the teacher did not (docs/BENCHMARKS.md).
    encoder_noise: float = 0.0

    def resolved_init_layers(self, teacher_layers: int = TEACHER_DECODER_LAYERS) -> tuple[int, ...]:
        if self.init_layers is not None:
            return tuple(self.init_layers)
        # distil-whisper's choice: layers spread evenly from the first to the last (2 of 4 -> 0 and 3).
        return tuple(int(i) for i in np.linspace(0, teacher_layers - 1, self.decoder_layers, dtype=int))

    def validate(self, where: str = "distill", teacher_layers: int = TEACHER_DECODER_LAYERS) -> None:
        def bad(name: str, expected: str, got: Any) -> ExportError:
            return ExportError(f"{where}.{name}: expected {expected}, got {got!r}")

        if type(self.decoder_layers) is not int or not 1 <= self.decoder_layers < teacher_layers:
            raise bad("decoder_layers", f"1..{teacher_layers - 1}", self.decoder_layers)
        if self.init_layers is not None:
            layers = tuple(self.init_layers) if isinstance(self.init_layers, tuple | list) else ()
            if len(layers) != self.decoder_layers or not all(isinstance(i, int) and 0 <= i < teacher_layers
                                                              for i in layers):
                raise bad("init_layers", f"{self.decoder_layers} teacher layer indices in 0..{teacher_layers - 1}",
                          self.init_layers)
        # (field, kind, low, high, inclusive high, may be None): numbers from YAML may be of any type.
        ranges = [("temperature", float, 0, None, False, False), ("kd_weight", float, 0, 1, True, False),
                  ("hidden_weight", float, 0, None, False, False), ("clips", int, 0, None, False, False),
                  ("noise_fraction", float, 0, 1, True, False), ("long_fraction", float, 0, 1, True, False),
                  ("encoder_noise", float, 0, 1, True, False),
                  ("held_out", float, 0, 0.5, False, False),
                  ("epochs", int, 1, None, False, False), ("max_steps", int, 1, None, False, True),
                  ("batch_size", int, 1, None, False, False), ("lr", float, 0, 1, False, False),
                  ("label_filter_wer", float, 0, None, False, True)]
        for name, kind, low, high, inclusive, optional in ranges:
            value = getattr(self, name)
            if optional and value is None:
                continue
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if not numeric or (kind is int and not isinstance(value, int)) or value < low or (
                    high is not None and (value > high if inclusive else value >= high)) or (
                    name in ("temperature", "lr") and value <= 0):
                floor = "> 0" if name in ("temperature", "lr") else f">= {low}"
                span = f"{'an integer' if kind is int else 'a number'} {floor}" if high is None else \
                    f"a number {floor} and {'<=' if inclusive else '<'} {high}"
                raise bad(name, span + (" or null" if optional else ""), value)
        if not valid_windows(self.windows_s):
            raise bad("windows_s", WINDOWS_RULE, self.windows_s)
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(self.device)):
            raise bad("device", "auto, cpu, cuda or cuda:N", self.device)
        if not isinstance(self.audio, str):
            raise bad("audio", "'trainer:DIR' or a folder of audio files", self.audio)
        if self.clips == 0 and not self.package_clips and not self.audio:
            raise bad("clips", ">= 1 when package_clips is off and no audio is given", self.clips)
