"""`edgeomni bench speech|speechset|video`; `edgeomni/cli.py` calls `add_bench_parser(commands)`.

The other benchmarks run as modules: `python -m edgeomni.bench.NAME --help` (docs/BENCHMARKS.md lists them).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from edgeomni.bench.peers import PEERS
from edgeomni.bench.speech import SpeechBenchOptions, rescore, run_speech_bench, write_report
from edgeomni.bench.video_cli import add_video_parser
from edgeomni.datasets.speechset import default_speech_set_dir, load_speech_set, make_speech_set
from edgeomni.errors import EdgeOmniError
from edgeomni.paths import default_bundle_dir


def _streams(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--streams: expected a number or 'auto', got {value!r}") from None
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"--streams: expected 1..64, got {n}")
    return n


def _peers(value: str) -> list[str]:
    if value.strip() == "none":
        return []
    names = [p.strip() for p in value.split(",") if p.strip()]
    unknown = [p for p in names if p not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"--peers: unknown {', '.join(unknown)} (known: {', '.join(PEERS)}, or none)")
    return names


def _cmd_speech(args: argparse.Namespace) -> int:
    if args.rescore:
        report = rescore(args.rescore)
        _, md_path = write_report(report, args.rescore.parent)
        print(md_path.read_text())
        return 0
    if args.runs < 1:
        raise EdgeOmniError(f"--runs: expected at least 1, got {args.runs}")
    command = "edgeomni " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else ""
    options = SpeechBenchOptions(
        set_dir=args.set, out=args.out, bundle=args.bundle, realtime=args.realtime, streams=args.streams,
        peers=args.peers, runs=args.runs, quick=args.quick, config=args.config,
        clips=[c for c in args.clips.split(",") if c] if args.clips else None,
        command=command or "edgeomni bench speech (called from Python)")
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    report = run_speech_bench(options, progress=progress)
    json_path, md_path = write_report(report, args.out)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path} in {report['elapsed_s']:.0f} s", file=sys.stderr)
    return 0


def _cmd_speechset(args: argparse.Namespace) -> int:
    sset = make_speech_set(args.out) if args.force else load_speech_set(args.out)
    speech = sum(c.seconds for c in sset.clips if c.kind == "speech")
    print(f"{sset.root}: {len(sset.clips)} clips, {speech:.0f} s speech + {sset.seconds - speech:.0f} s non-speech")
    return 0


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `bench speech`, `bench speechset` and `bench video` (reusing a `bench` command another module already
    added)."""
    bench = subparsers.choices.get("bench") or subparsers.add_parser("bench", help="benchmarks (figures, not tests)")
    existing = [a for a in bench._actions if isinstance(a, argparse._SubParsersAction)]
    kinds = existing[0] if existing else bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")

    speech = kinds.add_parser("speech", help="streaming speech captions vs three peers, same audio")
    speech.add_argument("--set", type=Path, default=default_speech_set_dir(),
                        help="speech set directory, generated on first use (default: %(default)s)")
    speech.add_argument("--out", type=Path, default=Path("bench-out"), help="report directory (default: %(default)s)")
    speech.add_argument("--bundle", type=Path, default=default_bundle_dir(), help="bundle (default: %(default)s)")
    speech.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                        help="pace audio as a microphone would (default: on; off makes latencies meaningless)")
    speech.add_argument("--streams", type=_streams, default=1, metavar="N|auto",
                        help="also run EdgeOmni with N concurrent streams per clip; auto: the largest N in budget")
    speech.add_argument("--peers", type=_peers, default="moonshine-voice,faster-whisper,pocketsphinx",
                        metavar="LIST|none", help="comma-separated peers (default: %(default)s)")
    speech.add_argument("--runs", type=int, default=1, metavar="K", help="repeat every pass K times, report medians")
    speech.add_argument("--quick", action="store_true", help="3 clips (real speech, espeak speech, noise)")
    speech.add_argument("--clips", metavar="NAMES", help="comma-separated clip names (overrides --quick)")
    speech.add_argument("--config", type=Path, help="EdgeOmni TOML config for its passes")
    speech.add_argument("--rescore", type=Path, metavar="SPEECH_JSON",
                        help="score a saved speech.json's raw events again (current scoring code), run nothing")
    speech.set_defaults(func=_cmd_speech)

    speechset = kinds.add_parser("speechset", help="generate the speech set (wav + reference txt per clip)")
    speechset.add_argument("--out", type=Path, default=default_speech_set_dir(),
                           help="directory (default: %(default)s)")
    speechset.add_argument("--force", action="store_true", help="regenerate even if a complete set is there")
    speechset.set_defaults(func=_cmd_speechset)

    add_video_parser(kinds)


def main(argv: list[str] | None = None) -> int:
    """`python -m edgeomni.bench.cli bench speech ...`: the same commands without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="edgeomni")
    add_bench_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except EdgeOmniError as exc:
        print(f"edgeomni: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
