"""What compaction buys the trainer's readers: `trainer report` and a full read, before and after.

Builds a dataset the way ingest does (one fsynced Parquet file per MQTT batch; captions with a latency, as
devices send them) over several devices and past days, then times `fleet_report` and `read_dataset` on it
(median of 5), compacts it, and times them again. `--history N` first stores N records of an older day
in batches of 5000 and compacts them (untimed): the id index a trainer carries after months of ingest,
which every later batch and compaction works against.

    .venv/bin/python -m edgeomni.bench.compaction [--batches 1500] [--per-batch 200] [--devices 4] [--history 0]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from edgeomni.trainer.dataset import Dataset, read_dataset
from edgeomni.trainer.report import fleet_report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.bench.compaction", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1500)
    parser.add_argument("--per-batch", type=int, default=200)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--history", type=int, default=0, help="records already stored and compacted")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="compaction-bench-"))
    dataset = Dataset(root)
    for b in range(0, args.history, 5000):
        dataset.append("dev-0", [{"id": f"old-{b + i:09d}", "kind": "caption", "fleet": "bench", "device": "dev-0",
                                  "ts": time.time() - 30 * 86400, "data": {"type": "final", "text": "old"}}
                                 for i in range(min(5000, args.history - b))])
    if args.history:
        dataset.compact()
    started = time.perf_counter()
    for b in range(args.batches):
        device = f"dev-{b % args.devices}"
        ts = time.time() - (1 + b % args.days) * 86400
        dataset.append(device, [{"id": f"{device}-{b:06d}-{i:04d}", "kind": "caption", "fleet": "bench",
                                 "device": device, "ts": ts,
                                 "data": {"type": "final", "text": f"caption {i} of batch {b}", "start": i,
                                          "end": i + 1.5, "latency_ms": 80.0 + i % 40}}
                                for i in range(args.per_batch)])
    built = time.perf_counter() - started
    records = args.batches * args.per_batch + args.history

    def timed(what: str) -> tuple[float, float]:
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            if what == "report":
                fleet_report([root])
            else:
                read_dataset(root)
            runs.append(time.perf_counter() - t0)
        return statistics.median(runs), max(runs)

    files_before = len(list((root / "dataset").rglob("*.parquet")))
    before = {what: timed(what) for what in ("report", "read")}
    t0 = time.perf_counter()
    done = dataset.compact()
    compact_s = time.perf_counter() - t0
    files_after = len(list((root / "dataset").rglob("*.parquet")))
    after = {what: timed(what) for what in ("report", "read")}
    dataset.close()
    assert len(read_dataset(root)) == records
    print(f"{records:,} records: {args.history:,} compacted history + {args.batches} batches of {args.per_batch} "
          f"({args.devices} devices x {args.days} days), batches stored in {built:.1f} s "
          f"({args.batches / built:.0f} batches/s); compaction: {done} in {compact_s:.1f} s\n")
    print("| reader | before: median / max s | after: median / max s | speed-up |")
    print("|---|---|---|---|")
    for what, label in (("report", "`trainer report` (fleet_report)"), ("read", "read_dataset (all columns)")):
        (b_med, b_max), (a_med, a_max) = before[what], after[what]
        print(f"| {label} | {b_med:.3f} / {b_max:.3f} | {a_med:.3f} / {a_max:.3f} | {b_med / a_med:.1f}x |")
    print(f"| Parquet files | {files_before} | {files_after} | |")
    shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
