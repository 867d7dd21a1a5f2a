"""`edgeomni bench speech` and its speech set: generator, scoring, a real (not paced) harness run, a peer."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeomni.bench.metrics import match_endpoints, score_stream
from edgeomni.datasets.audio import decode, offline_spans
from edgeomni.datasets.speechset import QUICK, SpeechSet, load_speech_set, make_speech_set, read_wav, speech_segments

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def speech_set(tmp_path_factory: pytest.TempPathFactory) -> SpeechSet:
    return make_speech_set(tmp_path_factory.mktemp("speechset"), progress=lambda _: None)


def test_speech_set_has_wav_and_reference_pairs(speech_set: SpeechSet) -> None:
    kinds = [c.kind for c in speech_set.clips]
    assert kinds.count("speech") == 14 and kinds.count("nonspeech") == 4
    for clip in speech_set.clips:
        wav, txt = speech_set.wav(clip), speech_set.root / f"{clip.name}.txt"
        assert wav.is_file() and txt.is_file(), clip.name
        audio = read_wav(wav)
        assert abs(len(audio) / 16_000 - clip.seconds) < 0.01
        if clip.kind == "speech":
            assert txt.read_text().strip() == clip.reference and len(clip.reference.split()) >= 10
            assert clip.segments, f"{clip.name}: no speech found by the end-of-speech detector"
        else:
            assert txt.read_text() == "" and clip.segments == []
    nonspeech = sum(c.seconds for c in speech_set.clips if c.kind == "nonspeech")
    assert nonspeech >= 60.0
    assert 180.0 <= speech_set.seconds <= 300.0  # one real-time pass stays bearable
    # Cached: loading again reuses the files rather than regenerating them.
    assert load_speech_set(speech_set.root).seconds == speech_set.seconds


def test_speech_set_is_deterministic(speech_set: SpeechSet, tmp_path: Path) -> None:
    again = make_speech_set(tmp_path / "again", progress=lambda _: None)
    for clip in again.clips:
        a, b = speech_set.wav(clip).read_bytes(), again.wav(clip).read_bytes()
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest(), clip.name
    assert json.loads((again.root / "manifest.json").read_text()) == json.loads(
        (speech_set.root / "manifest.json").read_text())


def test_noisy_clip_keeps_segments_of_its_clean_speech(speech_set: SpeechSet) -> None:
    noisy = next(c for c in speech_set.clips if c.info.get("noise") == "pinknoise" and c.info.get("snr_db") == 15.0)
    assert len(noisy.segments) == 3  # three sentences, found on the clean audio: the noise cannot merge them
    audio = read_wav(speech_set.wav(noisy))
    speech = np.concatenate([audio[int(s * 16000): int(e * 16000)] for s, e in noisy.segments])
    gaps = audio[int(noisy.segments[0][1] * 16000) + 1600: int(noisy.segments[1][0] * 16000) - 1600]
    snr = 20 * math.log10(np.sqrt(np.mean(speech**2)) / np.sqrt(np.mean(gaps**2)))
    assert 12.0 < snr < 19.0  # ~15 dB of speech over noise, measured on the file itself


def test_segments_of_tone_bursts() -> None:
    rate = 16_000
    t = np.arange(rate) / rate
    burst = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    gap_short, gap_long = np.zeros(int(0.2 * rate), np.float32), np.zeros(int(0.8 * rate), np.float32)
    audio = np.concatenate([gap_long, burst, gap_short, burst, gap_long, burst, gap_long])
    segments = speech_segments(audio)
    assert len(segments) == 2  # the 200 ms pause is inside a segment, the 800 ms one separates two
    assert segments[0] == pytest.approx([0.8, 3.0], abs=0.02) and segments[1] == pytest.approx([3.8, 4.8], abs=0.02)
    assert speech_segments(np.zeros(rate, np.float32)) == []


def test_end_of_speech_matching() -> None:
    # Ends at 1, 2, 5 s; finals at 2.6 (covers ends 1 and 2: one merged), 0.5 (before any end), 5.4.
    match = match_endpoints([1.0, 2.0, 5.0], [2.6, 0.5, 5.4])
    assert match.latencies_ms == [600.0, 400.0]
    assert match.merged_ms == [1600.0]
    assert match.unmatched_finals == 1 and match.missing == 0
    assert match_endpoints([1.0, 3.0], [1.2]).missing == 1


def test_score_stream_uses_the_shared_normaliser(speech_set: SpeechSet) -> None:
    clip = next(c for c in speech_set.clips if c.name == "real_beckett")
    events = [{"type": "final", "text": "EVER tried, ever failed! No matter.", "emitted": 3.0, "latency_ms": 1.0},
              {"type": "partial", "text": "try", "emitted": 3.5, "latency_ms": 80.0},
              {"type": "final", "text": "Try again; fail again - fail better", "emitted": 9.5, "latency_ms": 1.0}]
    scored = score_stream(events, clip)
    assert scored["edits"] == 0 and scored["ref_words"] == 12
    assert scored["partial_latency_ms"] == [80.0] and scored["finals"] == 2


def test_offline_spans_cut_long_clips_in_pauses() -> None:
    segments = [[float(s), float(s) + 4.0] for s in range(0, 60, 5)]  # 4 s of speech every 5 s
    spans = offline_spans(62.0, segments)
    assert all(b - a <= 30.0 for a, b in spans) and spans[0][0] == 0.0 and spans[-1][1] == 62.0
    assert all(any(abs(b - (s[1] + 0.5)) < 1e-9 for s in segments) for _, b in spans[:-1])  # mid-pause cuts


def test_harness_on_two_clips(speech_set: SpeechSet, default_bundle: Path, tmp_path: Path) -> None:
    from edgeomni.bench.speech import SpeechBenchOptions, rescore, run_speech_bench, write_report

    options = SpeechBenchOptions(set_dir=speech_set.root, out=tmp_path / "out", bundle=default_bundle,
                                 realtime=False, peers=[], clips=["real_beckett", "nonspeech_pink_18s"],
                                 command="pytest")
    report = run_speech_bench(options, progress=lambda _: None)
    assert set(report["systems"]) == {"edgeomni", "moonshine-offline"}
    edge = report["systems"]["edgeomni"]["summary"]
    for key in ("wer", "partial_latency_ms", "eos_final_ms", "rtf", "cpu_s", "peak_rss_mb", "nonspeech_words",
                "counters", "clips"):
        assert key in edge, key
    assert math.isfinite(edge["wer"])
    # Word for word here (12 words): 0.25 leaves three words for another CPU, a sanity bound on the plumbing.
    assert edge["clips"]["real_beckett"]["wer"] <= 0.25, edge["clips"]["real_beckett"]["hypothesis"]
    assert edge["clips"]["nonspeech_pink_18s"]["words_emitted"] == 0
    assert edge["peak_rss_mb"] > edge["baseline_rss_mb"] > 0 and edge["cpu_s"] > 0
    assert "merged_updates" in edge["counters"]
    assert report["acceptance"]["offline_wer"] is not None
    json_path, md_path = write_report(report, options.out)
    assert json.loads(json_path.read_text())["raw"]["edgeomni"][0]["files"][0]["streams"][0]["events"]
    markdown = md_path.read_text()
    assert "### Partial-update latency (ms)" in markdown and "| edgeomni |" in markdown and "cores" in markdown
    again = rescore(json_path, progress=lambda _: None)  # saved raw events scored again give the same figures
    assert again["systems"]["edgeomni"]["summary"]["wer"] == edge["wer"] and again["rescored"]


def test_pocketsphinx_peer_transcribes_a_clip(speech_set: SpeechSet) -> None:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        reason = "pocketsphinx is not installed (pip install -r requirements/bench.txt)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    from edgeomni.bench.peers import make_peer
    from edgeomni.bench.systems import pace_peer

    peer = make_peer("pocketsphinx")
    peer.load()
    clip = next(c for c in speech_set.clips if c.name == QUICK[1])
    events, busy = pace_peer(peer, asyncio.run(decode(speech_set.wav(clip))), realtime=False)
    finals = [e for e in events if e["type"] == "final"]
    assert finals and " ".join(e["text"] for e in finals).strip(), events
    assert busy > 0 and all(e["latency_ms"] >= 0 for e in events)


def test_cli_parses_bench_speech() -> None:
    from edgeomni.bench.cli import add_bench_parser

    parser = argparse.ArgumentParser(prog="edgeomni")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "speech", "--streams", "auto", "--peers", "none", "--no-realtime"])
    assert args.streams is None and args.peers == [] and args.realtime is False
    args = parser.parse_args(["bench", "speech"])
    assert args.streams == 1 and args.peers == ["moonshine-voice", "faster-whisper", "pocketsphinx"]
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "speech", "--peers", "whisper.cpp"])


def test_bench_imports_no_peer_package() -> None:
    code = ("import sys\nimport edgeomni.bench.cli, edgeomni.bench.speech, edgeomni.bench.peers\n"
            "print(','.join(m for m in ('faster_whisper', 'ctranslate2', 'pocketsphinx', 'moonshine_voice') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
