"""`edgeomni trainer report`: the fleet at a glance, per device (latency percentiles, errors, hard examples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeomni.errors import EdgeOmniError
from edgeomni.telemetry import percentiles
from edgeomni.trainer.dataset import read_counters, read_datasets


def check_data_dirs(data_dirs: list[Path]) -> None:
    for data_dir in data_dirs:
        if not (Path(data_dir) / "index.sqlite").exists():
            raise EdgeOmniError(f"{data_dir}: not a trainer data directory (no index.sqlite; `edgeomni trainer "
                                "--data DIR` creates it)")


def fleet_report(data_dirs: list[Path]) -> dict[str, Any]:
    check_data_dirs(data_dirs)
    # no media: a frame's hard example says so in its data (modality "vision")
    rows = read_datasets(data_dirs, columns=["device", "kind", "data", "latency_ms"]).to_pylist()
    devices: dict[str, dict[str, Any]] = {}
    latencies: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        device = devices.setdefault(row["device"], {"records": 0, "captions": 0, "errors": 0, "hard_examples": 0,
                                                    "hard_frames": 0, "runs": 0})
        device["records"] += 1
        kind = row["kind"]
        if kind == "caption":
            device["captions"] += 1
            caption_type = json.loads(row["data"]).get("type", "final")
            if row["latency_ms"] is not None:
                latencies.setdefault(row["device"], {}).setdefault(caption_type, []).append(row["latency_ms"])
        elif kind == "error":
            device["errors"] += 1
        elif kind == "hard_example":
            device["hard_examples"] += 1
            device["hard_frames"] += json.loads(row["data"]).get("modality") == "vision"  # the rest: speech
        elif kind == "counters":
            device["runs"] += 1  # one counters record per finished run
    for name, device in devices.items():
        device["error_rate"] = round(device["errors"] / max(1, device["captions"] + device["errors"]), 4)
        device["latency_ms"] = {stage: percentiles(values) for stage, values in latencies.get(name, {}).items()}
    ingest: dict[str, int] = {}
    for data_dir in data_dirs:  # read-only: a running trainer may be mid-write in the same DIR
        for name, count in read_counters(data_dir).items():
            ingest[name] = ingest.get(name, 0) + count
    return {"data": [str(d) for d in data_dirs], "records": len(rows), "devices": dict(sorted(devices.items())),
            "ingest": ingest}


def format_report(report: dict[str, Any]) -> str:
    header = f"{'device':<20} {'records':>8} {'captions':>8} {'final p50':>9} {'p95':>7} {'p99':>7} " \
             f"{'errors':>6} {'err rate':>8} {'hard ex':>7} {'frames':>6}"
    lines = [f"fleet report for {', '.join(report['data'])}: {report['records']} records", header, "-" * len(header)]
    for name, device in report["devices"].items():
        final = device["latency_ms"].get("final", {})
        lines.append(f"{name:<20} {device['records']:>8} {device['captions']:>8} "
                     f"{_ms(final.get('p50')):>9} {_ms(final.get('p95')):>7} {_ms(final.get('p99')):>7} "
                     f"{device['errors']:>6} {device['error_rate']:>8.2%} {device['hard_examples']:>7} "
                     f"{device['hard_frames']:>6}")
    ingest = report["ingest"]
    rejected = {k.split(":", 1)[1]: v for k, v in ingest.items() if k.startswith("rejected:")}
    lines.append(f"ingest: {ingest.get('accepted', 0)} accepted, {ingest.get('duplicates', 0)} duplicates dropped, "
                 f"{sum(rejected.values())} rejected {rejected or ''}".rstrip())
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
