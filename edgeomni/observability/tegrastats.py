"""Jetson telemetry: `tegrastats` lines -> Prometheus gauges (power per rail, temperature per zone, GPU/EMC load,
RAM), plus the nvpmodel power mode and whether jetson_clocks pinned the clocks.

tegrastats prints one line per interval and its format differs by generation and JetPack:

- Nano / TX1 (JetPack 4): `POM_5V_IN 2532/2698` rails in mW without a unit, `GR3D_FREQ 0%@76`, `PLL@34C`;
- TX2 / Xavier NX / AGX Xavier: `VDD_IN 4067/4067`, AGX Xavier's bare `GPU 0/0 CPU 311/311 ... SYS5V 1482/1482`;
- Orin (JetPack 5/6): a timestamp first, `VDD_GPU_SOC 3205mW/3205mW`, `GR3D_FREQ 0%@[305,305]`, lower-case zones
  (`cpu@53.062C tj@53.062C`), `-256C` for a sensor that is off, even negative rail readings;
- later releases: `inst/avg/max` triples (`5139mW/5139mW/5139mW`) and `zone@52.9C/52.9C`.

The parser reads fields by pattern, not position, so a field a board lacks is simply absent. A line without the
`RAM used/totalMB` field every release prints is malformed: counted (`edgeomni_jetson_malformed_lines_total`),
never fatal. Without tegrastats (not a Jetson) the sampler says "not available" once and stays quiet.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeomni.observability.config import TelemetryConfig

log = logging.getLogger("edgeomni.telemetry")

_TIMESTAMP = re.compile(r"^\s*\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2}\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB\b")
_GPU = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?(\d+))?")
_EMC = re.compile(r"\bEMC_FREQ (?:(\d+)%)?(?:@(\d+))?")
_TEMP = re.compile(r"(?<![\w@%])([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)?(?=\s|$)")
# A rail: an upper-case name, then instantaneous/average[/max] milliwatts, with or without the unit. The lookahead
# keeps `RAM 1758/3956MB` and `IRAM 0/252kB(lfb ...` out.
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (-?\d+)(?:mW)?/(-?\d+)(?:mW)?(?:/(-?\d+)(?:mW)?)?(?=\s|$)")
_OFFLINE_C = -100.0  # Jetsons report -256C for a thermal zone that is powered down


class MalformedLine(ValueError):
    """A line that is not tegrastats output (or is cut short)."""


@dataclass
class TegraSample:
    ram_used_bytes: int
    ram_total_bytes: int
    power_watts: dict[str, float] = field(default_factory=dict)  # rail -> instantaneous watts
    temperature_celsius: dict[str, float] = field(default_factory=dict)  # zone (lower case) -> degrees
    gpu_load: float | None = None  # GR3D busy share, 0..1
    gpu_hertz: float | None = None
    emc_load: float | None = None  # memory controller busy share, 0..1
    emc_hertz: float | None = None


def parse_tegrastats(line: str) -> TegraSample:
    """One tegrastats line; raises MalformedLine when it carries no RAM field."""
    text = _TIMESTAMP.sub("", line.strip())
    ram = _RAM.search(text)
    if ram is None:
        raise MalformedLine(f"no 'RAM used/totalMB' field in {text[:80]!r}")
    sample = TegraSample(int(ram.group(1)) * 2**20, int(ram.group(2)) * 2**20)
    gpu = _GPU.search(text)
    if gpu is not None:
        sample.gpu_load = None if gpu.group(1) is None else int(gpu.group(1)) / 100.0
        sample.gpu_hertz = None if gpu.group(2) is None else int(gpu.group(2)) * 1e6
    emc = _EMC.search(text)
    if emc is not None:
        sample.emc_load = None if emc.group(1) is None else int(emc.group(1)) / 100.0
        sample.emc_hertz = None if emc.group(2) is None else int(emc.group(2)) * 1e6
    for zone, value in _TEMP.findall(text):
        celsius = float(value)
        if celsius > _OFFLINE_C:
            sample.temperature_celsius[zone.lower()] = celsius
    for rail, now, _average, _peak in _RAIL.findall(text):
        sample.power_watts[rail] = int(now) / 1000.0
    return sample


def parse_nvpmodel(output: str) -> tuple[str, str] | None:
    """`nvpmodel -q` -> (mode name, mode id); warnings before the mode line are skipped."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            name = line.partition(":")[2].strip()
            mode_id = lines[index + 1] if index + 1 < len(lines) and lines[index + 1].isdigit() else ""
            return name, mode_id
    return None


def clocks_pinned(sysfs: Path) -> bool | None:
    """Whether jetson_clocks is on, as the CPUs show it: it sets every online core's minimum frequency to its
    maximum. None where cpufreq is not readable."""
    pinned: list[bool] = []
    for policy in sorted((sysfs / "devices" / "system" / "cpu").glob("cpu[0-9]*/cpufreq")):
        try:
            low = (policy / "scaling_min_freq").read_text().strip()
            high = (policy / "scaling_max_freq").read_text().strip()
        except OSError:
            continue
        pinned.append(low == high)
    return all(pinned) if pinned else None


class JetsonTelemetry(Collector):
    """Runs `tegrastats --interval MS` in a thread and exposes its newest line as Prometheus series (read at scrape
    time, so a rail or zone a line no longer shows disappears with it, and nothing is reported before the first
    line: no zeros that look like readings)."""

    def __init__(self, config: TelemetryConfig) -> None:
        self.config = config
        self.latest: TegraSample | None = None
        self.samples = self.malformed = 0  # written by the reader thread only
        self.mode: tuple[str, str] | None = None
        self.clocks: bool | None = None
        self.running = False
        self._stop = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._next_mode_check = 0.0

    def start(self) -> JetsonTelemetry:
        if self.config.jetson == "off":
            return self
        command = shutil.which(self.config.tegrastats)
        if command is None:
            log.warning("jetson telemetry not available: no %r on this machine (not a Jetson?)",
                        self.config.tegrastats)
            return self
        try:
            self._process = subprocess.Popen([command, "--interval", str(self.config.interval_ms)],
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                             errors="replace", bufsize=1)
        except OSError as exc:
            log.warning("jetson telemetry not available: %s cannot start (%s)", command, exc.strerror or exc)
            return self
        self.running = True
        self._thread = threading.Thread(target=self._read, name="edgeomni-tegrastats", daemon=True)
        self._thread.start()
        return self

    def handle(self, line: str) -> None:
        """One line of tegrastats output (a malformed one is counted and skipped)."""
        try:
            self.latest = parse_tegrastats(line)
        except MalformedLine:
            self.malformed += 1
        else:
            self.samples += 1

    def check_mode(self) -> None:
        """The power mode (`nvpmodel -q`) and the jetson_clocks state; both change rarely, so they are read every
        `mode_every_s`, not every sample."""
        self.clocks = clocks_pinned(Path(self.config.sysfs))
        command = shutil.which(self.config.nvpmodel)
        if command is None:
            return
        try:
            result = subprocess.run([command, "-q"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return
        self.mode = parse_nvpmodel(result.stdout) or self.mode

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("edgeomni_jetson_telemetry_available", "1 while tegrastats is being read",
                                value=1 if self.running else 0)
        yield CounterMetricFamily("edgeomni_jetson_samples", "tegrastats lines read", value=self.samples)
        yield CounterMetricFamily("edgeomni_jetson_malformed_lines", "tegrastats lines that could not be read "
                                  "(skipped)", value=self.malformed)
        sample = self.latest
        if sample is not None:
            yield _labelled("edgeomni_jetson_power_watts", "Power per rail (instantaneous), from tegrastats", "rail",
                            sample.power_watts)
            yield _labelled("edgeomni_jetson_temperature_celsius", "Temperature per thermal zone", "zone",
                            sample.temperature_celsius)
            yield GaugeMetricFamily("edgeomni_jetson_ram_used_bytes", "RAM in use (CPU and GPU share it)",
                                    value=sample.ram_used_bytes)
            yield GaugeMetricFamily("edgeomni_jetson_ram_total_bytes", "RAM available to applications",
                                    value=sample.ram_total_bytes)
            for name, doc, value in (
                    ("edgeomni_jetson_gpu_load_ratio", "GPU (GR3D) busy share, 0..1", sample.gpu_load),
                    ("edgeomni_jetson_gpu_frequency_hertz", "GPU clock", sample.gpu_hertz),
                    ("edgeomni_jetson_emc_load_ratio", "Memory controller busy share, 0..1", sample.emc_load),
                    ("edgeomni_jetson_emc_frequency_hertz", "Memory controller clock", sample.emc_hertz)):
                if value is not None:
                    yield GaugeMetricFamily(name, doc, value=value)
        if self.mode is not None:
            mode = GaugeMetricFamily("edgeomni_jetson_power_mode_info", "The nvpmodel power mode (value 1)",
                                     labels=["mode", "id"])
            mode.add_metric(list(self.mode), 1)
            yield mode
        if self.clocks is not None:
            yield GaugeMetricFamily("edgeomni_jetson_clocks_enabled", "1 when jetson_clocks pins the CPU clocks at "
                                    "their maximum", value=1 if self.clocks else 0)

    def close(self) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(2)
        if self._thread is not None:
            self._thread.join(5)
        self.running = False

    def _read(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for line in process.stdout:
            if self._stop.is_set():
                break
            self.handle(line)
            if time.monotonic() >= self._next_mode_check:
                self._next_mode_check = time.monotonic() + self.config.mode_every_s
                self.check_mode()
        if not self._stop.is_set():
            log.warning("jetson telemetry stopped: tegrastats exited with code %s", process.wait())
            self.running = False


def _labelled(name: str, doc: str, label: str, values: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


__all__ = ["JetsonTelemetry", "MalformedLine", "TegraSample", "clocks_pinned", "parse_nvpmodel",
           "parse_tegrastats"]
