"""Server-side caption latency and CPU with N participants at once (docs/BENCHMARKS.md, "WebRTC").

    python -m edgeomni.bench.webrtc --participants 1 4 [--wav FILE --text REF] [--video [--burn-in]]
                                    [--out bench-out/webrtc]

The server runs in this process; each participant is a `python -m edgeomni.webrtc.client` subprocess sending
the same real speech (A Tale of Two Cities, 44 s, by default) in real time over WebRTC. Latency is the server's
`sent_latency_ms` (audio arrival at the server -> event handed to the data channel), pooled over participants.
`--video` sends the speech inside a 640x360 15 fps clip of real photos (the visual head runs too);
`--burn-in` also asks for each participant's video back with the captions drawn on it (VP8 on the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from edgeomni.bench.video_media import SCENE_PHOTOS, make_scene_clip, render_photo
from edgeomni.config import RunConfig
from edgeomni.sources.sample import TWO_CITIES_TEXT, speech_asset
from edgeomni.telemetry import percentiles
from edgeomni.wer import wer

TOKEN = "bench-token-0000"


async def _one_run(participants: int, wav: Path, reference: str, bundle: Path | None,
                   burn_in: bool = False) -> dict[str, Any]:
    # The optional webrtc extra (aiohttp, aiortc): needed once a run starts, not to read --help.
    from aiohttp import web

    from edgeomni.webrtc.server import ServeConfig, load_server

    serve = ServeConfig(port=0, token=TOKEN, bundle=bundle, idle_timeout_s=10.0)
    server = load_server(serve, RunConfig())
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cpu0, children0, wall0 = time.process_time(), _children_cpu(), time.monotonic()
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeomni.webrtc.client", "--url", f"http://127.0.0.1:{port}", "--token", TOKEN,
        "--file", str(wav), "--name", f"p{i}", "--json", "--timeout", "300", *(["--burn-in"] if burn_in else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for i in range(participants)]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    wall = time.monotonic() - wall0
    server_cpu, clients_cpu = time.process_time() - cpu0, _children_cpu() - children0
    await runner.cleanup()
    latencies: dict[str, list[float]] = {}
    wers, drops, burned = [], 0, 0
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"client exited {proc.returncode}: {err.decode()[-500:]}")
        events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        for event in events:
            if "sent_latency_ms" in event:
                latencies.setdefault(event["type"], []).append(event["sent_latency_ms"])
        wers.append(wer(reference, " ".join(e["text"] for e in events if e["type"] == "final")))
        end = next(e for e in events if e["type"] == "end")
        metrics = end["participant_metrics"]
        drops += metrics["audio_frames_dropped"] + metrics["video_frames_dropped"] + metrics["channel_drops"]
        burned += metrics.get("burned_frames_sent", 0)
    return {"participants": participants, "wall_s": round(wall, 1), "media": wav.name, "burn_in": burn_in,
            "burned_frames_sent": burned,
            "sent_latency_ms": {kind: percentiles(v) for kind, v in latencies.items()},
            "wer": [round(w, 3) for w in wers], "drops": drops,
            "server_cpu_s": round(server_cpu, 1), "server_cpu_pct_of_one_core": round(100 * server_cpu / wall, 1),
            "clients_cpu_s": round(clients_cpu, 1)}


def _with_video(wav: Path) -> Path:
    """The speech as the sound of a 640x360 15 fps clip of real photos (5 s each), made once per speech file."""
    with wave.open(str(wav)) as speech:
        seconds = speech.getnframes() / speech.getframerate()
    clip = Path(tempfile.gettempdir()) / f"edgeomni-webrtc-bench-{wav.stem}.mp4"
    if not clip.exists():
        photos = [render_photo(name) for name in SCENE_PHOTOS]
        scenes = [photos[i % len(photos)] for i in range(int(seconds // 5) + 2)]
        make_scene_clip(clip, scenes, seconds_each=5.0, speech=wav, speech_at=0.0)
    return clip


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.bench.webrtc", description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--wav", type=Path, default=None, help="speech to send (default: two_cities.wav)")
    parser.add_argument("--text", default=None, help="reference transcript of --wav")
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--video", action="store_true", help="send the speech with a video track of real photos")
    parser.add_argument("--burn-in", action="store_true", help="participants ask for their captioned video back")
    parser.add_argument("--out", type=Path, default=None, help="directory for report.json")
    args = parser.parse_args(argv)
    wav = args.wav or speech_asset("two_cities.wav")
    reference = args.text or TWO_CITIES_TEXT
    media = _with_video(wav) if args.video or args.burn_in else wav
    results = [asyncio.run(_one_run(n, media, reference, args.bundle, args.burn_in)) for n in args.participants]
    for r in results:
        final, partial = r["sent_latency_ms"].get("final", {}), r["sent_latency_ms"].get("partial", {})
        print(f"{r['participants']} participant(s): final p50 {final.get('p50')} / p95 {final.get('p95')} ms "
              f"(n={final.get('n')}), partial p50 {partial.get('p50')} / p95 {partial.get('p95')} ms, "
              f"server CPU {r['server_cpu_pct_of_one_core']}% of one core, WER {r['wer']}, drops {r['drops']}, "
              f"captioned frames sent back {r['burned_frames_sent']}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
