"""`edgeomni trainer [run] | report | build-sets | publish`. With no action, `trainer` runs the ingest loop."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import logging
import signal
import threading
from pathlib import Path

from edgeomni.credentials import MQTT_PASSWORD_ENV
from edgeomni.errors import ConfigError
from edgeomni.ota.cli import add_publish_parser
from edgeomni.sync.codec import TRAINER_MAX_KB
from edgeomni.trainer.build_sets import build_sets
from edgeomni.trainer.dataset import Dataset
from edgeomni.trainer.ingest import IngestConfig, serve
from edgeomni.trainer.report import check_data_dirs, fleet_report, format_report


def _add_ingest_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--broker", required=required, metavar="URL",
                        help="mqtt[s]://user@host:port (a password here shows in `ps`: use --password-file)")
    parser.add_argument("--password-file", metavar="FILE", default="",
                        help=f"the broker password, first line of FILE (else ${MQTT_PASSWORD_ENV})")
    parser.add_argument("--data", type=Path, required=required, metavar="DIR", help="dataset directory")
    parser.add_argument("--client-id", default="edgeomni-trainer-1",
                        help="MQTT client id; each trainer process needs its own (default: %(default)s)")
    parser.add_argument("--max-payload-kb", type=int, default=TRAINER_MAX_KB,
                        help="larger messages (on the wire or inflated) are rejected (default: %(default)s)")
    parser.add_argument("--exclusive", action="store_true",
                        help="a plain subscription instead of the shared one: for a single trainer on a broker that "
                        "does not persist shared subscriptions across restarts (Mosquitto 2.0)")
    parser.add_argument("--ca-file", default="", help="CA certificate for an mqtts:// broker")
    parser.add_argument("--cert-file", default="", help="client certificate (TLS)")
    parser.add_argument("--key-file", default="", help="client key (TLS)")
    parser.add_argument("--compact-every-h", type=float, default=6.0, metavar="H",
                        help="merge past days' small Parquet files every H hours while ingesting; 0 = never "
                        "(default: %(default)s)")


def add_trainer_parser(commands: argparse._SubParsersAction) -> None:
    trainer = commands.add_parser("trainer", help="cloud side: ingest device records, report, build sets, publish",
                                  description="With no action: `trainer --broker URL --data DIR` runs the ingest loop.")
    _add_ingest_options(trainer, required=False)
    trainer.set_defaults(func=_cmd_run)
    actions = trainer.add_subparsers(dest="trainer_action", metavar="ACTION")

    run = actions.add_parser("run", help="ingest: shared subscription -> validate -> dedup -> Parquet (the default)")
    _add_ingest_options(run, required=True)
    run.set_defaults(func=_cmd_run)

    report = actions.add_parser("report", help="latency percentiles, error rates and hard examples per device")
    report.add_argument("--data", type=Path, required=True, action="append", metavar="DIR",
                        help="a trainer's data directory (repeat for several trainers)")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.set_defaults(func=_cmd_report)

    sets = actions.add_parser("build-sets", help="hard examples -> calibration/distillation audio sets and "
                              "calibration/heldout/distillation image sets (files + manifest.json)")
    sets.add_argument("--data", type=Path, required=True, action="append", metavar="DIR",
                      help="a trainer's data directory (repeat for several trainers)")
    sets.add_argument("--out", type=Path, required=True, metavar="DIR")
    sets.add_argument("--seed", type=int, default=0)
    sets.add_argument("--calibration-fraction", type=float, default=0.3)
    sets.add_argument("--heldout-fraction", type=float, default=0.2,
                      help="share of the hard frames kept for the export's accuracy gate (default: %(default)s)")
    sets.add_argument("--scene-block-s", type=float, default=600.0, metavar="SECONDS",
                      help="frames of one scene go to one side; a scene longer than this (a fixed camera) is cut "
                      "into blocks of this much wall time, each kept whole; 0: never cut (default: %(default)s)")
    sets.set_defaults(func=_cmd_build_sets)

    compact = actions.add_parser("compact", help="merge each date/device partition's Parquet files into one "
                                 "(offline: the live trainer does it itself with --compact-every-h)")
    compact.add_argument("--data", type=Path, required=True, metavar="DIR")
    compact.add_argument("--before", metavar="YYYY-MM-DD",
                         help="only dates before this one (default: every date, today's included)")
    compact.add_argument("--min-files", type=int, default=2, help="leave partitions with fewer files alone")
    compact.set_defaults(func=_cmd_compact)

    add_publish_parser(actions)  # `trainer publish BUNDLE`: sign, serve and announce a bundle to the fleet


def _cmd_run(args: argparse.Namespace) -> int:
    if not args.broker or not args.data:
        raise ConfigError("edgeomni trainer: the ingest loop needs --broker URL and --data DIR")
    _require_extra()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if not 0 <= args.compact_every_h <= 24 * 30:
        raise ConfigError(f"--compact-every-h: expected 0 (never) .. 720 hours, got {args.compact_every_h}")
    serve(IngestConfig(args.broker, args.data, args.client_id, args.max_payload_kb, args.ca_file, args.cert_file,
                       args.key_file, shared=not args.exclusive, compact_every_h=args.compact_every_h,
                       password_file=args.password_file), stop)
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    _require_extra()
    if args.before is not None:
        try:
            dt.date.fromisoformat(args.before)
        except ValueError:
            raise ConfigError(f"--before: expected a date YYYY-MM-DD, got {args.before!r}") from None
    if args.min_files < 2:
        raise ConfigError(f"--min-files: expected 2 or more, got {args.min_files}")
    check_data_dirs([args.data])
    dataset = Dataset(args.data)  # refuses while a trainer ingests into DIR (it compacts by itself)
    try:
        print(json.dumps(dataset.compact(before=args.before, min_files=args.min_files), indent=2))
    finally:
        dataset.close()
    return 0


def _require_extra() -> None:
    missing = [name for name in ("paho", "pyarrow") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"edgeomni trainer needs {' and '.join(missing)}: pip install 'edgeomni[trainer]'")


def _cmd_report(args: argparse.Namespace) -> int:
    _require_extra()
    report = fleet_report(args.data)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _cmd_build_sets(args: argparse.Namespace) -> int:
    _require_extra()
    summary = build_sets(args.data, args.out, args.seed, args.calibration_fraction,
                         heldout_fraction=args.heldout_fraction, scene_block_s=args.scene_block_s)
    print(json.dumps(summary, indent=2))
    return 0
