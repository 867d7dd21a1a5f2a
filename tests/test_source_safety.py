"""What a source spec can leak or hang: credentials in a URL, a FIFO, a WAV that declares an absurd rate."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from media_factory import make_speech_wav

from edgeomni.errors import SourceError
from edgeomni.ota.publish import ArchiveServer
from edgeomni.sources import mask_credentials, open_source

SECRET = "S3cretPW-4711"


def test_credentials_in_a_source_url_never_leave_the_process(default_bundle: Path, tmp_path: Path) -> None:
    """The raw spec would reach the start/end events, the terminal header, the JSONL file and every outbox
    record (and so the fleet's dataset); only the masked form may."""
    www = tmp_path / "www"
    www.mkdir()
    make_speech_wav(www / "talk.wav", "Good morning everyone.", speed=150)
    jsonl, outbox = tmp_path / "out.jsonl", tmp_path / "outbox.sqlite"
    with ArchiveServer(www) as server:
        port = server.base_url.rsplit(":", 1)[1]
        url = f"http://admin:{SECRET}@127.0.0.1:{port}/talk.wav"
        cmd = [sys.executable, "-m", "edgeomni", "run", "--bundle", str(default_bundle), "--source", url,
               "--sink", f"jsonl:{jsonl}", "--sink", "terminal", "--outbox", str(outbox), "--no-visual"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    masked = f"http://admin:***@127.0.0.1:{port}/talk.wav"
    assert masked in proc.stdout and masked in jsonl.read_text()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("outbox.sqlite*"))
    assert masked.encode() in stored  # the outbox records do name the source, masked
    for where, text in (("stdout", proc.stdout), ("stderr", proc.stderr), ("jsonl", jsonl.read_text()),
                        ("outbox", stored.decode("latin-1"))):
        assert SECRET not in text, f"the password reached {where}"


def test_unreachable_source_url_error_names_it_masked() -> None:
    with pytest.raises(SourceError) as caught:
        open_source(f"rtsp://cam:{SECRET}@127.0.0.1:1/stream")
    assert SECRET not in str(caught.value) and "cam:***@127.0.0.1:1" in str(caught.value)


@pytest.mark.parametrize("spec, masked", [
    (f"rtsp://cam:{SECRET}@10.0.0.5:554/h264", "rtsp://cam:***@10.0.0.5:554/h264"),
    (f"https://cam.local/live.m3u8?user=a&password={SECRET}&x=1",
     "https://cam.local/live.m3u8?user=a&password=***&x=1"),
    (f"srt://host:9000?passphrase={SECRET}", "srt://host:9000?passphrase=***"),
    (f"lavfi:movie=http\\\\://u:{SECRET}@h/x.mp4", "lavfi:movie=http\\\\://u:***@h/x.mp4"),
    ("talk.wav", "talk.wav"),
    ("http://host/clip.mp4", "http://host/clip.mp4"),
])
def test_mask_credentials_hides_passwords_and_secret_query_values(spec: str, masked: str) -> None:
    assert mask_credentials(spec) == masked


def test_a_named_pipe_as_source_fails_at_once_instead_of_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "talk.wav"
    os.mkfifo(fifo)
    script = ("from edgeomni.sources import open_source\nfrom edgeomni.errors import SourceError\n"
              f"try:\n    open_source({str(fifo)!r})\nexcept SourceError as exc:\n    print(exc)\n")
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("open_source still waited for a writer on the named pipe after 20 s")
    assert "named pipe" in proc.stdout, proc.stdout + proc.stderr


def test_a_wav_that_declares_an_absurd_sample_rate_is_refused(tmp_path: Path) -> None:
    """100 samples at 1 Hz would be 100 s of media, paced in real time; a long file, hours."""
    path = tmp_path / "one-hertz.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(1)
        out.writeframes(b"\0\1" * 100)
    with pytest.raises(SourceError, match=r"one-hertz.wav: audio at 1 Hz.*expected 2000\.\.768000 Hz"):
        open_source(str(path))
