"""`python -m edgeomni.export.whisper --out DIR`: build the Whisper tiny.en INT8 bundle (see build.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeomni.errors import EdgeOmniError
from edgeomni.export.cli import EXIT_GATE_FAILED
from edgeomni.export.runner import GateFailed
from edgeomni.export.whisper.build import WhisperExportOptions, build_whisper_bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.export.whisper", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write (replaced if a bundle)")
    parser.add_argument("--calibration-clips", type=int, default=16, help="encoder calibration clips (default 16)")
    parser.add_argument("--method", default="percentile", choices=("minmax", "entropy", "percentile"))
    parser.add_argument("--activations", default="uint8-asymmetric", choices=("uint8-asymmetric", "int8-symmetric"))
    parser.add_argument("--gate-clips", type=int, default=None, help="score only the first N speech clips")
    parser.add_argument("--max-wer-delta", type=float, default=0.01, help="allowed INT8-FP32 WER gap (0.01)")
    parser.add_argument("--min-size-ratio", type=float, default=3.0, help="FP32/INT8 size ratio required (3.0)")
    parser.add_argument("--max-excluded", type=int, default=8,
                        help="nodes the WER gate may keep FP32, round by round, while INT8 misses it (0: none)")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--speech-set", type=Path, default=None, help="bench speech set dir (default: the cache's)")
    parser.add_argument("--no-peer", action="store_true", help="skip scoring faster-whisper on the same clips")
    args = parser.parse_args(argv)
    try:
        options = WhisperExportOptions(out=args.out, calibration_clips=args.calibration_clips, method=args.method,
                                       activations=args.activations,
                                       gate_clips=args.gate_clips, max_wer_delta=args.max_wer_delta,
                                       min_size_ratio=args.min_size_ratio, max_excluded=args.max_excluded,
                                       latency_runs=args.latency_runs, peer=not args.no_peer,
                                       speech_set=args.speech_set)
        path, _ = build_whisper_bundle(options, progress=lambda line: print(line, flush=True))
    except GateFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_GATE_FAILED
    except EdgeOmniError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Whisper bundle ready: {path} (edgeomni run --bundle {path} --source FILE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
