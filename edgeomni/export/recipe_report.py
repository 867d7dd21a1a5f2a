"""The recipe's report: its numbered steps (the export's one step reporter, progress.Steps) and everything the
task measured, written as report.json and report.md whatever happens, and copied into the bundle beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeomni.errors import ExportError
from edgeomni.export.progress import Steps
from edgeomni.export.recipe import Recipe

REPORT_JSON, REPORT_MD = "report.json", "report.md"


class GateFailed(ExportError):
    """The INT8 model missed the accuracy gate even after excluding sensitive nodes."""


class Report(Steps):
    """The recipe's numbered steps and everything the tasks measure, written as report.json and report.md."""

    def __init__(self, recipe: Recipe, out: Path, progress: Callable[[str], None]) -> None:
        super().__init__(progress)
        self.out = out
        self.data: dict[str, Any] = {"recipe": recipe.to_dict(), "steps": self.records,
                                     "started": datetime.now(UTC).isoformat(timespec="seconds")}

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / REPORT_JSON).write_text(json.dumps(self.data, indent=2) + "\n")
        (self.out / REPORT_MD).write_text(markdown(self.data))


def markdown(data: dict[str, Any]) -> str:
    recipe = data["recipe"]
    source = recipe["source"]["path"] or recipe["source"].get("components")
    lines = [f"# Export report: {recipe['name']} {recipe['version']}", "",
             f"Started {data['started']}, finished {data.get('finished', '?')}. Task: {recipe['task']}; "
             f"source: {recipe['source']['kind']} `{source}`.", ""]
    if data.get("error"):
        lines += [f"**Failed:** {data['error']}", ""]
    lines += ["## Steps", "", "| step | seconds | ok |", "|---|---|---|"]
    lines += [f"| {s['step']} | {s['seconds']} | {'yes' if s['ok'] else 'no'} |" for s in data["steps"]]
    for name, c in data.get("components", {}).items():
        lat, gate = c["latency_ms"], c["gate"]
        lines += ["", f"## {name}", "", "| | FP32 | INT8 | ratio |", "|---|---|---|---|",
                  f"| size (MB) | {c['size_bytes']['fp32'] / 1e6:.2f} | {c['size_bytes']['int8'] / 1e6:.2f} | "
                  f"{c['size_ratio']}x smaller |"]
        for threads in ("threads_1", "threads_2"):
            f, i = lat["fp32"][threads], lat["int8"][threads]
            lines.append(f"| latency {threads.replace('_', ' ')} median / p95 (ms) | {f['median']} / {f['p95']} | "
                         f"{i['median']} / {i['p95']} | {f['median'] / i['median']:.2f}x faster |")
        lines += ["", f"Gate: {gate['metric']} = {gate['value']} (min {gate['min']}): "
                  f"**{'passed' if gate['passed'] else 'FAILED'}**. Rounds: {_rounds(gate)}.",
                  f"Kept in FP32: {[e['node'] for e in gate['excluded_nodes']] or 'none'}.",
                  *([f"For scale: FP32 against itself with 1 grey level of input noise agrees "
                     f"{gate['fp32_self_agreement_1_grey_level']}."] if "fp32_self_agreement_1_grey_level" in gate
                    else []),
                  *_decisive_lines(gate.get("agreement_where_fp32_decisive")),
                  *_finetune_lines(c["quantization"].get("finetune")),
                  f"Quantization: {json.dumps({k: v for k, v in c['quantization'].items() if k != 'finetune'})}"]
        if "chosen_precision" in c:  # OCR: each component ships INT8 only where its gate held
            lines.append(f"Shipped: **{c['chosen_precision'].upper()}**: {c['reason']}. CER of INT8 vs FP32 "
                         f"{c['cer_int8_vs_fp32']}, vs the rendered text {c['cer_int8_vs_truth']}.")
    if data.get("markdown"):  # a task's own tables (speech: WER and latency of FP32/INT8, student vs teacher)
        lines += data["markdown"]
    if "fp32_pipeline" in data:  # OCR: the reference the INT8 text is compared with
        fp = data["fp32_pipeline"]
        lines += ["", f"FP32 pipeline on {fp['slides']} held-out slides: exact {fp['exact']}, CER {fp['cer']}; "
                  f"misread: {[(m['truth'], m['read']) for m in fp['misread']] or 'none'}."]
        if "shipped_pipeline" in data:
            lines.append(f"Shipped pair together: {json.dumps(data['shipped_pipeline'])}.")
    if "calibration" in data:
        cal = data["calibration"]
        lines += ["", "## Calibration set", "", f"{cal.get('count')} inputs from {cal.get('source')}, "
                  f"seed {cal.get('seed')}; strata/photos: {cal.get('strata') or cal.get('photos')}."]
    if "targets" in data:
        lines += ["", "## Targets", ""] + [f"- {t}: {s}" for t, s in data["targets"].items()]
    return "\n".join(lines) + "\n"


def _rounds(gate: dict[str, Any]) -> str:
    """`0.8548 (before fine-tuning) -> 0.879`, one entry per quantization the gate measured."""

    def one(entry: dict[str, Any]) -> str:
        notes = [f"{entry['mode']} INT8"] if "mode" in entry else []  # OCR tries static, then dynamic
        notes += [f"{entry['excluded']} kept FP32"] if entry.get("excluded") else []
        notes += ["before fine-tuning"] if entry.get("finetuned") is False else []
        return f"{entry[gate['metric']]}" + (f" ({', '.join(notes)})" if notes else "")

    return " -> ".join(one(entry) for entry in gate["rounds"])


def _decisive_lines(rows: list[dict[str, Any]] | None) -> list[str]:
    if not rows:
        return []
    return ["Where FP32 is decisive (its top-1 probability ahead of the second by at least the margin), INT8 "
            "agrees: " + "; ".join(f">= {r['min_margin']}: {r['top1_agreement']} on {r['inputs']} inputs"
                                   for r in rows) + "."]


def _finetune_lines(record: dict[str, Any] | None) -> list[str]:
    if not record:
        return []
    before, after = record["before"], record["after"]
    return [f"Quantization-aware fine-tuning: {record['steps']} steps of {record['batch']} on "
            f"{record['training_images']} images ({record['calibration_inputs']} calibration inputs + "
            f"{record['augmented_views']} augmented views + extra images: {record.get('extra_images', 'none')}; "
            f"cut-outs: {record.get('cutouts', 'none')}), "
            f"{record['seconds']} s; "
            f"{record['weights_changed']:,} of {record['weights_total']:,} weights moved to another grid point; "
            f"on {record['probe_images']} of its training images KL {before['kl']} -> {after['kl']}, top-1 "
            f"agreement {before['top1_agreement']} -> {after['top1_agreement']}."]
