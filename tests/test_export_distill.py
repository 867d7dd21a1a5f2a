"""The distilled Whisper student: DistillSpec validation, train/bench text disjointness, a tiny real
distillation (2-layer decoder -> ONNX -> INT8 decoder -> WhisperAsr), the
encoder-output cache, and the torchrun (DDP, gloo on CPU) entry point with 2 processes.

The tiny run trains on 4 espeak-ng clips for 16 steps of one batch (so its loss must fall) and checks that the
student's ONNX export (INT8 decoder) transcribes one of those clips close to the teacher's pseudo-label. The
whole student path through build.py (bundle with num_layers 2, teacher beside it) is the full-size run in
docs/BENCHMARKS.md, which takes too long for a test on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeomni.errors import ExportError
from edgeomni.export.whisper.distill_spec import DistillSpec

TINY = dict(decoder_layers=2, clips=4, package_clips=False, noise_fraction=0.0, long_fraction=0.0,
            label_filter_wer=None, held_out=0.0,
            epochs=50, max_steps=16, batch_size=4, lr=1e-3)


@pytest.mark.parametrize(("fields", "message"), [
    ({"decoder_layers": 7}, "distill.decoder_layers: expected 1..3, got 7"),
    ({"decoder_layers": 2, "init_layers": (0,)}, r"distill.init_layers: expected 2 teacher layer indices in 0..3"),
    ({"init_layers": (0, 9)}, r"distill.init_layers: .* got \(0, 9\)"),
    ({"temperature": 0}, "distill.temperature: expected a number > 0, got 0"),
    ({"temperature": "hot"}, "distill.temperature: expected a number > 0, got 'hot'"),
    ({"kd_weight": 1.5}, r"distill.kd_weight: expected a number >= 0 and <= 1, got 1.5"),
    ({"long_fraction": -0.1}, r"distill.long_fraction: expected a number >= 0 and <= 1, got -0.1"),
    ({"encoder_noise": 1.5}, r"distill.encoder_noise: expected a number >= 0 and <= 1, got 1.5"),
    ({"epochs": 0}, "distill.epochs: expected an integer >= 1, got 0"),
    ({"batch_size": 2.5}, "distill.batch_size: expected an integer >= 1, got 2.5"),
    ({"device": "tpu"}, "distill.device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    ({"clips": 0, "package_clips": False}, "distill.clips: expected >= 1 when package_clips is off and no audio"),
    ({"audio": 3}, "distill.audio: expected 'trainer:DIR' or a folder of audio files, got 3"),
    ({"init_layers": 3}, r"distill.init_layers: expected 2 teacher layer indices in 0..3, got 3"),
    ({"windows_s": (5, 30)}, r"distill.windows_s: expected increasing whole seconds in 10..30 ending with 30, "
                             r"got \(5, 30\)"),
    ({"windows_s": (15,)}, r"distill.windows_s: .* ending with 30, got \(15,\)"),
    ({"windows_s": (30, 15)}, r"distill.windows_s: .* got \(30, 15\)"),
])
def test_distill_spec_names_the_bad_field(fields: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        DistillSpec(**fields).validate("distill")


def test_encoder_noise_reaches_the_student_s_view_only() -> None:
    """The teacher as its own student: KL 0 on the clean encoder output; with `encoder_noise` the student side
    reads a noisy copy (KL > 0) while the teacher's targets stay those of the clean one."""
    import numpy as np
    import torch

    from edgeomni.export.whisper.ct2_to_hf import build_hf_whisper, load_ct2_whisper
    from edgeomni.export.whisper.distill_train import kd_losses, make_batch

    teacher = build_hf_whisper(load_ct2_whisper()).eval()
    hidden = np.random.default_rng(0).normal(0, 1, (2, 750, 384)).astype(np.float16)
    batch = make_batch(hidden, [[50257, 50362, 464, 2068, 50256], [50257, 50362, 40, 50256]], "cpu")
    spec = DistillSpec()
    with torch.no_grad():
        clean = kd_losses(teacher, teacher, batch, spec, (0, 1, 2, 3))
        torch.manual_seed(0)
        noisy = kd_losses(teacher, teacher, batch, spec, (0, 1, 2, 3), encoder_noise=0.05)
        torch.manual_seed(0)
        again = kd_losses(teacher, teacher, batch, spec, (0, 1, 2, 3), encoder_noise=0.05)
    assert float(clean["kl"]) == pytest.approx(0.0, abs=1e-6)
    assert float(noisy["kl"]) > 1e-4 and float(noisy["loss"]) == float(again["loss"])  # seeded


def test_distill_command_names_a_bad_option(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgeomni.export.whisper.distill", "--out", str(tmp_path / "s"),
                           "--decoder-layers", "7"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error: distill.decoder_layers: expected 1..3, got 7" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_distill_spec_defaults_are_valid_and_spread_the_init_layers() -> None:
    spec = DistillSpec()
    spec.validate()
    assert spec.resolved_init_layers() == (0, 3)  # first + last, as distil-whisper
    assert DistillSpec(decoder_layers=3).resolved_init_layers() == (0, 1, 3)
    # Building and validating a spec needs no torch (the recipe loader imports it on the runtime-free path).
    code = ("import sys; from edgeomni.export.whisper.distill_spec import DistillSpec; DistillSpec().validate(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_training_text_is_disjoint_from_the_bench_speech_set() -> None:
    from edgeomni.datasets.speechset import SENTENCES
    from edgeomni.export.whisper.distill import bench_references
    from edgeomni.export.whisper.distill_corpus import TRAIN_SENTENCES, check_disjoint

    result = check_disjoint(TRAIN_SENTENCES, bench_references())
    assert result["disjoint"] and result["train_sentences"] == len(set(TRAIN_SENTENCES)) >= 100
    # The check itself can fail: a bench sentence, or 5 of its words in a row inside another sentence.
    with pytest.raises(ExportError, match="overlaps the bench speech set"):
        check_disjoint([*TRAIN_SENTENCES, SENTENCES[3]], bench_references())
    with pytest.raises(ExportError, match="share 5 consecutive words"):
        check_disjoint(["Yesterday " + SENTENCES[0].lower()], bench_references())


def test_epoch_batches_keep_one_window_each_and_every_rank_the_same_count() -> None:
    """Clips encoded in 15 s and 30 s windows never share a batch (one tensor shape), and under DDP every rank
    gets as many batches as the others, in the same window order (a rank with one batch more would hang)."""
    import numpy as np

    from edgeomni.export.whisper.distill import DistContext, _epoch_shards

    train = np.arange(23)
    window = np.where(train % 4 == 0, 1500, 750)  # 6 clips of 30 s, 17 of 15 s
    single = _epoch_shards(train, window, 1, 0, DistContext(), 4)
    assert sorted(np.concatenate(single).tolist()) == train.tolist()
    assert all(len(set(window[b])) == 1 for b in single) and len(single) == 2 + 5
    assert [b.tolist() for b in _epoch_shards(train, window, 1, 0, DistContext(), 4)] == [b.tolist() for b in single]
    assert [b.tolist() for b in _epoch_shards(train, window, 2, 0, DistContext(), 4)] != [b.tolist() for b in single]
    ranks = [_epoch_shards(train, window, 1, 0, DistContext(rank, 2), 4) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 1 + 3
    assert [window[b[0]] for b in ranks[0]] == [window[b[0]] for b in ranks[1]]
    assert all(len(set(window[b])) == 1 for shards in ranks for b in shards)


def test_windowed_encoder_states_are_transformers_at_30_s_and_sliced_below() -> None:
    """The distillation encodes each clip in its runtime window; at 30 s that is exactly transformers' encoder."""
    import torch

    from edgeomni.engines.whisper_asr import window_frames
    from edgeomni.export.whisper.ct2_to_hf import build_hf_whisper, load_ct2_whisper
    from edgeomni.export.whisper.distill_data import encoder_states

    encoder = build_hf_whisper(load_ct2_whisper()).model.encoder.eval()
    features = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = encoder_states(encoder, features)
        assert torch.allclose(full, encoder(features).last_hidden_state, atol=1e-5)
        assert encoder_states(encoder, features[:, :, :1500]).shape == (1, 750, 384)
    assert window_frames(13 * 16_000, (15, 30)) == 1500 and window_frames(14 * 16_000 + 1, (15, 30)) == 3000
    assert window_frames(40 * 16_000, (15, 30)) == 3000 and window_frames(5 * 16_000, (30,)) == 3000
    assert window_frames(17 * 16_000, (15, 20, 30)) == 2000 == window_frames(19 * 16_000, (15, 20, 30))


def test_long_fraction_makes_long_clips_and_zero_keeps_the_clips_of_before() -> None:
    from edgeomni.export.whisper.distill_corpus import TRAIN_SENTENCES
    from edgeomni.export.whisper.distill_data import synthesize

    long = synthesize(2, TRAIN_SENTENCES, seed=3, noise_fraction=0.0, long_fraction=1.0)
    assert all(sum(t in info["script"] for t in TRAIN_SENTENCES) >= 4 and len(audio) > 10 * 16_000
               for audio, info in long), [info["script"] for _, info in long]
    short = [info["script"] for _, info in synthesize(3, TRAIN_SENTENCES, seed=3, noise_fraction=0.0)]
    assert short == [info["script"] for _, info in synthesize(3, TRAIN_SENTENCES, 3, 0.0, long_fraction=0.0)]
    assert all(sum(t in script for t in TRAIN_SENTENCES) <= 3 for script in short)


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict, Path]:
    """A 2-layer student distilled at toy size (the real teacher, real espeak-ng clips, 16 real steps)."""
    from edgeomni.export.whisper.ct2_to_hf import build_hf_whisper, load_ct2_whisper, mel_filters
    from edgeomni.export.whisper.distill import distill_whisper_student

    root = tmp_path_factory.mktemp("distill")
    spec = DistillSpec(**TINY, cache_dir=root / "cache")
    teacher = build_hf_whisper(load_ct2_whisper())
    student, report = distill_whisper_student(teacher, mel_filters(), spec, root / "work",
                                              progress=lambda line: print(line, flush=True))
    return student, report, root / "cache"


@pytest.mark.slow
def test_tiny_distillation_learns_and_its_int8_export_transcribes(tiny_student: tuple, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    from edgeomni.engines.whisper_asr import WhisperAsr, WhisperDecoding
    from edgeomni.export.steps.quantize_whisper import quantize_decoder
    from edgeomni.export.whisper.ct2_to_hf import build_hf_whisper, load_ct2_whisper, mel_filters
    from edgeomni.export.whisper.distill_corpus import TRAIN_SENTENCES
    from edgeomni.export.whisper.distill_data import synthesize
    from edgeomni.export.whisper.onnx_graph import export_whisper_onnx
    from edgeomni.wer import words

    student, report, _ = tiny_student
    assert report["student"]["decoder_layers"] == 2 and report["student"]["init_layers"] == [0, 3]
    data = report["data"]
    # The teacher may loop on a clip at 15 s (no end of text within its budget) and that label is dropped: none of
    # the 4 here, one on other machines (a near-tie for the model); two left still make a batch to train on.
    assert data["disjointness"]["disjoint"] and data["clips"] + sum(data["dropped"].values()) == 4
    assert data["clips"] >= 2 and data["clips_by_window_s"] == {"15": data["clips"]}  # the runtime's 15 s window
    curve = report["training"]["loss_curve"]
    assert curve["finite"] and curve["steps"] == 16
    assert curve["last_steps_mean"] < 0.6 * curve["first_steps_mean"], curve  # one batch, 16 steps: it must fit
    assert report["training"]["world_size"] == 1 and report["training"]["device"] == "cpu"

    # The encoder is the teacher's, untouched; the decoder layers started as teacher layers 0 and 3 and trained.
    ct2 = load_ct2_whisper()
    teacher = build_hf_whisper(ct2)
    assert student.config.decoder_layers == 2 and len(student.model.decoder.layers) == 2
    assert torch.equal(student.model.encoder.layers[3].fc1.weight, teacher.model.encoder.layers[3].fc1.weight)
    trained = student.model.decoder.layers[1].fc2.weight
    assert trained.shape == teacher.model.decoder.layers[3].fc2.weight.shape
    assert not torch.equal(trained, teacher.model.decoder.layers[3].fc2.weight)
    assert student.proj_out.weight.data_ptr() == student.model.decoder.embed_tokens.weight.data_ptr()  # tied

    # ONNX export (2 layers of KV cache), dynamic INT8 decoder, driven by the runtime engine.
    encoder, decoder, decoder_int8 = tmp_path / "enc.onnx", tmp_path / "dec.onnx", tmp_path / "dec_int8.onnx"
    shapes = export_whisper_onnx(student, encoder, decoder, progress=lambda _: None)
    quantize_decoder(decoder, decoder_int8)
    session = ort.InferenceSession(str(decoder_int8), providers=["CPUExecutionProvider"])
    cache_inputs = {i.name: i.shape for i in session.get_inputs() if i.name in ("self_k", "self_v")}
    assert shapes["num_layers"] == 2 and [shape[0] for shape in cache_inputs.values()] == [2, 2], cache_inputs
    np.savez(tmp_path / "mel.npz", filters=mel_filters())
    decoding = WhisperDecoding(num_layers=2, num_heads=shapes["num_heads"], head_dim=shapes["head_dim"],
                               suppress_ids=tuple(ct2.config.get("suppress_ids", [])))
    asr = WhisperAsr.from_files(encoder, decoder_int8, ct2.vocabulary, tmp_path / "mel.npz", decoding)
    example = report["data"]["examples"][0]  # the first clip kept (whichever clip a loop dropped)
    clips = synthesize(4, TRAIN_SENTENCES, seed=0, noise_fraction=0.0)  # the run's clips, in its order
    audio, label = next(a for a, info in clips if info["script"] == example["script"]), example["label"]
    heard = asr.transcribe(audio).text
    assert words(heard), heard
    overlap = len(set(words(heard)) & set(words(label))) / len(set(words(label)))
    assert overlap >= 0.5, (heard, label)


@pytest.mark.slow
def test_rerun_reuses_the_encoder_cache_and_torchrun_trains_with_two_processes(tiny_student: tuple,
                                                                              tmp_path: Path) -> None:
    """torchrun --nproc_per_node 2 (DDP over gloo on this CPU): both ranks train on their shards, rank 0 saves.
    The cache filled by the tiny run is reused, so no clip is encoded again."""
    _, _, cache = tiny_student
    out = tmp_path / "ddp"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()
            if k not in ("package_clips", "label_filter_wer", "max_steps", "epochs")] + ["--no-label-filter"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "edgeomni.export.whisper.distill", "--out", str(out),
                           "--no-package-clips", "--epochs", "1", "--max-steps", "1", "--cache-dir", str(cache),
                           *args], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "saved in" in proc.stdout and proc.stdout.count("student:") == 1, proc.stdout  # rank 0 alone prints
    report = json.loads((out / "distill_report.json").read_text())
    assert report["training"]["world_size"] == 2 and report["training"]["steps"] == 1
    assert report["data"]["newly_encoded"] == 0, report["data"]  # every clip came from the cache
    assert json.loads((out / "config.json").read_text())["decoder_layers"] == 2
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_distillation_takes_the_trainer_s_distillation_set(tmp_path: Path) -> None:
    """`distill.audio: trainer:DIR`: the hard examples build-sets wrote (no scripts) are labelled by the teacher
    and trained on; a missing file in the set's manifest is named."""
    import wave

    import numpy as np

    from edgeomni.export.whisper.ct2_to_hf import build_hf_whisper, load_ct2_whisper, mel_filters
    from edgeomni.export.whisper.distill import distill_whisper_student
    from edgeomni.export.whisper.distill_corpus import TRAIN_SENTENCES
    from edgeomni.export.whisper.distill_data import synthesize

    # The on-disk form `edgeomni trainer build-sets` writes (edgeomni-audio-set/1), with what devices heard.
    sets = tmp_path / "sets" / "distillation"
    sets.mkdir(parents=True)
    files = []
    for i, (audio, _) in enumerate(synthesize(2, TRAIN_SENTENCES[5:], seed=7, noise_fraction=0.0)):
        name = f"{i:05d}-hard.wav"
        with wave.open(str(sets / name), "wb") as out:
            out.setnchannels(1), out.setsampwidth(2), out.setframerate(16_000)
            out.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
        files.append({"file": name, "seconds": round(len(audio) / 16_000, 3), "text": "", "confidence": 0.3,
                      "device": f"cam-{i}", "id": f"id{i}"})
    manifest = {"format": "edgeomni-audio-set/1", "purpose": "distillation", "seed": 0, "count": 2,
                "total_seconds": 0, "sample_rate": 16_000, "files": files}
    (sets / "manifest.json").write_text(json.dumps(manifest))

    spec = DistillSpec(**{**TINY, "clips": 0, "max_steps": 2, "batch_size": 2}, audio=f"trainer:{tmp_path / 'sets'}",
                       cache_dir=tmp_path / "cache")
    teacher = build_hf_whisper(load_ct2_whisper())
    _, report = distill_whisper_student(teacher, mel_filters(), spec, tmp_path / "work", progress=lambda _: None)
    data = report["data"]
    assert data["clips"] == data["extra_clips"] == 2 and data["synthesised"] == 0
    assert all(e["source"] in ("audio:cam-0", "audio:cam-1") and e["label"] for e in data["examples"])

    (sets / files[1]["file"]).unlink()
    with pytest.raises(ExportError, match=r"lists 00001-hard\.wav, which is missing"):
        distill_whisper_student(teacher, mel_filters(), spec, tmp_path / "work2", progress=lambda _: None)
