"""The Whisper WER gate keeps sensitive nodes FP32, round by round, when INT8 misses it.

The decoder's per-node error model is checked against ONNX Runtime's own dynamic INT8; the rounds run on the real
Whisper tiny.en pair (exported here, FP32 + INT8) with a gate that cannot hold, so every round happens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _matmul_model(path: Path, weight: np.ndarray, shared: bool = False) -> None:
    """x (rows, k) @ weight [-> y, and with `shared` a second MatMul reading the same weight]."""
    rows, k = None, weight.shape[0]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="first")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, weight.shape[1]])]
    if shared:
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["z"], name="second"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [rows, weight.shape[1]]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, k])],
                              outputs, [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_dynamic_int8_error_model_matches_onnxruntime(tmp_path: Path) -> None:
    """The noise dynamic_int8_noise predicts for one row (one decoder step) is what ORT's MatMulInteger gives."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgeomni.export.steps.gate_wer import dynamic_int8_noise, weight_matmuls

    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.05, (384, 256)).astype(np.float32)
    weight[3, 7] = 0.9  # an outlier: the per-tensor scale it forces is what makes some layers noisy
    _matmul_model(tmp_path / "fp32.onnx", weight)
    quantize_dynamic(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx"), weight_type=QuantType.QInt8,
                     per_channel=False)
    fp32, int8 = (ort.InferenceSession(str(tmp_path / f"{k}.onnx"), providers=["CPUExecutionProvider"])
                  for k in ("fp32", "int8"))
    for row in (rng.normal(0, 1, (1, 384)), np.abs(rng.normal(0, 3, (1, 384))) + 0.5):  # two- and one-sided
        x = row.astype(np.float32)
        exact, quantized = fp32.run(None, {"x": x})[0], int8.run(None, {"x": x})[0]
        signal, noise = dynamic_int8_noise(x, weight)
        assert signal == pytest.approx(float((exact.astype(np.float64) ** 2).sum()), rel=1e-5)
        assert noise == pytest.approx(float(((exact - quantized).astype(np.float64) ** 2).sum()), rel=1e-3)
        assert noise > 0
    _matmul_model(tmp_path / "shared.onnx", weight, shared=True)
    found = weight_matmuls(onnx.load(str(tmp_path / "shared.onnx")))
    assert [(m.node, m.weight, m.elements, m.shared) for m in found] == [
        ("first", "w", 384 * 256, True), ("second", "w", 384 * 256, True)]


@pytest.fixture(scope="module")
def teacher_pair(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Whisper tiny.en as the export makes it: FP32 pair, encoder static INT8 (2 calibration clips), decoder
    dynamic INT8; plus 2 held-out speech clips and what the gate needs to open the pair."""
    from edgeomni.datasets.audio_sets import speech_items
    from edgeomni.datasets.calibration_speech import calibration_clips, calibration_features
    from edgeomni.engines.whisper_asr import WhisperDecoding
    from edgeomni.export.steps.quantize_whisper import quantize_decoder, quantize_encoder
    from edgeomni.export.whisper.ct2_to_hf import build_hf_whisper, load_ct2_whisper, mel_filters
    from edgeomni.export.whisper.onnx_graph import export_whisper_onnx
    from edgeomni.export.whisper.onnx_pair import WhisperPair, pair_asr

    work = tmp_path_factory.mktemp("whisper-gate")
    ct2 = load_ct2_whisper()
    pair = WhisperPair(fp32=(work / "encoder_fp32.onnx", work / "decoder_fp32.onnx"),
                 int8=(work / "encoder_int8.onnx", work / "decoder_int8.onnx"), shapes={})
    shapes = export_whisper_onnx(build_hf_whisper(ct2), *pair.fp32, progress=lambda _: None)
    pair.decoding = WhisperDecoding(num_layers=shapes["num_layers"], num_heads=shapes["num_heads"],
                                    head_dim=shapes["head_dim"], suppress_ids=tuple(ct2.config["suppress_ids"]))
    filters = mel_filters()
    clips, _ = calibration_clips(2, seed=0, progress=lambda _: None)
    features = calibration_features(clips, filters)
    quantize_encoder(pair.fp32[0], pair.int8[0], features, progress=lambda _: None, work=work)
    quantize_decoder(pair.fp32[1], pair.int8[1])
    np.savez(work / "mel.npz", filters=filters)
    assets = {"vocabulary": ct2.vocabulary, "mel": work / "mel.npz"}
    return {"pair": pair, "clips": clips, "features": features, "work": work,
            "items": speech_items(progress=lambda _: None)[:2],
            "asr_for": lambda e, d: pair_asr(e, d, assets, pair.decoding, threads=2)}


def _gate(teacher_pair: dict, lines: list[str]) -> Any:
    from edgeomni.export.recipe import QuantizeSpec
    from edgeomni.export.steps.gate_wer import WerGate

    t = teacher_pair  # encoder quantized as quantize_encoder's defaults: percentile, uint8 activations
    return WerGate(t["pair"], t["asr_for"], t["items"], t["clips"], t["features"],
                   QuantizeSpec(method="percentile", activations="uint8-asymmetric"), t["work"], lines.append)


def _float_weight_nodes(path: Path) -> set[str]:
    """Weight-bearing MatMul/Gemm nodes that still multiply a float weight (not an int8 one, nor a dequantized)."""
    model = onnx.load(str(path))
    floats = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    return {n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
            and n.input[1] in floats}


@pytest.mark.slow
def test_failing_wer_gate_keeps_the_worst_nodes_fp32_round_by_round(teacher_pair: dict) -> None:
    pair = teacher_pair["pair"]
    lines: list[str] = []
    gate = _gate(teacher_pair, lines)
    fp32 = gate.wer(*pair.fp32, "FP32")
    int8 = gate.wer(*pair.int8, "INT8")
    before = {half: _float_weight_nodes(path) for half, path in zip(("encoder", "decoder"), pair.int8, strict=True)}
    # A gate INT8 cannot meet (a WER a point *below* FP32's... minus 100): every round runs, up to 3 nodes.
    last, record = gate.run(fp32["wer"], int8, max_wer_delta=-1.0, max_kept=3, budget_bytes=50e6)
    assert set(record["blame"]) == {"encoder", "decoder"}
    assert [r["kept_fp32"] for r in record["rounds"]] == [0, 2, 3]
    assert record["rounds"][-1]["int8_wer"] == last["wer"] and last["words"] == fp32["words"]
    blamed = max(("decoder", "encoder"), key=lambda half: record["blame"][half])
    assert record["rounds"][1]["half"] == blamed, record
    # After a round that misses, the half it changed is scored alone again; the next round takes the costlier half.
    after = {**record["blame"], blamed: record["rounds"][1]["alone"]}
    assert record["rounds"][2]["half"] == max(("decoder", "encoder"), key=lambda half: after[half]), record
    assert "alone" not in record["rounds"][2]  # the last round: nothing follows it
    kept = {half: [node for node, _ in nodes] for half, nodes in record["kept_fp32"].items()}
    assert sum(len(nodes) for nodes in kept.values()) == 3
    for half, path in zip(("encoder", "decoder"), pair.int8, strict=True):
        # The rewritten INT8 file of each half multiplies exactly its kept nodes in float, and nothing else new.
        assert _float_weight_nodes(path) - before[half] == set(kept[half]), half
    # Worst first: the SQNRs of one round's picks do not rise.
    sqnrs = [s for node, s in record["kept_fp32"][blamed]]
    assert sqnrs[:2] == sorted(sqnrs[:2]) and all(type(s) is float for s in sqnrs)
    assert 0 < record["added_bytes"] <= 50e6
    assert any("keeping" in line and "FP32" in line for line in lines)
    # The other half's ranking names its own weight nodes too (encoder: names of the pre-processed graph).
    from edgeomni.export.steps.quantize_whisper import prepared_path

    other = "encoder" if blamed == "decoder" else "decoder"
    graph = prepared_path(pair.int8[0], teacher_pair["work"]) if other == "encoder" else pair.fp32[1]
    picks = gate.candidates(other, 50e6, 2)
    assert len(picks) == 2 and {node for node, *_ in picks} <= _float_weight_nodes(graph), picks
    assert all(cost > 0 for *_, cost in picks) and picks[0][1] <= picks[1][1]


@pytest.mark.slow
def test_gate_rounds_stop_where_no_node_fits_the_size_budget(teacher_pair: dict) -> None:
    """The tied output table (80 MB as a float copy) and every other node cost more than 1 kB: nothing is tried."""
    pair = teacher_pair["pair"]
    gate = _gate(teacher_pair, [])
    fp32 = gate.wer(*pair.fp32, "FP32")
    last, record = gate.run(fp32["wer"], {"wer": fp32["wer"] + 0.5}, max_wer_delta=0.01, max_kept=8,
                            budget_bytes=1000)
    assert record["rounds"] == [{"kept_fp32": 0, "int8_wer": fp32["wer"] + 0.5, "wer_delta": 0.5}]
    assert "size budget" in record["stopped"] and last["wer"] == fp32["wer"] + 0.5
    assert record["kept_fp32"] == {"encoder": [], "decoder": []}


def test_recipe_gate_fields_reach_the_whisper_export_and_its_report(tmp_path: Path) -> None:
    from edgeomni.errors import ExportError
    from edgeomni.export.recipe import Recipe
    from edgeomni.export.tasks.speech import source_model
    from edgeomni.export.tasks.speech_bundle import _gate_round_lines

    recipe = Recipe.load(Path("export/whisper_tiny_en.yaml"), ["gate.max_excluded=3", "gate.exclude_sensitive=false"])
    assert (recipe.gate.max_excluded, recipe.gate.exclude_sensitive) == (3, False)
    assert Recipe.load(Path("export/whisper_tiny_en.yaml")).gate.max_excluded == 8
    with pytest.raises(ExportError, match=r"gate\.max_excluded: expected 0\.\.200, got -1"):
        Recipe.load(Path("export/whisper_tiny_en.yaml"), ["gate.max_excluded=-1"])
    unbounded = Recipe.load(Path("export/whisper_tiny_en.yaml"), ["gate.min_size_ratio=0"])
    with pytest.raises(ExportError, match=r"gate\.min_size_ratio: expected > 0 for speech-recognition, got 0\.0"):
        source_model(unbounded)

    passed_at_once = {"rounds": [{"kept_fp32": 0, "int8_wer": 0.07, "wer_delta": 0.0}],
                      "kept_fp32": {"encoder": [], "decoder": []}}
    assert _gate_round_lines(passed_at_once) == []
    rounds = {"blame": {"encoder": 0.002, "decoder": 0.015}, "added_bytes": 1_769_472,
              "kept_fp32": {"encoder": [], "decoder": [("/fc2_1/MatMul", 27.5), ("/v_proj/MatMul", 28.1)]},
              "rounds": [{"kept_fp32": 0, "int8_wer": 0.25, "wer_delta": 0.018},
                         {"kept_fp32": 2, "half": "decoder", "nodes": ["/fc2_1/MatMul", "/v_proj/MatMul"],
                          "int8_wer": 0.238, "wer_delta": 0.006, "alone": 0.004}]}
    text = "\n".join(_gate_round_lines(rounds))
    assert "only the encoder INT8: +0.20 points, only the decoder INT8: +1.50" in text
    assert "| 1 | decoder | /fc2_1/MatMul (27.5), /v_proj/MatMul (28.1) | 23.80% | +0.60 | +0.40 |" in text
    assert "| 0 | - | - | 25.00% | +1.80 | - |" in text
    assert "add 1.77 MB" in text
