"""`edgeomni bench video`: the video path at 480p/720p/1080p30, real-time paced, through `edgeomni run`.

Every pass runs the real CLI in a subprocess on a generated clip (real photos, slides with known text,
real read speech from moonshine-voice's two_cities.wav), so decode, scaling, blocking, inference and
sinks are all measured, with the child's own CPU time. Passes, one after another on the same clip:
- per size: INT8 labeller and FP32 labeller (everything else identical);
- a speech-only control (--no-visual) on the largest size: the speech latency figures to compare with,
  so that a speech budget miss can be attributed to video or not;
- a talking-head clip (a portrait whose mouth region changes every frame) with change-skipping on and
  off (change_threshold 0): the compute the change score saves.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from edgeomni.bench.video_media import make_scene_clip, render_photo, render_slide
from edgeomni.bundle import verify_bundle
from edgeomni.engines.faces import FaceDetector
from edgeomni.engines.labeller import ImageLabeller
from edgeomni.engines.ocr import TextReader
from edgeomni.sources.convert import VideoConverter
from edgeomni.sources.sample import speech_asset
from edgeomni.telemetry import percentiles
from edgeomni.vision.change import thumbnail

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
FPS = 30
SPEECH_BUDGET_MS = 200.0
VISUAL_BUDGET_MS = 200.0
SCENES = [("photo", "astronaut"), ("slide", ("Quarterly results", "Revenue up 12%")), ("photo", "chelsea"),
          ("slide", ("EXIT 42 - Main Street", "")), ("photo", "coffee"), ("slide", ("Fail better", "Samuel Beckett"))]
Progress = Callable[[str], None]


@dataclass
class VideoBenchOptions:
    out: Path
    bundle: Path
    media: Path
    sizes: list[str] = field(default_factory=lambda: list(SIZES))
    seconds_each: float = 4.0
    runs: int = 1
    talking_head_only: bool = False


def scenes_clip(media: Path, size_name: str, seconds_each: float) -> Path:
    """The scene clip at one size (cached: built once per size and hold time)."""
    path = media / f"scenes_{size_name}_{seconds_each:g}s.mp4"
    if not path.is_file():
        size = SIZES[size_name]
        frames = [render_photo(what, size) if kind == "photo" else render_slide(*what, size=size)
                  for kind, what in SCENES]
        tmp = path.with_suffix(".tmp.mp4")
        make_scene_clip(tmp, frames, seconds_each=seconds_each, fps=FPS, speech=speech_asset("two_cities.wav"),
                        speech_at=1.0, preset="veryfast")
        tmp.rename(path)
    return path


def talking_head_clip(media: Path, size_name: str, seconds: float) -> Path:
    """A portrait held still while a mouth-sized patch changes every frame (plus sensor-like noise):
    what a video call looks like to the change score."""
    path = media / f"talking_head_{size_name}_{seconds:g}s.mp4"
    if not path.is_file():
        size = SIZES[size_name]
        portrait = render_photo("astronaut", size)
        width, height = size
        # The astronaut's mouth in the letterboxed frame (measured on the 640x360 render, scaled).
        y0, y1, x0, x1 = (round(height * 0.30), round(height * 0.36), round(width * 0.46), round(width * 0.52))
        rng = np.random.default_rng(0)

        def animate(image: np.ndarray, index: int) -> np.ndarray:
            frame = image.copy()
            opening = 0.5 + 0.5 * np.sin(index * 0.9)  # the mouth opens and closes ~4 times a second
            frame[y0:y1, x0:x1] = (frame[y0:y1, x0:x1] * (1.0 - 0.6 * opening)).astype(np.uint8)
            noise = rng.integers(-3, 4, size=(height, 1, 1), dtype=np.int16)  # row noise, cheap at 1080p
            return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)

        tmp = path.with_suffix(".tmp.mp4")
        make_scene_clip(tmp, [portrait], seconds_each=seconds, fps=FPS, speech=speech_asset("two_cities.wav"),
                        speech_at=1.0, animate=animate, preset="veryfast")
        tmp.rename(path)
    return path


def _config_file(directory: Path, visual: dict[str, Any]) -> Path:
    lines = ["[visual]"] + [f"{key} = {json.dumps(value)}" for key, value in visual.items()]
    path = directory / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_pass(bundle: Path, clip: Path, visual: dict[str, Any], extra: list[str] | None = None) -> dict[str, Any]:
    """One real-time `edgeomni run` of ``clip``; latency, CPU and counter figures from its JSONL."""
    with tempfile.TemporaryDirectory(prefix="edgeomni-bench-video-") as tmp:
        events_path = Path(tmp) / "events.jsonl"
        cmd = [sys.executable, "-m", "edgeomni", "run", "--bundle", str(bundle), "--source", str(clip), "--realtime",
               "--sink", f"jsonl:{events_path}", "--config", str(_config_file(Path(tmp), visual)), *(extra or [])]
        load_before = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"edgeomni run {clip.name} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        events = [json.loads(line) for line in events_path.read_text().splitlines() if line.strip()]
    end = next(e for e in events if e["type"] == "end")
    by_type: dict[str, list[float]] = {}
    for event in events:
        if event["type"] in ("partial", "final", "visual"):
            by_type.setdefault(event["type"], []).append(float(event["latency_ms"]))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    media = float(end["media_seconds"]) or 1.0
    counters = end.get("counters", {})
    keep = ("video_blocks", "skipped_blocks", "visual_over_budget", "sampling_downshifts", "frames_sampled",
            "frames_analysed", "frames_unchanged", "scene_changes", "ocr_runs", "vision_seconds", "vision_cpu_seconds")
    return {
        "media_seconds": media, "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
        # The 1-minute load average around the pass: other work on a shared machine shows up here.
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu_per_media_second": round(cpu / media, 3),
        "vision_seconds_per_media_second": round(float(counters.get("vision_seconds", 0.0)) / media, 4),
        "vision_cpu_per_media_second": round(float(counters.get("vision_cpu_seconds", 0.0)) / media, 4),
        "latency_ms": {kind: percentiles(values) for kind, values in by_type.items()},
        "visual_over_budget": sum(v > VISUAL_BUDGET_MS for v in by_type.get("visual", [])),
        "speech_over_budget": sum(v > SPEECH_BUDGET_MS for v in by_type.get("partial", [])),
        "visual_texts": [e["text"] for e in events if e["type"] == "visual"],
        "counters": {key: counters[key] for key in keep if key in counters},
    }


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the scalar figures over K runs (latency percentiles taken per run, then the median)."""
    if len(runs) == 1:
        return runs[0]
    merged = dict(runs[-1])
    for key in ("wall_seconds", "cpu_seconds", "cpu_per_media_second", "vision_seconds_per_media_second",
                "vision_cpu_per_media_second",
                "visual_over_budget", "speech_over_budget"):
        merged[key] = float(np.median([r[key] for r in runs]))
    merged["latency_ms"] = {kind: {stat: float(np.median([r["latency_ms"][kind][stat] for r in runs]))
                                   for stat in runs[-1]["latency_ms"][kind]}
                            for kind in runs[-1]["latency_ms"]}
    merged["runs"] = len(runs)
    return merged


def run_video_bench(options: VideoBenchOptions, progress: Progress = print) -> dict[str, Any]:
    options.media.mkdir(parents=True, exist_ok=True)
    passes: dict[str, dict[str, Any]] = {}

    def measure(name: str, clip: Path, visual: dict[str, Any], extra: list[str] | None = None) -> None:
        runs = []
        for k in range(options.runs):
            progress(f"  {name} (run {k + 1}/{options.runs}, {clip.name}, real time) ...")
            runs.append(run_pass(options.bundle, clip, visual, extra))
        passes[name] = _median_of(runs)
        result = passes[name]
        visual_p95 = result["latency_ms"].get("visual", {}).get("p95")
        progress(f"    visual p95 {visual_p95} ms, CPU {result['cpu_per_media_second']} s per media s, "
                 f"skipped blocks {result['counters'].get('skipped_blocks', '-')}")

    for size in [] if options.talking_head_only else options.sizes:
        progress(f"preparing the {size}{FPS} scene clip ...")
        clip = scenes_clip(options.media, size, options.seconds_each)
        for precision in ("int8", "fp32"):
            measure(f"{size}-{precision}", clip, {"labeller": precision})
    largest = options.sizes[-1]
    if not options.talking_head_only:
        control = scenes_clip(options.media, largest, options.seconds_each)
        measure(f"{largest}-speech-only", control, {}, ["--no-visual"])
    progress("preparing the talking-head clip ...")
    head = talking_head_clip(options.media, "720p", options.seconds_each * len(SCENES))
    measure("talking-head-change-skip-on", head, {})
    measure("talking-head-change-skip-off", head, {"change_threshold": 0.0})
    return {"passes": passes, "options": {"sizes": options.sizes, "seconds_each": options.seconds_each,
                                          "runs": options.runs, "fps": FPS}}


def _median_ms(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return {"median": round(float(np.median(times)), 2), "p95": round(float(np.percentile(times, 95)), 2)}


def stage_costs(bundle: Path, media: Path, sizes: list[str], seconds_each: float, repeat: int = 20) -> dict[str, Any]:
    """Per-stage costs in this process, one thread each, as fast as possible (not paced): decode + scale
    to visual.frame_width per size, the thumbnail, and every visual model on a 640x360 frame."""
    decode: dict[str, Any] = {}
    for size in sizes:
        clip = scenes_clip(media, size, seconds_each)
        converter = VideoConverter(0.0, (640, -1), FPS)
        started, cpu, frames = time.perf_counter(), time.process_time(), 0
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                converter.push(frame)
                frames += 1
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        decode[size] = {"frames": frames, "fps": round(frames / wall, 1),
                        "cpu_ms_per_frame": round(cpu * 1000 / frames, 2)}
    verified = verify_bundle(bundle)
    photo, slide = render_photo("astronaut"), render_slide("Quarterly results", "Revenue up 12%")
    int8, fp32 = ImageLabeller(verified), ImageLabeller(verified, role="image-labeller-fp32")
    faces, reader = FaceDetector(verified), TextReader(verified)
    big = render_photo("astronaut", SIZES["1080p"])
    models = {
        "thumbnail_1080p": lambda: thumbnail(big),
        "thumbnail_640x360": lambda: thumbnail(photo),
        "labeller_int8": lambda: int8.features(photo),
        "labeller_fp32": lambda: fp32.features(photo),
        "faces_2_tiles": lambda: faces(photo),
        "ocr_detector": lambda: reader.detector(slide),
        "ocr_slide_2_lines": lambda: reader(slide),
    }
    for fn in models.values():
        fn()  # warm-up
    return {"decode_scale_to_640": decode, "per_call_ms": {name: _median_ms(fn, repeat) for name, fn in models.items()}}
