"""Speech recognition recipes (`task: speech-recognition`, e.g. export/whisper_tiny_en.yaml): Whisper from a
CTranslate2 checkpoint -> transformers [-> a distilled student] -> ONNX encoder + KV-cached decoder -> encoder
static INT8 QDQ + decoder dynamic INT8 -> WER gate against FP32 (the worst nodes kept FP32 while it fails) ->
[the encoder's TensorRT target] -> a bundle that `edgeomni run --bundle` captions with.

The INT8 pair must keep WER within `gate.max_delta` of FP32 on the held-out speech and be `gate.min_size_ratio`
times smaller; otherwise GateFailed (`edgeomni export` exits 3) with the report written and no bundle.
The Whisper model code (CTranslate2 reading, the ONNX graphs, the ONNX pair, distillation) is in
edgeomni/export/whisper/; the bundle's files and the report's tables in speech_bundle.py.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.datasets.audio import decode_audio
from edgeomni.datasets.audio_sets import calibration_audio, heldout_items
from edgeomni.datasets.calibration_photos import tensor_stats
from edgeomni.datasets.calibration_speech import calibration_features
from edgeomni.engines.whisper_features import LogMel
from edgeomni.errors import ExportError
from edgeomni.export.bundle_writer import publish_bundle, recipe_manifest
from edgeomni.export.model_source import resolve_path
from edgeomni.export.recipe import Recipe
from edgeomni.export.recipe_report import GateFailed, Report
from edgeomni.export.steps.gate_wer import WerGate
from edgeomni.export.steps.tensorrt_target import describe
from edgeomni.export.steps.tensorrt_whisper import encoder_target
from edgeomni.export.tasks.speech_bundle import NOTES, bundle_components, report_markdown
from edgeomni.export.whisper.ct2_to_hf import build_hf_whisper, check_mapping, load_ct2_whisper, mel_filters
from edgeomni.export.whisper.distill import distill_whisper_student
from edgeomni.export.whisper.evaluate import score
from edgeomni.export.whisper.onnx_pair import WhisperPair, export_pair, pair_asr, timings

CHECK_SENTENCE = "The quick brown fox jumps over the lazy dog near the old river bank."


def source_model(recipe: Recipe) -> Path:
    """The CTranslate2 model.bin the recipe names, and the recipe fields this task reads differently from the
    others, checked before any step runs."""
    if recipe.source.kind != "ctranslate2":
        raise ExportError(f"recipe {recipe.name}: source.kind: expected 'ctranslate2' for task speech-recognition "
                          f"(a Whisper model.bin or its directory), got {recipe.source.kind!r}")
    if recipe.quantize.mode != "static":
        raise ExportError("quantize.mode: expected 'static' for speech-recognition (the encoder is static INT8; "
                          f"the decoder is always dynamic INT8), got {recipe.quantize.mode!r}")
    if recipe.gate.min_size_ratio <= 0:  # the WER gate keeps nodes FP32 only within the size it leaves
        raise ExportError(f"gate.min_size_ratio: expected > 0 for speech-recognition, got {recipe.gate.min_size_ratio}")
    model = resolve_path(recipe, recipe.source.path, "source.path")
    model_bin = model / "model.bin" if model.is_dir() else model
    if not model_bin.is_file():
        raise ExportError(f"source.path: {model_bin} does not exist (a CTranslate2 Whisper model.bin is expected; "
                          "nothing is downloaded)")
    return model_bin


def media(recipe: Recipe, source: str) -> str:
    """Folders and trainer sets resolve from the recipe's directory; builtin/speechset are names."""
    kind, sep, rest = source.partition(":")
    if source in ("builtin", "speechset"):
        return source
    if sep and kind in ("trainer", "speechset"):
        return f"{kind}:{recipe.resolve(rest)}"
    return str(recipe.resolve(source))


def run(recipe: Recipe, work: Path, bundle: Path, report: Report) -> None:
    model_bin = source_model(recipe)
    whisper: dict[str, Any] = {"bundle": recipe.name, "version": recipe.version}
    work.mkdir(parents=True, exist_ok=True)
    try:
        _export(recipe, model_bin, work, bundle, report, whisper)
    finally:
        if "passed" in whisper.get("gate", {}):  # the Whisper figures, once the gate has judged them
            report.data["whisper"] = whisper
            report.data["calibration"] = whisper.get("calibration", {})
            report.data["markdown"] = report_markdown(whisper).splitlines()[1:]  # its title is the recipe report's
    report.data["targets"] = {t: "built (the INT8 ONNX pair; ONNX Runtime picks CUDA where it is offered)"
                              for t in recipe.targets if t != "tensorrt"}
    if "tensorrt" in recipe.targets:
        engine = whisper["tensorrt"]
        report.data["targets"]["tensorrt"] = f"encoder {describe(engine)}; {engine['decoder']}"


def _export(recipe: Recipe, model_bin: Path, work: Path, bundle: Path, report: Report,
            whisper: dict[str, Any]) -> None:
    say, quant, gate = report.progress, recipe.quantize, recipe.gate
    distill = recipe.distill_spec() if "distill" in recipe.steps else None
    started = time.perf_counter()
    with report.step("reading the CTranslate2 Whisper tiny.en and mapping it into transformers", key="map"):
        ct2 = load_ct2_whisper(model_bin)
        teacher = build_hf_whisper(ct2)
        filters = mel_filters(teacher.config.num_mel_bins)
        assets = {"vocabulary": ct2.vocabulary, "mel": work / "mel.npz"}
        np.savez(assets["mel"], filters=filters)
    with report.step("checking the mapping against faster-whisper on an espeak-ng sentence", key="check"):
        sentence = _espeak(CHECK_SENTENCE, work / "check.wav")
        whisper["mapping_check"] = {"reference": CHECK_SENTENCE, **check_mapping(teacher, ct2, sentence, filters)}
        say(f"    both heard: {whisper['mapping_check']['faster_whisper']!r}")
    model = teacher
    if distill is not None:
        with report.step(f"distilling a {distill.decoder_layers}-layer decoder student", key="distill"):
            model, whisper["distillation"] = distill_whisper_student(teacher, filters, distill, work, say)
    calibration_source = media(recipe, recipe.calibration.audio)
    with report.step(f"building the calibration set ({recipe.calibration.count} clips, {calibration_source})",
                     key="calibration"):
        clips, whisper["calibration"] = calibration_audio(calibration_source, recipe.calibration.count,
                                                          recipe.calibration.seed, Path, say)
        features = calibration_features(clips, filters)
        whisper["calibration"]["inputs"] = {"input_features": tensor_stats(features)}
    check = (LogMel(filters)(sentence), [50257, 50362, *whisper["mapping_check"]["tokens"]])
    pairs: dict[str, WhisperPair] = {}
    with report.step("exporting to ONNX (fp32) and quantizing: encoder static INT8 QDQ "
                     f"({quant.method}, {quant.activations}), decoder dynamic INT8", key="export"):
        # A student runs the windows it was distilled on (its decoder learnt those encoder outputs).
        student_windows = tuple(distill.windows_s) if distill is not None else None
        pairs[""] = export_pair(model, ct2, "", work, features, quant.method, quant.activations, whisper, say, check,
                                student_windows)
        if model is not teacher:  # the student's figures only mean something next to the teacher's, same run
            pairs["teacher_"] = export_pair(teacher, ct2, "teacher_", work, features, quant.method,
                                            quant.activations, whisper, say, check)
    del teacher, model
    with report.step("scoring FP32 and INT8 on the held-out speech (WER)", key="accuracy"):
        items, whisper["heldout"] = heldout_items(media(recipe, recipe.heldout.audio), recipe.heldout.count, Path,
                                                  say)
        accuracy: dict[str, Any] = {}
        for prefix, pair in pairs.items():
            for kind in ("fp32", "int8"):
                asr = pair_asr(*getattr(pair, kind), assets, pair.decoding, threads=2)
                accuracy[prefix + kind] = score(lambda a, asr=asr: asr.transcribe(a).text, items, say,
                                                f"{prefix}{kind} WER")
                say(f"    {prefix}{kind}: WER {accuracy[prefix + kind]['wer']:.2%} on "
                    f"{accuracy[prefix + kind]['words']} words")
        whisper["accuracy"] = accuracy
    shipped = pairs[""]
    with report.step("WER gate: INT8 against FP32 (sensitive nodes kept FP32 while it fails)", key="gate"):
        fp32_bytes, int8_bytes = (sum(p.stat().st_size for p in files) for files in (shipped.fp32, shipped.int8))
        wer_gate = WerGate(shipped, lambda e, d: pair_asr(e, d, assets, shipped.decoding, threads=2), items, clips,
                           features, quant, work, say)
        accuracy["int8"], whisper["gate"] = wer_gate.run(
            accuracy["fp32"]["wer"], accuracy["int8"], gate.max_delta,
            gate.max_excluded if gate.exclude_sensitive else 0,
            budget_bytes=fp32_bytes / gate.min_size_ratio - int8_bytes)
        for half, kept in whisper["gate"]["kept_fp32"].items():
            if kept:
                whisper["quantization"]["model"][half]["kept_fp32"] = [{"node": n, "sqnr_db": s} for n, s in kept]
    with report.step("timing encoder, decoder step and a whole utterance (1 thread)", key="latency"):
        whisper["latency"] = {}
        for prefix, pair in pairs.items():
            timed = timings({"fp32": pair.fp32, "int8": pair.int8}, assets, pair.decoding, sentence,
                            recipe.latency_runs)
            whisper["latency"].update({prefix + k: v for k, v in timed.items() if k in ("fp32", "int8")},
                                      threads=timed["threads"], utterance_seconds=timed["utterance_seconds"])
    with report.step("scoring faster-whisper int8 on the same clips" if recipe.peer else "peer skipped", key="peer"):
        if recipe.peer:
            whisper["peer"] = _peer(items, ct2.directory)
            say(f"    faster-whisper int8: WER {whisper['peer']['wer']:.2%}")
    _verdict(recipe, pairs, whisper, report, started)
    target = None
    if "tensorrt" in recipe.targets:
        def gate_encoder(encoder: Path) -> dict[str, Any]:
            """The TensorRT-form encoder with the shipped INT8 decoder: the WER gate, on the same held-out clips."""
            asr = pair_asr(encoder, shipped.int8[1], assets, shipped.decoding, threads=2)
            got = score(lambda a: asr.transcribe(a).text, items, say, "TensorRT-form encoder WER")["wer"]
            base, cpu = accuracy["fp32"]["wer"], accuracy["int8"]["wer"]
            return {"metric": "wer", "value": round(got, 4), "fp32": round(base, 4), "max_wer_delta": gate.max_delta,
                    "passed": got - base <= gate.max_delta + 1e-9,
                    "summary": f"WER {got:.2%} vs FP32 {base:.2%} (allowed +{gate.max_delta:.2%}, the CPU "
                               f"model: {cpu:.2%})"}

        with report.step("TensorRT target of the encoder (engine, the EP's ONNX; static INT8 QDQ)", key="tensorrt"):
            kept = [node for node, *_ in whisper["gate"]["kept_fp32"].get("encoder", [])]
            target = encoder_target(shipped.fp32[0], shipped.int8[0], features, clips, shipped.decoding.windows_s,
                                    quant.method, quant.activations, kept, work, say, gate_encoder)
            whisper["tensorrt"] = target.record
    with report.step("writing the bundle", key="bundle"):
        staging = bundle.with_name(bundle.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        components = bundle_components(staging, shipped.int8, assets, shipped.decoding, whisper, target)
        publish_bundle(staging, bundle, recipe_manifest(recipe, components, whisper["calibration"], NOTES))
        say(f"    bundle at {bundle}")


def _verdict(recipe: Recipe, pairs: dict[str, WhisperPair], whisper: dict[str, Any], report: Report,
             started: float) -> None:
    """Sizes and the gate's verdict into the report; GateFailed when WER or size misses the recipe's gate."""
    gate, accuracy = recipe.gate, whisper["accuracy"]
    files = {"fp32": pairs[""].fp32, "int8": pairs[""].int8}
    sizes = {kind: sum(p.stat().st_size for p in pair) for kind, pair in files.items()}
    whisper["size_bytes"] = {kind: {"encoder": pair[0].stat().st_size, "decoder": pair[1].stat().st_size,
                                    "total": sizes[kind]} for kind, pair in files.items()}
    whisper["size_ratio"] = round(sizes["fp32"] / sizes["int8"], 2)
    if "teacher_" in pairs:  # the student's sizes mean something next to the teacher's
        whisper["teacher_size_bytes"] = {kind: sum(p.stat().st_size for p in getattr(pairs["teacher_"], kind))
                                         for kind in ("fp32", "int8")}
    delta = accuracy["int8"]["wer"] - accuracy["fp32"]["wer"]
    failures = []
    if delta > gate.max_delta + 1e-9:
        kept = whisper["gate"]["rounds"][-1]["kept_fp32"]
        failures.append(f"INT8 WER {accuracy['int8']['wer']:.2%} is {delta:.2%} above FP32's "
                        f"{accuracy['fp32']['wer']:.2%} (allowed {gate.max_delta:.2%}), "
                        + (f"after keeping {kept} node(s) FP32 (max_excluded {gate.max_excluded}"
                           + (f"; {whisper['gate']['stopped']}" if "stopped" in whisper["gate"] else "") + ")"
                           if gate.exclude_sensitive else "gate.exclude_sensitive is off"))
    if whisper["size_ratio"] < gate.min_size_ratio:
        failures.append(f"INT8 is only {whisper['size_ratio']}x smaller than FP32 (needs {gate.min_size_ratio}x)")
    whisper["gate"].update({"wer_delta": round(delta, 4), "max_wer_delta": gate.max_delta,
                            "min_size_ratio": gate.min_size_ratio, "passed": not failures, "failures": failures})
    whisper["step_wall_s"] = report.wall_s
    whisper["total_wall_s"] = round(time.perf_counter() - started, 1)
    if failures:
        raise GateFailed("Whisper INT8 gate not met: " + "; ".join(failures))


def _espeak(text: str, wav: Path) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ExportError("the Whisper export needs espeak-ng: apt-get install espeak-ng")
    subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(wav), text], check=True, capture_output=True)
    return decode_audio(wav)


def _peer(items: list[dict[str, Any]], directory: Path) -> dict[str, Any]:
    from faster_whisper import WhisperModel  # ctranslate2: the bench extra, only for `peer: true`

    model = WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=2)

    def transcribe(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, beam_size=1, temperature=0.0, without_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False, language="en")
        return " ".join(s.text.strip() for s in segments)

    return {"system": "faster-whisper int8 (CTranslate2, greedy, 2 threads)", **score(transcribe, items)}
