"""Distil-whisper-style student of Whisper tiny.en: the teacher's encoder (frozen) and a shallower decoder
initialised from teacher layers, trained by knowledge distillation on pseudo-labelled speech.

`DistillSpec` (distill_spec.py: the recipe's `distill:` section, no torch needed) says how;
`distill_whisper_student(teacher, filters, spec, work, progress)` does it and returns (student, report).
Runs on CPU at small scale, on a GPU when there is one, and data-parallel under torchrun:

    python -m edgeomni.export.whisper.distill --out DIR [--clips N --epochs N ...]
    torchrun --nproc_per_node 2 -m edgeomni.export.whisper.distill --out DIR ...   # DDP: gloo on CPU, nccl on GPU

Under torchrun each process trains on its DistributedSampler shard with a per-process `batch_size`; rank 0
alone builds the data set (the others wait, then read its manifest and the shared cache), prints and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.datasets.speechset import SENTENCES, load_speech_set
from edgeomni.engines.whisper_tokenizer import ByteLevelDetokenizer
from edgeomni.errors import EdgeOmniError, ExportError
from edgeomni.export.whisper import distill_data as data
from edgeomni.export.whisper.ct2_to_hf import EOT, build_hf_whisper, load_ct2_whisper, mel_filters, suppressed_ids
from edgeomni.export.whisper.distill_corpus import TRAIN_SENTENCES, check_disjoint
from edgeomni.export.whisper.distill_spec import DistillSpec
from edgeomni.export.whisper.distill_train import Trainer, make_batch
from edgeomni.paths import cache_root
from edgeomni.sources.sample import BECKETT_TEXT, TWO_CITIES_TEXT


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_context(device: str) -> DistContext:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1); pick the device."""
    import torch

    cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistContext(0, 1, ("cuda" if cuda else "cpu") if device == "auto" else device)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), f"cuda:{local_rank}" if cuda else "cpu")


def build_student(teacher: Any, init_layers: tuple[int, ...], train_embeddings: bool = False) -> Any:
    """A WhisperForConditionalGeneration with the teacher's encoder (frozen) and len(init_layers) decoder layers
    copied from those teacher layers; token embedding and output projection stay tied, as in Whisper."""
    import copy

    from transformers import WhisperForConditionalGeneration

    config = copy.deepcopy(teacher.config)
    config.decoder_layers = len(init_layers)
    # Decoding settings belong in the generation config (transformers warns on save_pretrained otherwise).
    generation = {key: getattr(config, key, None) for key in ("suppress_tokens", "begin_suppress_tokens")}
    for key in generation:
        setattr(config, key, None)
    student = WhisperForConditionalGeneration(config)
    student.generation_config.update(**generation)
    state = {}
    for name, tensor in teacher.state_dict().items():
        match = re.match(r"model\.decoder\.layers\.(\d+)\.(.+)", name)
        if match is None:
            state[name] = tensor.detach().clone()
        elif int(match[1]) in init_layers:
            for j in [j for j, t in enumerate(init_layers) if t == int(match[1])]:
                state[f"model.decoder.layers.{j}.{match[2]}"] = tensor.detach().clone()
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    frozen = [student.model.encoder]
    if not train_embeddings:
        frozen += [student.model.decoder.embed_tokens, student.model.decoder.embed_positions]
    for module in frozen:
        module.requires_grad_(False)
    return student


def bench_references() -> list[str]:
    """Every reference text of the bench speech set: its recipe, plus the generated set's files if present."""

    references = [*SENTENCES, BECKETT_TEXT, TWO_CITIES_TEXT]
    root = cache_root() / "bench" / "speechset"
    if (root / "manifest.json").is_file():
        references += [c.reference for c in load_speech_set(root, progress=lambda _: None).clips if c.reference]
    return references


def _prepare_data(teacher: Any, filters: np.ndarray, spec: DistillSpec, ctx: DistContext, work: Path,
                  progress: Callable[[str], None]) -> tuple[list[Any], dict[str, Any]]:
    """Rank 0 builds the set and writes its manifest; other ranks wait and read it."""

    manifest = work / "distill_set.json"
    if ctx.main:
        ct2 = load_ct2_whisper()
        report: dict[str, Any] = {"sentences": f"{len(TRAIN_SENTENCES)} written for training (distill_corpus.py)",
                                  "disjointness": check_disjoint(TRAIN_SENTENCES, bench_references())}
        progress(f"    text disjoint from the bench speech set: {report['disjointness']}")
        started = time.perf_counter()
        clips = data.synthesize(spec.clips, TRAIN_SENTENCES, spec.seed, spec.noise_fraction, spec.long_fraction)
        clips += data.package_clips() if spec.package_clips else []
        clips += data.unlabeled_clips(spec.audio, progress) if spec.audio else []
        report["synthesis_s"] = round(time.perf_counter() - started, 1)
        progress(f"    {len(clips)} clips, {sum(len(a) for a, _ in clips) / 16_000 / 60:.1f} min of speech "
                 f"({report['synthesis_s']} s)")
        suppress, begin = suppressed_ids(ct2, teacher.config.vocab_size)
        detok = ByteLevelDetokenizer(ct2.vocabulary, EOT)
        cache = data.EncoderCache(Path(spec.cache_dir or cache_root() / "whisper-distill"))
        items, stats = data.build_distill_set(teacher, filters, suppress, begin, clips, cache, ctx.device,
                                              lambda t: detok.decode(t).strip(), spec.label_filter_wer, progress,
                                              tuple(spec.windows_s))
        seconds = sum(i.info["seconds"] for i in items)
        report |= {**stats, "clips": len(items), "synthesised": spec.clips, "extra_audio": spec.audio or None,
                   "extra_clips": sum(i.info["source"].startswith("audio:") for i in items),
                   "package_clips": [i.info["source"] for i in items if i.info["source"] != "espeak-ng"],
                   "hours": round(seconds / 3600, 4), "voices": sorted({i.info.get("voice") for i in items} - {None}),
                   "noisy_clips": sum("snr_db" in i.info for i in items), "examples": [i.info for i in items[:3]],
                   "clips_by_window_s": {str(w): sum(i.info["window_s"] == w for i in items)
                                         for w in sorted({i.info["window_s"] for i in items})}}
        work.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"report": report, "cache": str(cache.root),
                                        "items": [asdict(i) for i in items]}))
    _barrier(ctx)
    saved = json.loads(manifest.read_text())
    return [data.DistillItem(**i) for i in saved["items"]], {**saved["report"], "cache": saved["cache"]}


def _barrier(ctx: DistContext) -> None:
    if ctx.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def distill_whisper_student(teacher: Any, filters: np.ndarray, spec: DistillSpec, work: Path,
                            progress: Callable[[str], None] = print) -> tuple[Any, dict[str, Any]]:
    """Train the student; return it (on the CPU, eval mode) and the report (data, training, held-out loss)."""
    import torch

    spec.validate("distill", teacher.config.decoder_layers)
    ctx = distributed_context(spec.device)
    progress = progress if ctx.main else (lambda _: None)
    random.seed(spec.seed)
    np.random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    work = Path(work)
    teacher = teacher.to(ctx.device).eval()  # pseudo-labels and teacher logits on the training device
    items, data_report = _prepare_data(teacher, filters, spec, ctx, work, progress)
    if len(items) < 2:
        raise ExportError(f"distillation set has {len(items)} usable clips (need >= 2): {data_report['dropped']}")
    cache = data.EncoderCache(Path(data_report["cache"]))
    hidden = [cache.hidden(i.key) for i in items]  # (frames / 2, d_model) fp16 each: 750 or 1500 rows
    window = np.array([h.shape[0] for h in hidden])
    order = np.random.default_rng(spec.seed).permutation(len(items))
    n_held = max(1, round(len(items) * spec.held_out)) if spec.held_out > 0 else 0
    held, train = order[:n_held], order[n_held:]
    init_layers = spec.resolved_init_layers(teacher.config.decoder_layers)
    student = build_student(teacher, init_layers, spec.train_embeddings).to(ctx.device)
    model = student
    if ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(student, device_ids=[int(ctx.device.split(":")[1])]
                                        if ctx.device.startswith("cuda") else None)
    per_epoch = len(_epoch_shards(train, window, 0, spec.seed, ctx, spec.batch_size))
    total = min(spec.epochs * per_epoch, spec.max_steps or 10**9)
    trainer = Trainer(model, student, teacher, spec, init_layers, total, progress)

    def batch(indices: np.ndarray) -> Any:
        return make_batch(np.stack([hidden[i] for i in indices]), [items[i].tokens for i in indices], ctx.device)

    held_batches = []
    if ctx.main and n_held:
        held_batches = [batch(b) for w in np.unique(window[held]) for b in _chunks(held[window[held] == w],
                                                                                     spec.batch_size)]
    progress(f"    student: {len(init_layers)} decoder layers from teacher layers {list(init_layers)}; "
             f"{len(train)} train / {n_held} held-out clips; {total} steps on {ctx.device} x {ctx.world_size}")
    epochs_report: list[dict[str, Any]] = []
    if held_batches:
        epochs_report.append({"epoch": 0, "held_out": trainer.evaluate(held_batches)})
    started = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        for indices in _epoch_shards(train, window, epoch, spec.seed, ctx, spec.batch_size):
            if trainer.step >= total:
                break
            trainer.train_step(batch(indices))
            trainer.maybe_report(epoch, spec.epochs)
        trainer.maybe_report(epoch, spec.epochs, force=True)
        if held_batches:
            epochs_report.append({"epoch": epoch, "held_out": trainer.evaluate(held_batches)})
            progress(f"    epoch {epoch}: held-out loss {epochs_report[-1]['held_out']['loss']:.3f}, "
                     f"agreement with the teacher's labels {epochs_report[-1]['held_out']['agree']:.1%}")
        if trainer.step >= total:
            break
    report = {"data": data_report, "student": {"decoder_layers": len(init_layers), "init_layers": list(init_layers),
                                               "trainable_parameters": sum(p.numel() for p in student.parameters()
                                                                           if p.requires_grad)},
              "spec": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(spec).items()},
              "training": {"steps": trainer.step, "wall_s": round(time.perf_counter() - started, 1),
                           "device": ctx.device, "world_size": ctx.world_size, "tokens": trainer.tokens,
                           "teacher_logits": "computed on the fly per batch (no grad)",
                           "loss_curve": trainer.curve_summary(), "held_out_by_epoch": epochs_report}}
    teacher.cpu()  # the caller exports the teacher next, on the CPU
    return student.cpu().eval(), report


def _epoch_shards(train: np.ndarray, window: np.ndarray, epoch: int, seed: int, ctx: DistContext,
                  batch_size: int) -> list[np.ndarray]:
    """This process's batches for one epoch: each encoder window's clips shuffled (seeded) and split across ranks
    like DistributedSampler, batched within the window (one tensor shape per batch), the batches then shuffled.
    Every rank gets the same number of batches in the same window order, as DDP's collectives need."""
    from torch.utils.data import DistributedSampler

    shards = []
    for w in np.unique(window[train]):
        clips = train[window[train] == w]
        sampler = DistributedSampler(range(len(clips)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                     seed=seed)
        sampler.set_epoch(epoch)
        shards += _chunks(clips[list(sampler)], batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(len(shards))
    return [shards[i] for i in order]


def _chunks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[s : s + size] for s in range(0, len(indices), size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.export.whisper.distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the student (save_pretrained)")
    defaults = DistillSpec()
    for name in ("decoder_layers", "clips", "epochs", "max_steps", "batch_size", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("temperature", "kd_weight", "hidden_weight", "lr", "noise_fraction", "long_fraction", "held_out",
                 "encoder_noise"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--init-layers", type=lambda s: tuple(int(x) for x in s.split(",")), default=None)
    parser.add_argument("--no-package-clips", dest="package_clips", action="store_false")
    parser.add_argument("--label-filter-wer", type=float, default=defaults.label_filter_wer)
    parser.add_argument("--no-label-filter", dest="label_filter_wer", action="store_const", const=None,
                        help="keep every pseudo-label, however far from its script")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = vars(parser.parse_args(argv))
    out, finished = args.pop("out"), False
    try:

        spec = DistillSpec(**args)
        spec.validate("distill")
        teacher = build_hf_whisper(load_ct2_whisper())
        student, report = distill_whisper_student(teacher, mel_filters(), spec, out,
                                                  progress=lambda line: print(line, flush=True))
        if int(os.environ.get("RANK", "0")) == 0:
            student.save_pretrained(out)
            (out / "distill_report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
            print(f"student ({report['student']['decoder_layers']} decoder layers) saved in {out}", flush=True)
        finished = True
    except EdgeOmniError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        _finish_distributed(wait_for_all=finished)
    return 0


def _finish_distributed(wait_for_all: bool) -> None:
    """Leave torchrun's process group; wait for the other ranks only after a clean run (a failed rank must not
    block in a barrier that the others never reach)."""
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
