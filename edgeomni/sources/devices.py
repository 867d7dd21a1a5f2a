"""Capture devices: which webcams and microphones exist, and how PyAV/PyAudio address them."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import av.logging

from edgeomni.errors import SourceError

PYAUDIO_HINT = (
    "install PyAudio: pip install 'edgeomni[audio]' (on Debian/Ubuntu first: apt-get install portaudio19-dev)"
)


@dataclass(frozen=True, slots=True)
class Device:
    kind: str  # "webcam" or "mic"
    index: int | str  # what goes after "webcam:" / "mic:"
    name: str
    detail: str = ""  # e.g. the device node, channels and default rate

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.index}"

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.spec:<10} {self.name}{extra}"


def list_devices() -> list[Device]:
    """Every webcam and microphone this machine offers, in the form `edgeomni devices` prints."""
    mics: list[Device] = []
    with contextlib.suppress(SourceError):  # no PyAudio: there are simply no microphones to list
        mics = list_mics()
    return list_webcams() + mics


def describe_devices(devices: list[Device]) -> str:
    return "; ".join(f"{d.spec} {d.name}" for d in devices) if devices else "none found"


# -- webcams ------------------------------------------------------------------------------------


def list_webcams() -> list[Device]:
    if sys.platform.startswith("linux"):
        devices = []
        nodes = sorted(glob.glob("/dev/video*"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
        for node in nodes:
            index = re.sub(r"\D", "", node)
            if not index:
                continue
            # The driver's name for the node; metadata-only nodes (every second one on UVC cameras)
            # are listed too, as opening them is the only portable way to tell.
            name_file = Path(f"/sys/class/video4linux/video{index}/name")
            name = name_file.read_text().strip() if name_file.exists() else "video device"
            devices.append(Device("webcam", int(index), name, node))
        return devices
    return _list_av_devices("avfoundation" if sys.platform == "darwin" else "dshow", "video")


def webcam_input(index: str) -> tuple[str, str, dict[str, str]]:
    """(url, PyAV format, options) for `webcam:<index>` on this platform."""
    if sys.platform.startswith("linux"):
        node = index if index.startswith("/dev/") else f"/dev/video{index}"
        if not os.path.exists(node):
            found = describe_devices(list_webcams())
            raise SourceError(f"webcam:{index}: no such device {node}; webcams found: {found}")
        return node, "v4l2", {}
    if sys.platform == "darwin":
        # avfoundation refuses the default 29.97 fps on most built-in cameras; 30 is universal.
        return f"{index}:none", "avfoundation", {"framerate": "30"}
    if sys.platform == "win32":
        if index.isdigit():
            names = [d.name for d in list_webcams()]
            if int(index) >= len(names):
                raise SourceError(f"webcam:{index}: no such device; webcams found: {describe_devices(list_webcams())}")
            index = names[int(index)]
        return f"video={index}", "dshow", {}
    raise SourceError(f"webcam: capture is not supported on platform {sys.platform!r}")


def _list_av_devices(fmt: str, kind: str) -> list[Device]:
    """Parse FFmpeg's `-list_devices` log output (the only enumeration avfoundation/dshow offer)."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.INFO)
    try:
        with av.logging.Capture() as logs, contextlib.suppress(Exception):
            av.open("" if fmt == "avfoundation" else "dummy", format=fmt, options={"list_devices": "true"})
    finally:
        av.logging.set_level(previous)
    devices: list[Device] = []
    section = None
    for _level, _name, message in logs:
        text = message.strip()
        if "video devices" in text.lower():
            section = "video"
        elif "audio devices" in text.lower():
            section = "audio"
        mac = re.match(r"\[(\d+)\] (.+)", text)
        win = re.match(r'"(.+)" \((video|audio)\)', text)
        if mac and section == kind:
            devices.append(Device("webcam", int(mac.group(1)), mac.group(2)))
        elif win and win.group(2) == kind:
            devices.append(Device("webcam", len(devices), win.group(1)))
    return devices


# -- microphones --------------------------------------------------------------------------------


def import_pyaudio() -> ModuleType:
    try:
        import pyaudio
    except ImportError as exc:
        raise SourceError(f"mic: PyAudio is not installed; {PYAUDIO_HINT}") from exc
    return pyaudio


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence the C-level stderr while PortAudio probes ALSA/JACK: it prints dozens of lines per
    missing card, which would bury the one message the user needs."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # pytest capture or an embedded interpreter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def open_pyaudio() -> Any:
    pyaudio = import_pyaudio()
    with quiet_stderr():
        return pyaudio.PyAudio()


def list_mics(pa: Any | None = None) -> list[Device]:
    own = pa is None
    pa = pa if pa is not None else open_pyaudio()
    try:
        devices = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                detail = f"{info['maxInputChannels']} ch, {int(info['defaultSampleRate'])} Hz"
                devices.append(Device("mic", i, str(info.get("name", f"device {i}")), detail))
        return devices
    finally:
        if own:
            pa.terminate()
