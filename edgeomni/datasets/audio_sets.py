"""Audio calibration and held-out sets for speech recipes, decoded by the runtime's own front end (PyAV, 16 kHz
mono) and turned into features by the model's own pre-processing.

Calibration sources: `builtin` (espeak-ng voices + package-shipped read speech), a folder of audio files
(sub-folders are strata), or `trainer:DIR` (the hard examples `edgeomni trainer build-sets` wrote; strata =
devices). Held-out sources need reference texts: `speechset[:DIR]` (the bench speech set) or a folder of
audio files, each with a `.txt` of the same stem. Sampling is seeded; manifests record files, digests,
counts, seed and strata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.datasets.audio import decode_audio, offline_spans
from edgeomni.datasets.calibration_speech import calibration_clips
from edgeomni.datasets.media_sets import folder_strata, stratified
from edgeomni.datasets.speechset import default_speech_set_dir, load_speech_set, read_wav
from edgeomni.datasets.trainer_sets import trainer_set
from edgeomni.errors import ExportError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac", ".mp4", ".webm")
SAMPLE_RATE = 16_000
MAX_CLIP_S = 30.0  # what one Whisper window sees
# Longer speech-set clips are cut in pauses into spans of at most this (the rule the Moonshine offline bench uses).
SPAN_LIMIT_S = 28.0


def calibration_audio(source: str, count: int, seed: int, resolve: Callable[[str], Path],
                      progress: Callable[[str], None] = print) -> tuple[list[np.ndarray], dict[str, Any]]:
    if source == "builtin":
        clips, manifest = calibration_clips(count, seed, progress)
        return clips, {"source": "builtin (espeak-ng voices + moonshine-voice's endgame clip)", **manifest}
    if source.startswith("trainer:"):
        strata, where = trainer_set(resolve(source.split(":", 1)[1]), "calibration", "calibration.audio")
    else:
        folder = resolve(source)
        strata, where = _folder_strata(folder, "calibration.audio"), str(folder)
    chosen = _stratified(strata, count, seed)
    clips, files = [], []
    for path in chosen:
        audio = _decode(path)[: int(MAX_CLIP_S * SAMPLE_RATE)]
        clips.append(audio)
        files.append({"file": path.name, "stratum": path.parent.name, "seconds": round(len(audio) / SAMPLE_RATE, 2),
                      "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    progress(f"    {len(clips)} calibration clips from {where} "
             f"({sum(len(c) for c in clips) / SAMPLE_RATE:.0f} s of audio, {len(strata)} strata)")
    return clips, {"source": where, "seed": seed, "count": len(clips),
                   "strata": {name: sum(p in set(paths) for p in chosen) for name, paths in strata.items()},
                   "clips": files}


def heldout_items(source: str, count: int, resolve: Callable[[str], Path],
                  progress: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Held-out speech as [{name, reference, spans}]: clips with the reference texts a WER gate scores against."""
    if source == "speechset" or source.startswith("speechset:"):
        directory = resolve(source.split(":", 1)[1]) if ":" in source else None
        items = speech_items(directory, progress)[:count]
        where = f"bench speech set ({directory or 'cache'})"
    else:
        folder = resolve(source)
        items = []
        for paths in _folder_strata(folder, "heldout.audio").values():
            for path in paths:
                text = path.with_suffix(".txt")
                if not text.is_file():
                    raise ExportError(f"heldout.audio: {path} has no reference text {text.name} beside it "
                                      "(the gate scores WER, so every held-out clip needs one)")
                audio = _decode(path)
                if len(audio) > MAX_CLIP_S * SAMPLE_RATE:
                    raise ExportError(f"heldout.audio: {path} is {len(audio) / SAMPLE_RATE:.1f} s long; "
                                      f"expected clips of at most {MAX_CLIP_S:.0f} s (split it at pauses)")
                items.append({"name": path.stem, "reference": text.read_text().strip(), "spans": [audio]})
        items, where = sorted(items, key=lambda i: i["name"])[:count], str(folder)
    if not items:
        raise ExportError(f"heldout.audio: {source!r} gave no speech clips; an empty held-out set cannot gate")
    return items, {"source": where, "count": len(items), "clips": [i["name"] for i in items],
                   "seconds": round(sum(len(s) for i in items for s in i["spans"]) / SAMPLE_RATE, 1)}


def speech_items(speech_set: Path | None = None, progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The speech clips of the bench speech set (generated on first use), as (name, reference, audio spans)."""
    sset = load_speech_set(Path(speech_set) if speech_set is not None else default_speech_set_dir(), progress=progress)
    items = []
    for clip in sset.clips:
        if clip.kind != "speech":
            continue
        audio = read_wav(sset.wav(clip))
        spans = offline_spans(len(audio) / SAMPLE_RATE, clip.segments, limit=SPAN_LIMIT_S)
        items.append({"name": clip.name, "reference": clip.reference,
                      "spans": [audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)] for a, b in spans]})
    return items


def unlabeled_audio(source: str, resolve: Callable[[str], Path], field: str) -> tuple[dict[str, list[Path]], str]:
    """Audio files to pseudo-label: `trainer:DIR` (the distillation set build-sets wrote; strata = devices) or a
    folder (strata = sub-folders)."""
    if source.startswith("trainer:"):
        return trainer_set(resolve(source.split(":", 1)[1]), "distillation", field)
    folder = resolve(source)
    return _folder_strata(folder, field), str(folder)


def decode_clip(path: Path) -> np.ndarray:
    """16 kHz mono float32, at most one Whisper window (MAX_CLIP_S)."""
    return _decode(path)[: int(MAX_CLIP_S * SAMPLE_RATE)]


def _folder_strata(folder: Path, field: str) -> dict[str, list[Path]]:
    return folder_strata(folder, AUDIO_SUFFIXES, field, "audio files")


def _stratified(strata: dict[str, list[Path]], count: int, seed: int) -> list[Path]:
    return stratified(strata, count, np.random.default_rng(seed))


def _decode(path: Path) -> np.ndarray:
    try:
        return decode_audio(path)
    except Exception as exc:  # PyAV raises its own error types; the file is what the user needs to hear about
        raise ExportError(f"audio file {path}: cannot be decoded ({exc})") from None
