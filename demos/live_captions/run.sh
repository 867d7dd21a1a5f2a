#!/usr/bin/env bash
# Live captions from this machine's webcam and microphone; falls back to the sample clip when there is
# no camera (e.g. a headless box). Extra arguments go to `edgeomni run` (e.g. --sink vtt:live.vtt).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin
if ls /dev/video* >/dev/null 2>&1; then
  exec "$BIN/edgeomni" run --source webcam:0 "$@"
fi
echo "no webcam found; captioning the sample clip instead" >&2
exec "$BIN/edgeomni" run --source sample "$@"
