"""The Whisper export's accuracy gate: INT8 WER within `max_wer_delta` of FP32 on the held-out speech, and,
when it is not, the nodes to keep in FP32, a few per round, until it is (the recipe's `gate.exclude_sensitive`,
up to `gate.max_excluded` nodes).

Which half to work on is measured, not guessed: the held-out speech is scored once more with only the encoder
INT8 and once with only the decoder INT8, and each round excludes from the half that costs more WER; after a
round the half it changed is scored alone again, so the work moves to the other half once that one costs more.
- Decoder (dynamic INT8): each weight MatMul is ranked by the signal-to-noise ratio that its own quantization
  leaves in its output, with FP32 inputs from teacher-forced passes over the calibration clips (the FP32
  model's own transcripts), activations quantized per token the way the runtime's one-token steps see them.
- Encoder (static QDQ): the calibration features' intermediate tensors, QDQ against FP32 (steps/gate_accuracy.py).
A node is only a candidate if keeping it FP32 leaves the bundle `min_size_ratio` times smaller than FP32: the
tied embedding/output table, for one, would come back as an 80 MB float copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.export.steps.gate_accuracy import sensitive_nodes
from edgeomni.export.steps.quantize_whisper import prepared_path, quantize_decoder, quantize_encoder
from edgeomni.export.whisper.evaluate import score


@dataclass(frozen=True)
class WeightMatMul:
    """A decoder MatMul with a weight initializer: the node, its activation input and its weight."""

    node: str
    activation: str
    weight: str
    elements: int
    shared: bool  # the weight also feeds another node (a float copy would be added, not swapped)


def weight_matmuls(model: Any) -> list[WeightMatMul]:
    """The MatMuls of `model` (an onnx ModelProto) that multiply an activation by a weight initializer."""
    initializers = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    found = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in initializers:
            found.append(WeightMatMul(node.name, node.input[0], node.input[1], initializers[node.input[1]],
                                      uses[node.input[1]] > 1))
    return found


def dynamic_int8_noise(x: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """(signal energy, noise energy) of x @ weight under ONNX Runtime's dynamic INT8: activations uint8 with
    their own range per row (one token per decoder step), weights int8 symmetric per tensor."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    low = np.minimum(rows.min(axis=1, keepdims=True), 0.0)
    high = np.maximum(rows.max(axis=1, keepdims=True), 0.0)
    scale = np.where(high > low, (high - low) / 255.0, 1.0)
    zero = np.clip(np.round(-low / scale), 0, 255)
    rows_q = (np.clip(np.round(rows / scale) + zero, 0, 255) - zero) * scale
    w = weight.astype(np.float64)
    w_scale = max(float(np.abs(w).max()) / 127.0, 1e-12)
    w_q = np.clip(np.round(w / w_scale), -127, 127) * w_scale
    exact = rows @ w
    return float((exact**2).sum()), float(((exact - rows_q @ w_q) ** 2).sum())


def decoder_sensitivity(fp32_decoder: Path, feeds: list[dict[str, np.ndarray]]) -> list[tuple[WeightMatMul, float]]:
    """Every weight MatMul of the FP32 decoder with the SQNR (dB) its dynamic INT8 leaves in its output by
    itself, over all `feeds` (decoder inputs); worst first."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(fp32_decoder))
    matmuls = weight_matmuls(model)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    known = {o.name for o in model.graph.output}
    wanted = sorted({m.activation for m in matmuls} - known)
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in wanted)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    energy = {m.node: [0.0, 0.0] for m in matmuls}
    for feed in feeds:
        tensors = dict(zip(names, session.run(None, feed), strict=True))
        for m in matmuls:
            signal, noise = dynamic_int8_noise(tensors[m.activation], weights[m.weight])
            energy[m.node][0] += signal
            energy[m.node][1] += noise
    scored = [(m, round(float(10 * np.log10(max(s, 1e-30) / max(n, 1e-30))), 2)) for m in matmuls
              for s, n in [energy[m.node]]]
    return sorted(scored, key=lambda item: item[1])


def decoder_feeds(asr: Any, clips: list[np.ndarray], limit: int = 8) -> list[dict[str, np.ndarray]]:
    """Teacher-forced decoder inputs: each calibration clip's FP32 transcript (`asr`: the FP32 pair) after the
    prompt, in one call with an empty cache, so every position's activations come out of one run."""
    feeds = []
    for clip in clips[:limit]:
        tokens = asr.transcribe(clip).tokens
        cross_k, cross_v = asr.encode(clip)
        ids = np.array([[*asr.decoding.prompt, *tokens]], dtype=np.int64)
        empty = asr.empty_cache()
        feeds.append({"input_ids": ids, "self_k": empty, "self_v": empty, "cross_k": cross_k, "cross_v": cross_v})
    return feeds


class WerGate:
    """Score INT8 against FP32 and, while it is too far off, keep the worst nodes of the costlier half in FP32.

    `pair`: a whisper/onnx_pair.WhisperPair (fp32 and int8 file pairs); `asr_for(encoder, decoder)` opens an
    ONNX pair as a WhisperAsr; `quantize`: the recipe's quantize section (method, activations); `items`: the
    held-out speech the gate scores; `clips`/`features`: the calibration audio and its log-mel features, where
    the sensitivity is measured (never on the held-out speech)."""

    def __init__(self, pair: Any, asr_for: Callable[[Path, Path], Any], items: list[dict[str, Any]],
                 clips: list[np.ndarray], features: np.ndarray, quantize: Any, work: Path,
                 progress: Callable[[str], None]) -> None:
        self.pair, self.asr_for, self.items = pair, asr_for, items
        self.clips, self.features, self.quantize, self.work, self.progress = clips, features, quantize, work, progress
        self.kept: dict[str, list[tuple[str, float]]] = {"encoder": [], "decoder": []}
        self.added_bytes = 0
        self._decoder_ranking: list[tuple[WeightMatMul, float]] | None = None

    def wer(self, encoder: Path, decoder: Path, label: str) -> dict[str, Any]:
        asr = self.asr_for(encoder, decoder)
        return score(lambda audio: asr.transcribe(audio).text, self.items, self.progress, label)

    def run(self, fp32_wer: float, int8: dict[str, Any], max_wer_delta: float, max_kept: int,
            budget_bytes: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Rounds until INT8 WER <= FP32 WER + max_wer_delta, `max_kept` nodes are FP32, or no node is left that
        fits `budget_bytes` (what the INT8 pair may still grow and stay `min_size_ratio` smaller). Returns the
        last INT8 score and the gate's record (blame, rounds, nodes kept FP32)."""
        rounds = [{"kept_fp32": 0, "int8_wer": int8["wer"], "wer_delta": round(int8["wer"] - fp32_wer, 4)}]
        record: dict[str, Any] = {"rounds": rounds, "kept_fp32": self.kept, "added_bytes": 0}
        if int8["wer"] - fp32_wer <= max_wer_delta + 1e-9 or max_kept <= 0:
            return int8, record
        record["blame"] = blame = self.blame(fp32_wer)
        self.progress(f"    WER over FP32 with only the encoder INT8: {blame['encoder']:+.2%}, "
                      f"only the decoder INT8: {blame['decoder']:+.2%}")
        while int8["wer"] - fp32_wer > max_wer_delta + 1e-9 and self.count < max_kept:
            halves = sorted(("decoder", "encoder"), key=lambda half: -blame[half])  # the costlier half now
            limit = min(2, max_kept - self.count)
            half, picked = next(((h, p) for h in halves if (p := self.candidates(h, budget_bytes, limit))),
                                ("", []))
            if not picked:
                record["stopped"] = f"no node left that fits the size budget ({budget_bytes / 1e6:.1f} MB)"
                break
            self.kept[half] += [(node, sqnr) for node, sqnr, _ in picked]
            self.added_bytes += sum(cost for *_, cost in picked)
            self.progress(f"    keeping {half} node(s) FP32: "
                          + ", ".join(f"{node} ({sqnr:.1f} dB)" for node, sqnr, _ in picked))
            self.requantize(half)
            int8 = self.wer(*self.pair.int8, f"INT8 WER, {self.count} node(s) kept FP32")
            rounds.append({"kept_fp32": self.count, "half": half, "nodes": [n for n, *_ in picked],
                           "int8_wer": int8["wer"], "wer_delta": round(int8["wer"] - fp32_wer, 4)})
            self.progress(f"    INT8 WER {int8['wer']:.2%} (FP32 {fp32_wer:.2%})")
            if int8["wer"] - fp32_wer > max_wer_delta + 1e-9 and self.count < max_kept:
                # Only this half changed: its cost alone is measured again, so the next round may move over.
                blame = {**blame, half: self.half_blame(half, fp32_wer)}
                rounds[-1]["alone"] = blame[half]
                self.progress(f"    WER over FP32 with only the {half} INT8 now: {blame[half]:+.2%}")
        record["added_bytes"] = self.added_bytes
        return int8, record

    @property
    def count(self) -> int:
        return len(self.kept["encoder"]) + len(self.kept["decoder"])

    def blame(self, fp32_wer: float) -> dict[str, float]:
        """WER over FP32 with only the encoder INT8, and with only the decoder INT8."""
        return {half: self.half_blame(half, fp32_wer) for half in ("encoder", "decoder")}

    def half_blame(self, half: str, fp32_wer: float) -> float:
        """WER over FP32 with only `half` INT8 (as it is now, with the nodes it keeps FP32)."""
        (enc32, dec32), (enc8, dec8) = self.pair.fp32, self.pair.int8
        encoder, decoder = (enc8, dec32) if half == "encoder" else (enc32, dec8)
        return round(self.wer(encoder, decoder, f"{half} INT8 only")["wer"] - fp32_wer, 4)

    def candidates(self, half: str, budget_bytes: float, limit: int) -> list[tuple[str, float, int]]:
        """Up to `limit` (node, SQNR dB, bytes it adds) of `half` not yet kept, worst first, within the budget."""
        taken = {node for node, _ in self.kept[half]}
        room = budget_bytes - self.added_bytes
        picked: list[tuple[str, float, int]] = []
        for node, sqnr, cost in self._ranking(half, taken):
            if node not in taken and cost <= room and len(picked) < limit:
                picked.append((node, sqnr, cost))
                room -= cost
        return picked

    def _ranking(self, half: str, taken: set[str]) -> list[tuple[str, float, int]]:
        if half == "decoder":  # isolated per-node errors from FP32 inputs: they do not change between rounds
            if self._decoder_ranking is None:
                self.progress("    measuring each decoder MatMul's INT8 error on the calibration clips")
                feeds = decoder_feeds(self.asr_for(*self.pair.fp32), self.clips)
                self._decoder_ranking = decoder_sensitivity(self.pair.fp32[1], feeds)
            # A shared weight (the tied embedding/output table) would gain a float copy beside its int8 one.
            return [(m.node, sqnr, m.elements * (4 if m.shared else 3)) for m, sqnr in self._decoder_ranking]

        self.progress("    comparing the encoder's INT8 tensors with FP32 on the calibration features")
        prepared = prepared_path(self.pair.int8[0], self.work)
        sizes = _weight_elements(prepared)
        ranked = sensitive_nodes(prepared, self.pair.int8[0], self.features[:2], "input_features", taken, limit=64)
        return [(node, sqnr, 3 * sizes[node]) for node, sqnr in ranked if node in sizes]

    def requantize(self, half: str) -> None:
        keep = [node for node, _ in self.kept[half]]
        if half == "decoder":
            quantize_decoder(self.pair.fp32[1], self.pair.int8[1], keep_fp32=keep)
        else:
            q = self.quantize
            quantize_encoder(self.pair.fp32[0], self.pair.int8[0], self.features, q.method, q.activations,
                             lambda _: None, keep_fp32=keep, work=self.work)


def _weight_elements(model_path: Path) -> dict[str, int]:
    """Weight elements of each weight-bearing Conv/Gemm/MatMul node: what keeping it FP32 costs, over INT8."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    return {node.name: sizes[node.input[1]] for node in model.graph.node
            if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in sizes}
