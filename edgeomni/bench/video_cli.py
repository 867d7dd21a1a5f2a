"""`edgeomni bench video` arguments and command (registered by edgeomni.bench.cli)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from edgeomni.bench.video import SIZES, VideoBenchOptions, run_video_bench, stage_costs
from edgeomni.bench.video_report import write_video_report
from edgeomni.paths import cache_root, default_bundle_dir


def _sizes(value: str) -> list[str]:
    sizes = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if not sizes or unknown:
        raise argparse.ArgumentTypeError(f"unknown size(s) {unknown or value!r}; expected a comma-separated subset of "
                                         f"{','.join(SIZES)}")
    return sorted(sizes, key=list(SIZES).index)


def _cmd_video(args: argparse.Namespace) -> int:
    if args.stages_only:
        print(json.dumps(stage_costs(args.bundle, args.media, args.sizes, args.seconds_each), indent=2))
        return 0
    options = VideoBenchOptions(out=args.out, bundle=args.bundle, media=args.media, sizes=args.sizes,
                                seconds_each=args.seconds_each, runs=args.runs,
                                talking_head_only=args.talking_head_only)
    result = run_video_bench(options, progress=lambda message: print(message, flush=True))
    command = "edgeomni " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    json_path, md_path = write_video_report(result, args.out, command)
    print(md_path.read_text())
    print(f"report: {json_path} and {md_path}")
    return 0


def add_video_parser(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    video = kinds.add_parser("video", help="video path at 480p/720p/1080p30, real time: latency, CPU, INT8 vs FP32")
    video.add_argument("--out", type=Path, default=Path("bench-out"), help="report directory (default: %(default)s)")
    video.add_argument("--bundle", type=Path, default=default_bundle_dir(), help="bundle (default: %(default)s)")
    video.add_argument("--media", type=Path, default=cache_root() / "bench" / "video",
                       help="where the generated clips are cached (default: %(default)s)")
    video.add_argument("--sizes", type=_sizes, default="480p,720p,1080p", help="comma-separated (default: %(default)s)")
    video.add_argument("--seconds-each", type=float, default=4.0, help="seconds each scene is held (6 scenes)")
    video.add_argument("--runs", type=int, default=1, metavar="K", help="repeat every pass K times, report medians")
    video.add_argument("--talking-head-only", action="store_true",
                       help="only the change-skipping comparison on the talking-head clip")
    video.add_argument("--stages-only", action="store_true",
                       help="only the per-stage costs (decode + scale per size, thumbnail, each model), as JSON")
    video.set_defaults(func=_cmd_video)
