"""`edgeomni run` end to end: real models from the default bundle on generated media, through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media_factory import make_speech_wav, make_video_file, truncate_file

from edgeomni.wer import wer

SENTENCES = [
    "Please send the quarterly report to the finance team by Friday.",
    "Turn left at the next traffic light and park near the station.",
    "Edge devices caption speech in real time without a network connection.",
]


def run_cli(bundle: Path, *args: str, timeout: float = 180) -> tuple[int, list[dict], str]:
    """Run `edgeomni run` in a subprocess with a JSONL sink on stdout; return (exit code, events, stderr)."""
    cmd = [sys.executable, "-m", "edgeomni", "run", "--bundle", str(bundle), "--sink", "jsonl:-", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def finals(events: list[dict]) -> str:
    return " ".join(e["text"] for e in events if e["type"] == "final")


def speech_with_pauses(tmp_path: Path, texts: list[str], name: str, pause_s: float = 1.2) -> Path:
    """espeak-ng sentences joined with silence by sox: speech whose transcript is known exactly."""
    silence = tmp_path / f"{name}_gap.wav"
    subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", "-b", "16", str(silence), "trim", "0", str(pause_s)],
                   check=True)
    parts: list[str] = []
    for i, text in enumerate(texts):
        parts += [str(make_speech_wav(tmp_path / f"{name}_{i}.wav", text, speed=150)), str(silence)]
    out = tmp_path / f"{name}.wav"
    subprocess.run(["sox", *parts, str(out)], check=True)
    return out


@pytest.mark.parametrize("sentence", SENTENCES)
def test_espeak_sentence_comes_back_as_final_caption(default_bundle: Path, tmp_path: Path, sentence: str) -> None:
    wav = make_speech_wav(tmp_path / "s.wav", sentence, speed=150)
    code, events, err = run_cli(default_bundle, "--source", str(wav), "--no-realtime")
    assert code == 0, err
    text = finals(events)
    # Two of the 11 words come back wrong for the first and the last sentence here ("Finan Sting", "Hedge ...
    # captioned"): 0.4 leaves two more words for another CPU; a model that does not hear the sentence is near 1.
    assert wer(sentence, text) <= 0.4, f"{sentence!r} -> {text!r}"


def test_jsonl_contract(default_bundle: Path, tmp_path: Path) -> None:
    wav = speech_with_pauses(tmp_path, SENTENCES[:2], "two")
    code, events, err = run_cli(default_bundle, "--source", str(wav), "--no-realtime")
    assert code == 0, err
    assert events[0]["type"] == "start" and isinstance(events[0]["wall"], float) and events[0]["source"] == str(wav)
    assert events[-1]["type"] == "end" and events[-1]["error"] is None
    body = [e for e in events[1:-1] if e["type"] in ("partial", "final")]
    assert [e for e in body if e["type"] == "final"], events
    for event in body:
        for key in ("stream", "text", "start", "end", "emitted", "latency_ms", "committed", "tentative"):
            assert key in event, (key, event)
        assert 0 <= event["start"] < event["end"] <= events[-1]["media_seconds"] + 0.05
        assert event["latency_ms"] >= 0
    assert events[-1]["finals"] == sum(e["type"] == "final" for e in events)
    assert events[-1]["latency_ms"]["final"]["n"] >= 2


def test_committed_text_never_changes_once_emitted(default_bundle: Path, tmp_path: Path) -> None:
    wav = speech_with_pauses(tmp_path, SENTENCES, "three")
    code, events, err = run_cli(default_bundle, "--source", str(wav))  # real-time paced, as from a microphone
    assert code == 0, err
    committed = ""
    partials = 0
    for event in events:
        if event["type"] == "partial":
            partials += 1
            assert event["committed"].startswith(committed), (committed, event)
            assert event["text"].startswith(event["committed"])
            committed = event["committed"]
        elif event["type"] == "final":
            assert event["text"].startswith(committed), (committed, event)
            committed = ""
    assert partials >= 6  # several updates per sentence while it was being spoken
    # A sanity bound only (accuracy has its own tests): after the first sentence, espeak's "Turn left at
    # the next…" decodes as "Don't leave…" with or without partials, which costs 0.18-0.21 here (0.06 on other
    # runs: real-time pacing moves the commits); 0.4 keeps six words of 34 for another machine's timing.
    assert wer(" ".join(SENTENCES), finals(events)) <= 0.4


def test_sample_clip_captions_speech_and_screen(default_bundle: Path) -> None:
    code, events, err = run_cli(default_bundle, "--source", "sample", "--no-realtime")
    assert code == 0, err
    text = finals(events).lower()
    assert "it was the best of times" in text and "fail better" in text
    visual = [e for e in events if e["type"] == "visual"]
    assert len(visual) >= 3  # slides and photos change
    labels = " ".join(label["label"] for e in visual for label in e["labels"])
    assert any(cat in labels for cat in ("tabby", "tiger cat", "Egyptian cat")), labels  # chelsea the cat


def test_silence_and_noise_produce_no_captions(default_bundle: Path) -> None:
    graph = "anoisesrc=color=pink:amplitude=0.05:duration=8,apad=pad_dur=4"
    code, events, err = run_cli(default_bundle, "--source", f"lavfi:{graph}", "--no-realtime")
    assert code == 0, err
    assert finals(events) == "" and not [e for e in events if e["type"] == "partial"]


def test_video_only_file_needs_no_speech_flag(default_bundle: Path, tmp_path: Path) -> None:
    clip = make_video_file(tmp_path / "silent.mp4", seconds=3, with_audio=False)
    code, events, err = run_cli(default_bundle, "--source", str(clip), "--no-realtime")
    assert code == 2 and "has no audio stream" in err and "silent.mp4" in err
    code, events, err = run_cli(default_bundle, "--source", str(clip), "--no-realtime", "--no-speech")
    assert code == 0, err
    assert [e for e in events if e["type"] == "visual"]


def test_stream_that_breaks_mid_way_keeps_what_was_captioned(default_bundle: Path, tmp_path: Path) -> None:
    wav = speech_with_pauses(tmp_path, SENTENCES[:2], "two", pause_s=2.0)
    mp4 = tmp_path / "talk.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", "-movflags", "+faststart",
                    str(mp4)], check=True)
    cut = truncate_file(mp4, tmp_path / "cut.mp4", 0.75)
    code, events, _ = run_cli(default_bundle, "--source", str(cut), "--no-realtime")
    errors = [e for e in events if e["type"] == "error"]
    if code == 1:  # the demuxer noticed the damage: reported, named, and the captions before it kept
        assert errors and "cut.mp4" in errors[0]["message"]
    else:  # the cut fell on a packet boundary: a clean, shorter stream
        assert code == 0 and not errors
    assert events[-1]["type"] == "end"
    first = next(e["text"] for e in events if e["type"] == "final")  # (not split at a full stop the model may omit)
    assert wer(SENTENCES[0], first) <= 0.2, first


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--source", "nosuch.wav"], "nosuch.wav: no such file"),
        (["--source", "foo:bar"], "accepted sources"),
        (["--source", "webcam:7"], "webcam"),
        (["--source", "sample", "--sink", "bogus"], "unknown sink 'bogus'"),
    ],
)
def test_bad_input_is_a_clear_one_line_error(default_bundle: Path, args: list[str], needle: str) -> None:
    code, _, err = run_cli(default_bundle, *args)
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_corrupt_media_is_named(default_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    code, _, err = run_cli(default_bundle, "--source", str(bad))
    assert code == 2 and "corrupt.mp4" in err and "Traceback" not in err


def test_missing_or_tampered_bundle_is_refused(default_bundle: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(tmp_path / "nobundle", "--source", "sample")
    assert code == 2 and "does not exist" in err and "build-default" in err
    copy = tmp_path / "bundle"
    shutil.copytree(default_bundle, copy)
    vad = next(p for p in copy.rglob("*.onnx") if "vad" in p.name.lower())
    data = bytearray(vad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    vad.write_bytes(bytes(data))
    code, _, err = run_cli(copy, "--source", "sample")
    assert code == 2 and "failed verification" in err and "'vad'" in err


def test_a_speaker_repeating_the_previous_sentence_gets_every_repeat(default_bundle: Path, tmp_path: Path) -> None:
    """The previous utterance is replayed as decoder context; saying it again must not look like a decoding loop
    (it did: only the first of three repeats was captioned)."""
    sentence = "Please send the report to the whole team today."
    wav = speech_with_pauses(tmp_path, [sentence] * 3, "repeat")
    code, events, err = run_cli(default_bundle, "--source", str(wav), "--no-realtime")
    assert code == 0, err
    said = [e["text"] for e in events if e["type"] == "final"]
    assert len(said) == 3, said
    # Each repeat is the sentence, not a loop or a fragment: one has 2 of its 9 words wrong here ("vote team
    # tonight"), so 0.5 rather than a bound one word away.
    assert all(wer(sentence, text) <= 0.5 for text in said), said


def test_single_words_after_short_pauses_each_get_a_final(default_bundle: Path, tmp_path: Path) -> None:
    """Commands spoken one word at a time ("front ... left ... side ... left"), with 300-600 ms pauses: every word
    the VAD hears as speech ends in a final; none is rejected as a noise burst or merged into its neighbour."""
    words = ["front", "left", "side", "left"]
    parts = [_sox_silence(tmp_path / "lead.wav", 0.5)]
    for i, (word, pause) in enumerate(zip(words, (0.3, 0.45, 0.6, 0.45), strict=True)):
        parts += [str(make_speech_wav(tmp_path / f"w{i}.wav", word, speed=175)),  # espeak-ng's own pace
                  _sox_silence(tmp_path / f"gap{i}.wav", pause)]
    parts.append(_sox_silence(tmp_path / "tail.wav", 1.0))
    wav = tmp_path / "commands.wav"
    subprocess.run(["sox", *parts, str(wav)], check=True)
    for pacing in ("--no-realtime", "--realtime"):
        code, events, err = run_cli(default_bundle, "--source", str(wav), "--no-visual", pacing)
        assert code == 0, err
        spans = [e for e in events if e["type"] == "final"]
        assert len(spans) == len(words), (pacing, [e["text"] for e in spans])
        assert events[-1]["counters"]["rejected_bursts"] == 0, pacing


def _sox_silence(path: Path, seconds: float) -> str:
    subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", "-b", "16", str(path), "trim", "0", str(seconds)],
                   check=True)
    return str(path)
