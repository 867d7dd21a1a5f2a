"""The knowledge-distillation loop for the Whisper student (torch; export side only).

loss = kd_weight * T^2 * KL(teacher/T || student/T) + (1 - kd_weight) * CE(pseudo-label)
       + hidden_weight * mean_i MSE(student layer i output, teacher layer init_layers[i] output)

over the target tokens after the forced prompt (the runtime always feeds <|startoftranscript|><|notimestamps|>,
so predicting <|notimestamps|> is never trained). The teacher's logits and hidden states are computed on the
fly from the cached encoder output (one no-grad decoder pass per batch): caching them would cost 50k floats
per token on disk, while the teacher decoder pass costs less than the student's backward pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeomni.export.whisper.ct2_to_hf import EOT

PROGRESS_EVERY_S = 10.0


@dataclass
class Batch:
    hidden: Any  # (B, 1500, d_model) encoder output, float32 on the device
    inputs: Any  # (B, L) decoder input ids
    targets: Any  # (B, L) next tokens
    valid: Any  # (B, L) bool: targets that are trained on (not the forced prompt, not padding)
    tokens: int


def make_batch(hidden_fp16: np.ndarray, sequences: list[list[int]], device: str) -> Batch:
    import torch

    length = max(len(s) for s in sequences) - 1
    padded = np.full((len(sequences), length + 1), EOT, dtype=np.int64)
    valid = np.zeros((len(sequences), length), dtype=bool)
    for row, seq in enumerate(sequences):
        padded[row, : len(seq)] = seq
        valid[row, 1 : len(seq) - 1] = True  # position 0 predicts the forced <|notimestamps|>
    ids = torch.from_numpy(padded).to(device)
    return Batch(torch.from_numpy(hidden_fp16).to(device).float(), ids[:, :-1], ids[:, 1:],
                 torch.from_numpy(valid).to(device), int(valid.sum()))


def kd_losses(student: Any, teacher: Any, batch: Batch, spec: Any, init_layers: tuple[int, ...],
              encoder_noise: float = 0.0) -> dict[str, Any]:
    """The three loss terms and their weighted sum, for one batch (gradients flow into the student only).
    `encoder_noise`: the student reads the encoder output with Gaussian noise of that fraction of each clip's RMS;
    the teacher reads it clean."""
    import torch
    import torch.nn.functional as F

    want_hidden = spec.hidden_weight > 0
    with torch.no_grad():
        t_out = teacher(encoder_outputs=(batch.hidden,), decoder_input_ids=batch.inputs, use_cache=False,
                        output_hidden_states=want_hidden)
        seen = batch.hidden
        if encoder_noise > 0:
            rms = batch.hidden.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
            seen = batch.hidden + torch.randn_like(batch.hidden) * rms * encoder_noise
    s_out = student(encoder_outputs=(seen,), decoder_input_ids=batch.inputs, use_cache=False,
                    output_hidden_states=want_hidden)
    s_logits, t_logits = s_out.logits[batch.valid].float(), t_out.logits[batch.valid].float()
    temp = spec.temperature
    kl = F.kl_div(F.log_softmax(s_logits / temp, -1), F.log_softmax(t_logits / temp, -1), log_target=True,
                  reduction="batchmean") * temp**2
    ce = F.cross_entropy(s_logits, batch.targets[batch.valid])
    hidden = torch.zeros((), device=s_logits.device)
    if want_hidden:
        # hidden_states[k + 1] is the output of layer k (the last one after the final layer norm, in both models).
        pairs = [(s_out.decoder_hidden_states[j + 1], t_out.decoder_hidden_states[t + 1])
                 for j, t in enumerate(init_layers)]
        hidden = sum(F.mse_loss(s[batch.valid].float(), t[batch.valid].float()) for s, t in pairs) / len(pairs)
    total = spec.kd_weight * kl + (1 - spec.kd_weight) * ce + spec.hidden_weight * hidden
    agree = (s_logits.argmax(-1) == batch.targets[batch.valid]).float().mean()
    return {"loss": total, "kl": kl.detach(), "ce": ce.detach(), "hidden": hidden.detach(), "agree": agree.detach()}


class Trainer:
    """AdamW with linear warm-up and decay, gradient clipping, progress lines at least every 10 s."""

    def __init__(self, model: Any, student: Any, teacher: Any, spec: Any, init_layers: tuple[int, ...],
                 total_steps: int, progress: Callable[[str], None]) -> None:
        import torch

        self.model, self.student, self.teacher, self.spec = model, student, teacher, spec
        self.init_layers, self.total_steps, self.progress = init_layers, total_steps, progress
        params = [p for p in student.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.01)
        warmup = max(1, min(50, total_steps // 10))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: (s + 1) / warmup if s < warmup else
            max(0.1, 1 - (s - warmup) / max(1, total_steps - warmup)))
        self.step, self.tokens, self.curve = 0, 0, []
        self.started = self.last_print = time.perf_counter()
        self.window: list[dict[str, float]] = []

    def train_step(self, batch: Batch) -> dict[str, float]:
        import torch

        self.model.train()
        with self._autocast():
            losses = kd_losses(self.model, self.teacher, batch, self.spec, self.init_layers,
                               self.spec.encoder_noise)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.student.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.step, self.tokens = self.step + 1, self.tokens + batch.tokens
        values = {k: round(float(v.detach()), 4) for k, v in losses.items()}
        self.curve.append(values["loss"])
        self.window.append(values)
        return values

    def maybe_report(self, epoch: int, epochs: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.window or (not force and now - self.last_print < PROGRESS_EVERY_S):
            return
        elapsed = now - self.started
        mean = {k: np.mean([w[k] for w in self.window]) for k in self.window[0]}
        eta = elapsed / self.step * (self.total_steps - self.step)
        self.progress(f"    epoch {epoch}/{epochs} step {self.step}/{self.total_steps}: loss {mean['loss']:.3f} "
                      f"(kl {mean['kl']:.3f}, ce {mean['ce']:.3f}, hidden {mean['hidden']:.3f}, "
                      f"agree {mean['agree']:.1%}), {self.tokens / elapsed:.0f} tokens/s, ETA {eta:.0f} s")
        self.window, self.last_print = [], now

    def evaluate(self, batches: list[Batch]) -> dict[str, float]:
        """Mean loss terms over held-out batches (the unwrapped student: no collective calls)."""
        import torch

        self.student.eval()
        sums: dict[str, float] = {}
        with torch.no_grad(), self._autocast():
            for batch in batches:
                for key, value in kd_losses(self.student, self.teacher, batch, self.spec, self.init_layers).items():
                    sums[key] = sums.get(key, 0.0) + float(value) * batch.tokens
        tokens = sum(b.tokens for b in batches)
        return {k: round(v / max(1, tokens), 4) for k, v in sums.items()} | {"tokens": tokens}

    def _autocast(self) -> Any:
        import contextlib

        import torch

        device = next(self.student.parameters()).device
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def curve_summary(self) -> dict[str, Any]:
        curve, n = self.curve, max(1, min(10, len(self.curve) // 5))
        return {"steps": len(curve), "first_steps_mean": round(float(np.mean(curve[:n])), 4) if curve else None,
                "last_steps_mean": round(float(np.mean(curve[-n:])), 4) if curve else None,
                "min": round(min(curve), 4) if curve else None, "every_10th": curve[::10],
                "finite": all(math.isfinite(c) for c in curve)}
