"""Sync benchmarks (figures for docs/BENCHMARKS.md, not a test): a private Mosquitto, real processes.

  python -m edgeomni.bench.sync throughput --records 50000 --batch 50 200 --runs 3 --out bench-out/sync-throughput.json
  python -m edgeomni.bench.sync latency --runs 3 --out bench-out/sync-latency.json

throughput: an outbox of N telemetry records drained by `edgeomni sync --exit-when-empty` into a running
`edgeomni trainer`: device-side records/s (all acknowledged by the broker) and end-to-end records/s (all
committed to the trainer's Parquet dataset).
latency: `edgeomni run --source sample` (real time) with and without `--sync`, alternating; the end
summary's partial/final latency p50/p95 per run, and their medians.

It runs from a source checkout: the broker and the trainer/sync processes are started by the sync tests' own
helpers (tests/mqtt_broker.py, tests/sync_support.py), so the figures come from the set-up the tests check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from mqtt_broker import Broker
from sync_support import fill_outbox, ingest_counters, spawn, start_trainer, stop, wait_for


def throughput(records: int, batch: int, workdir: Path) -> dict[str, float]:
    broker = Broker.start(workdir, users={"dev-a": "pw-a"}, fleet="test")
    outbox, data = workdir / "outbox.sqlite", workdir / "data"
    fill_outbox(outbox, records)
    trainer = start_trainer(broker.url_for("trainer"), data, workdir / "trainer.log")
    try:
        started = time.monotonic()
        sync = spawn(["sync", "--outbox", str(outbox), "--broker", broker.url_for("dev-a"), "--fleet", "test",
                      "--device", "dev-a", "--batch-size", str(batch), "--exit-when-empty"], workdir / "sync.log")
        assert sync.wait(600) == 0
        synced = time.monotonic() - started
        wait_for(lambda: ingest_counters(data).get("accepted", 0) >= records, 600, "ingest", interval=0.05)
        ingested = time.monotonic() - started
    finally:
        stop(trainer)
        broker.close()
    # the sync figure includes the process start (~0.3 s), so it understates the steady rate a little
    return {"records": records, "batch": batch, "sync_s": round(synced, 2), "ingest_s": round(ingested, 2),
            "sync_records_per_s": round(records / synced), "end_to_end_records_per_s": round(records / ingested)}


def caption_latency(sync_url: str | None, workdir: Path, tag: str) -> dict[str, float]:
    out = workdir / f"{tag}.jsonl"
    cmd = [sys.executable, "-m", "edgeomni", "run", "--source", "sample", "--sink", f"jsonl:{out}"]
    if sync_url:
        cmd += ["--sync", sync_url, "--outbox", str(workdir / f"{tag}.sqlite"), "--device", "dev-a", "--fleet", "test"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    end = [json.loads(line) for line in out.read_text().splitlines() if '"type": "end"' in line][-1]
    lat = end["latency_ms"]
    return {"partial_p50": lat["partial"]["p50"], "partial_p95": lat["partial"]["p95"],
            "final_p50": lat["final"]["p50"], "final_p95": lat["final"]["p95"], "finals": end["finals"]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.bench.sync")
    parser.add_argument("what", choices=["throughput", "latency"])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[200])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "what": args.what, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "throughput":
            for batch in args.batch:
                for run in range(args.runs):
                    row = throughput(args.records, batch, Path(tmp) / f"b{batch}-{run}")
                    print(row, flush=True)
                    results["runs"].append(row)
        else:
            broker = Broker.start(Path(tmp), users={"dev-a": "pw-a"}, fleet="test")
            trainer = start_trainer(broker.url_for("trainer"), Path(tmp) / "data", Path(tmp) / "trainer.log")
            try:
                for run in range(args.runs):
                    for sync in (False, True):  # alternate, so machine noise hits both alike
                        row = {"sync": sync, "run": run, **caption_latency(
                            broker.url_for("dev-a") if sync else None, Path(tmp), f"{run}-{sync}")}
                        print(row, flush=True)
                        results["runs"].append(row)
                results["stored_records"] = ingest_counters(Path(tmp) / "data").get("accepted", 0)
            finally:
                stop(trainer)
                broker.close()
            for sync in (False, True):
                rows = [r for r in results["runs"] if r["sync"] == sync]
                results[f"median_sync_{'on' if sync else 'off'}"] = {
                    key: statistics.median(r[key] for r in rows) for key in rows[0] if key not in ("sync", "run")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
