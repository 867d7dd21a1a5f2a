"""Helpers for the video path tests: run `edgeomni run` on a clip and pick the events apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_cli(bundle: Path, source: Path | str, *args: str,
            timeout: float = 240) -> tuple[int, list[dict[str, Any]], str]:
    """`edgeomni run` in a subprocess with a JSONL sink on stdout -> (exit code, events, stderr)."""
    cmd = [sys.executable, "-m", "edgeomni", "run", "--bundle", str(bundle), "--source", str(source),
           "--sink", "jsonl:-", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def visual(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "visual"]


def end(events: list[dict[str, Any]]) -> dict[str, Any]:
    ends = [e for e in events if e["type"] == "end"]
    assert len(ends) == 1, events
    return ends[0]


def event_at(events: list[dict[str, Any]], t: float) -> dict[str, Any]:
    """The newest visual event whose block ended at or before media time ``t``: what the viewer sees then."""
    before = [e for e in visual(events) if e["end"] <= t]
    assert before, f"no visual event before {t} s: {visual(events)}"
    return before[-1]
