"""Benchmarks (figures for docs/BENCHMARKS.md, not timed tests). Nothing here is on the runtime path.

`edgeomni bench speech|speechset|video` (cli.py); the others run as `python -m edgeomni.bench.NAME`:
tensorrt_latency (one model per backend), ota (what an update costs), webrtc (participants at once), sync
(outbox throughput, caption latency with sync), compaction (the trainer's readers), fleet_frames (the vision
data loop), burned_video (captions drawn on unpaced files). The default labeller's INT8 variants run the export's
quantizer, so that one is `python -m edgeomni.export.default.labeller_bench`.
The peers' packages are optional (requirements/bench.txt), and so are the extras a benchmark names.
"""
