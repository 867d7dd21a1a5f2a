"""video.json (every figure, per pass) and video.md (the tables docs/BENCHMARKS.md quotes)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from edgeomni.bench.report import machine


def _get(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return "-"
        d = d[key]
    return d


def render_markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    lines = [f"# edgeomni bench video — {report['date']}", "",
             f"Machine: {info['nproc']} vCPU {info['cpu_model']}; command: `{report['command']}`; "
             f"{report['options']['runs']} run(s) per pass (medians), real-time paced, "
             f"{report['options']['fps']} fps input.", "",
             "| pass | visual p50 / p95 / max ms | visual > 200 ms | skipped blocks | downshifts | frames analysed "
             "| CPU s per media s | vision s per media s | partial p95 ms | final p95 ms | partials > 200 ms "
             "| load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in report["passes"].items():
        visual = _get(result, "latency_ms", "visual")
        counters = result.get("counters", {})
        lines.append(
            f"| {name} | {_get(visual, 'p50')} / {_get(visual, 'p95')} / {_get(visual, 'max')} "
            f"| {result['visual_over_budget']} | {counters.get('skipped_blocks', '-')} "
            f"| {counters.get('sampling_downshifts', '-')} "
            f"| {counters.get('frames_analysed', '-')} of {counters.get('frames_sampled', '-')} "
            f"| {result['cpu_per_media_second']} | {result['vision_seconds_per_media_second']} "
            f"| {_get(result, 'latency_ms', 'partial', 'p95')} | {_get(result, 'latency_ms', 'final', 'p95')} "
            f"| {result['speech_over_budget']} | {' -> '.join(str(v) for v in result.get('load_avg', []))} |")
    on, off = report["passes"].get("talking-head-change-skip-on"), report["passes"].get("talking-head-change-skip-off")
    if on and off and off.get("vision_cpu_per_media_second"):
        saved = 1.0 - on["vision_cpu_per_media_second"] / off["vision_cpu_per_media_second"]
        lines += ["", f"Change-skipping on the talking-head clip: vision-thread CPU "
                      f"{on['vision_cpu_per_media_second']} vs {off['vision_cpu_per_media_second']} s per media s "
                      f"({saved:.0%} saved; frames analysed {on['counters'].get('frames_analysed')} vs "
                      f"{off['counters'].get('frames_analysed')}); whole-process CPU {on['cpu_per_media_second']} vs "
                      f"{off['cpu_per_media_second']} s per media s."]
    return "\n".join(lines) + "\n"


def write_video_report(result: dict[str, Any], out: Path, command: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    report = {"date": datetime.date.today().isoformat(), "machine": machine(), "command": command, **result}
    json_path, md_path = out / "video.json", out / "video.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(render_markdown(report))
    return json_path, md_path
