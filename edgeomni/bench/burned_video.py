"""Unpaced captioned files (`edgeomni run --no-realtime --sink video:out.mp4`): are the captions on the frames they
cover, how long does it take, how much memory does it hold, with and without other work on the machine.

A 12-utterance talk over alternating slides and photos is built with espeak-ng and PyAV; `edgeomni run` (from the
checkout given by --repo, so two versions can be compared in one run) writes the captioned file; every frame
inside a final's span is read back with the bundle's OCR and counts as covered when its caption band reads as
that final (WER <= 0.25). --load N runs N busy processes beside it (a loaded machine, as under CI).

    .venv/bin/python -m edgeomni.bench.burned_video --repo . --repo /tmp/old --load 0 --load 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av

from edgeomni.bench.video_media import make_scene_clip, render_photo, render_slide
from edgeomni.bundle import verify_bundle
from edgeomni.engines.ocr import TextReader
from edgeomni.paths import default_bundle_dir
from edgeomni.wer import wer

TURNS = ["The meeting starts now.", "Sales went up this quarter.", "Costs stayed the same.",
         "We hired two engineers.", "The new office opens in May.", "Our customers like the update.",
         "Support tickets went down.", "The team shipped three releases.", "Next we will talk about hiring.",
         "Please send your questions.", "We will meet again next week.", "Thank you all for coming."]


def make_clip(work: Path) -> Path:
    speech = work / "talk.wav"
    ssml = "<speak>" + '<break time="1200ms"/>'.join(TURNS) + "</speak>"
    espeak = shutil.which("espeak-ng") or "espeak-ng"
    subprocess.run([espeak, "-v", "en", "-s", "150", "-m", "-w", str(speech), ssml], check=True, capture_output=True)
    scenes = [render_slide(f"Slide {i + 1}", "Quarterly review") if i % 2 == 0 else render_photo("chelsea")
              for i in range(18)]
    return make_scene_clip(work / "talk.mp4", scenes, seconds_each=2.5, fps=15, speech=speech, speech_at=0.5)


def _burn(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def run_once(repo: Path, bundle: Path, clip: Path, out: Path, load: int) -> dict[str, object]:
    stop = multiprocessing.Event()
    burners = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True) for _ in range(load)]
    for burner in burners:
        burner.start()
    # The CLI exits through sys.exit; atexit still reports the process's own peak resident memory.
    report_peak = ("import atexit, resource, runpy, sys; sys.argv = sys.argv[1:]; atexit.register(lambda: print("
                   "'PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)); "
                   "runpy.run_module('edgeomni', run_name='__main__')")
    cmd = [sys.executable, "-c", report_peak,
           "edgeomni", "run", "--bundle", str(bundle), "--source", str(clip), "--no-realtime",
           "--sink", "jsonl:-", "--sink", f"video:{out}"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    wall = time.monotonic() - started
    stop.set()
    for burner in burners:
        burner.join()
    if proc.returncode != 0:
        raise SystemExit(f"edgeomni run failed in {repo}: {proc.stderr[-2000:]}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    peak = next(float(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_MB"))
    return {"events": events, "wall_s": wall, "peak_rss_mb": peak}


def coverage(out: Path, finals: list[dict[str, object]], reader: TextReader) -> tuple[int, int]:
    with av.open(str(out)) as result:
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in result.decode(video=0)]
    covered = total = 0
    for final in finals:
        inside = [image for t, image in frames if float(final["start"]) + 0.1 <= t <= float(final["end"])]
        for image in inside:
            total += 1
            covered += wer(str(final["text"]), " ".join(line.text for line in reader(image[-70:]))) <= 0.25
    return covered, total


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.bench.burned_video", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, action="append", required=True, help="checkout to run edgeomni from")
    parser.add_argument("--load", type=int, action="append", help="busy processes beside the run (default 0)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/burned_video_bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = default_bundle_dir()
    reader = TextReader(verify_bundle(bundle))
    clip = make_clip(args.work)
    print(f"clip {clip}: 45 s, 15 fps, {len(TURNS)} utterances; bundle {bundle}; "
          f"{os.cpu_count()} CPUs; this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print("| code | load | wall s (median of runs) | peak RSS MB (median) | frames written | "
          "frames in a final's span showing it |")
    print("|---|---|---|---|---|---|")
    for load in args.load or [0]:
        for repo in args.repo:
            walls, peaks, shares, written = [], [], [], set()
            for run in range(args.runs):
                out = args.work / f"out-{repo.name or 'repo'}-{load}-{run}.mp4"
                result = run_once(repo.resolve(), bundle, clip, out, load)
                out.with_suffix(".jsonl").write_text("".join(json.dumps(e) + "\n" for e in result["events"]))
                finals = [e for e in result["events"] if e["type"] == "final"]
                covered, total = coverage(out, finals, reader)
                end = next(e for e in result["events"] if e["type"] == "end")
                walls.append(result["wall_s"])
                peaks.append(result["peak_rss_mb"])
                shares.append(covered / max(total, 1))
                with av.open(str(out)) as written_file:
                    written.add(written_file.streams.video[0].frames)
                print(f"  {repo} load {load} run {run}: {covered}/{total} covered, {len(finals)} finals, "
                      f"wall {result['wall_s']:.1f} s, peak {result['peak_rss_mb']:.0f} MB, "
                      f"sink drops {end.get('sink_drops')}", file=sys.stderr)
            print(f"| {repo} | {load} | {statistics.median(walls):.1f} | {statistics.median(peaks):.0f} | "
                  f"{sorted(written)} | {min(shares):.3f} - {max(shares):.3f} |")


if __name__ == "__main__":
    main()
