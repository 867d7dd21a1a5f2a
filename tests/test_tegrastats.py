"""Jetson telemetry: the tegrastats parser on real lines of several generations (tests/data/tegrastats_lines.txt,
each block citing its source), malformed lines counted and skipped, and the sampler thread end to end against a
stand-in `tegrastats` that prints recorded lines (no Jetson here)."""

from __future__ import annotations

import logging
import stat
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeomni.observability.config import TelemetryConfig
from edgeomni.observability.tegrastats import (
    JetsonTelemetry,
    MalformedLine,
    clocks_pinned,
    parse_nvpmodel,
    parse_tegrastats,
)

DATA = Path(__file__).resolve().parent / "data" / "tegrastats_lines.txt"


def _recorded() -> list[tuple[str, str, str]]:
    """(generation, source URL, line) for every recorded line."""
    rows, generation, source = [], "", ""
    for raw in DATA.read_text().splitlines():
        if raw.startswith("@"):
            generation, _, source = (part.strip() for part in raw[1:].split("|"))
        elif raw.strip() and not raw.startswith("#"):
            rows.append((generation, source, raw))
    return rows


RECORDED = _recorded()


def test_the_recorded_lines_cover_four_generations_each_with_its_source() -> None:
    generations = {generation for generation, _, _ in RECORDED}
    assert {"nano", "xavier-nx", "orin-nano", "agx-orin"} <= generations
    assert all(source.startswith("https://github.com/") for _, source, _ in RECORDED)


@pytest.mark.parametrize("generation, source, line", RECORDED, ids=[f"{g}-{i}" for i, (g, _, _) in
                                                                       enumerate(RECORDED)])
def test_every_recorded_line_parses(generation: str, source: str, line: str) -> None:
    sample = parse_tegrastats(line)
    assert 0 < sample.ram_used_bytes < sample.ram_total_bytes
    assert sample.temperature_celsius, "every generation reports some thermal zone"
    assert all(-40 < value < 120 for value in sample.temperature_celsius.values())
    assert all(-50 < watts < 100 for watts in sample.power_watts.values())
    assert sample.gpu_load is None or 0 <= sample.gpu_load <= 1


def _line(generation: str, contains: str) -> str:
    return next(line for g, _, line in RECORDED if g == generation and contains in line)


def test_nano_rails_without_units_are_milliwatts() -> None:
    sample = parse_tegrastats(_line("nano", "POM_5V_GPU 2949/182"))
    assert sample.power_watts == {"POM_5V_IN": 5.143, "POM_5V_GPU": 2.949, "POM_5V_CPU": 0.179}
    assert sample.temperature_celsius["gpu"] == 27.0 and sample.temperature_celsius["thermal"] == 27.0
    assert sample.gpu_load == 0.99 and sample.gpu_hertz == 921e6 and sample.emc_load == 0.04
    assert sample.ram_used_bytes == 1762 * 2**20


def test_xavier_nx_jetpack_5_units_and_timestamp() -> None:
    sample = parse_tegrastats(_line("xavier-nx", "13353mW"))
    assert sample.power_watts == {"VDD_IN": 13.353, "VDD_CPU_GPU_CV": 7.34, "VDD_SOC": 1.944}
    assert sample.temperature_celsius["aux"] == 37.0 and sample.gpu_load == 0.99


def test_agx_xavier_rails_named_without_vdd() -> None:
    sample = parse_tegrastats(_line("agx-xavier", "SYS5V"))
    assert sample.power_watts == {"GPU": 0.0, "CPU": 0.311, "SOC": 0.932, "CV": 0.0, "VDDRQ": 0.621,
                                  "SYS5V": 1.482}


def test_orin_nano_lower_case_zones() -> None:
    sample = parse_tegrastats(_line("orin-nano", "VDD_SOC"))
    assert sample.power_watts == {"VDD_IN": 4.233, "VDD_CPU_GPU_CV": 0.478, "VDD_SOC": 1.317}
    assert sample.temperature_celsius == {"cpu": 63.687, "soc2": 62.781, "soc0": 61.5, "gpu": 62.281,
                                          "tj": 63.687, "soc1": 62.312}
    assert sample.gpu_load == 0.0 and sample.gpu_hertz is None and sample.emc_load is None


def test_agx_orin_per_gpc_clocks_and_spacing() -> None:
    sample = parse_tegrastats(_line("agx-orin", "GR3D_FREQ 39%@[305,0]"))
    assert sample.gpu_load == 0.39 and sample.gpu_hertz == 305e6 and sample.emc_load == 0.12
    assert sample.power_watts == {"VDD_GPU_SOC": 2.798, "VDD_CPU_CV": 0.799, "VIN_SYS_5V0": 3.315}
    spaced = parse_tegrastats(_line("agx-orin", "(lfb 3x4MB)    SWAP"))
    assert spaced.power_watts["VDD_CPU_CV"] == 4.405 and spaced.temperature_celsius["tj"] == 53.062


def test_later_formats_offline_sensors_and_triples() -> None:
    """A zone at -256C is a sensor that is off; inst/avg/max rails and zone@now/max temperatures (newer
    releases) take the instantaneous value."""
    sample = parse_tegrastats("RAM 1500/7850MB EMC_FREQ 12% GR3D_FREQ @[1000,1000] cpu@-256C tj@47.343C/48.5C "
                              "VDD_GPU_SOC 5139mW/5000mW/5500mW VDD_CPU_CV -398mW/-398mW")
    assert sample.temperature_celsius == {"tj": 47.343}
    assert sample.power_watts == {"VDD_GPU_SOC": 5.139, "VDD_CPU_CV": -0.398}
    assert sample.gpu_load is None and sample.gpu_hertz == 1000e6


@pytest.mark.parametrize("line", ["", "tegrastats: command not found", "CPU [1%@729,off] GR3D_FREQ 0%",
                                  "\x00\x01 garbage", "RAM", "RAM 10/"])
def test_malformed_lines_raise(line: str) -> None:
    with pytest.raises(MalformedLine):
        parse_tegrastats(line)


def _families(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_malformed_lines_are_counted_and_the_last_good_line_stays() -> None:
    telemetry = JetsonTelemetry(TelemetryConfig())
    registry = CollectorRegistry()
    registry.register(telemetry)
    assert "edgeomni_jetson_power_watts" not in _families(registry), "no readings before the first line"
    for line in [_line("orin-nano", "VDD_SOC"), "garbage", "", _line("nano", "POM_5V_GPU 2949/182"), "RAM 1/"]:
        telemetry.handle(line)
    families = _families(registry)
    assert families["edgeomni_jetson_samples_total"][()] == 2
    assert families["edgeomni_jetson_malformed_lines_total"][()] == 3
    assert families["edgeomni_jetson_power_watts"] == {(("rail", "POM_5V_CPU"),): 0.179,
                                                       (("rail", "POM_5V_GPU"),): 2.949,
                                                       (("rail", "POM_5V_IN"),): 5.143}
    assert (("zone", "tj"),) not in families["edgeomni_jetson_temperature_celsius"], "zones of an older line go"
    assert families["edgeomni_jetson_gpu_load_ratio"][()] == 0.99


def test_nvpmodel_query_output() -> None:
    assert parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: MODE_15W\n2\n") == ("MODE_15W", "2")
    assert parse_nvpmodel("NV Fan Mode:cool\nNV Power Mode: MODE_30W_4CORE\n5\n") == ("MODE_30W_4CORE", "5")
    assert parse_nvpmodel("nvpmodel: command not found") is None


def _fake_sysfs(root: Path, pinned: bool) -> Path:
    for cpu, (low, high) in enumerate([(1510400, 1510400), (729600 if not pinned else 1510400, 1510400)]):
        policy = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq"
        policy.mkdir(parents=True)
        (policy / "scaling_min_freq").write_text(f"{low}\n")
        (policy / "scaling_max_freq").write_text(f"{high}\n")
    return root


def test_jetson_clocks_is_read_from_pinned_cpu_clocks(tmp_path: Path) -> None:
    assert clocks_pinned(_fake_sysfs(tmp_path / "on", pinned=True)) is True
    assert clocks_pinned(_fake_sysfs(tmp_path / "off", pinned=False)) is False
    assert clocks_pinned(tmp_path / "none") is None


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_sampler_reads_a_running_tegrastats(tmp_path: Path) -> None:
    """A stand-in `tegrastats` prints recorded AGX Orin lines (and one broken line) at the interval it is given;
    a stand-in `nvpmodel` answers the query; the gauges follow."""
    lines = [line for g, _, line in RECORDED if g == "agx-orin"] + ["broken output"]
    fake = _script(tmp_path / "tegrastats", f"""import sys, time
assert sys.argv[1] == "--interval"
lines = {lines!r}
for i in range(600):
    print(lines[i % len(lines)], flush=True)
    time.sleep(int(sys.argv[2]) / 1000)
""")
    nvpmodel = _script(tmp_path / "nvpmodel", 'print("NVPM WARN: fan mode is not set!\\nNV Power Mode: MAXN\\n0")\n')
    config = TelemetryConfig(tegrastats=str(fake), nvpmodel=str(nvpmodel), interval_ms=100,
                             sysfs=str(_fake_sysfs(tmp_path / "sys", pinned=True)))
    telemetry = JetsonTelemetry(config)
    registry = CollectorRegistry()
    registry.register(telemetry)
    telemetry.start()
    try:
        deadline = time.monotonic() + 60
        while telemetry.samples < 5 or telemetry.malformed < 1:
            assert time.monotonic() < deadline, f"sampler read {telemetry.samples} lines in 60 s"
            time.sleep(0.1)
        families = _families(registry)
    finally:
        telemetry.close()
    assert families["edgeomni_jetson_telemetry_available"][()] == 1
    assert families["edgeomni_jetson_power_mode_info"] == {(("id", "0"), ("mode", "MAXN")): 1}
    assert families["edgeomni_jetson_clocks_enabled"][()] == 1
    assert set(families["edgeomni_jetson_power_watts"]) == {(("rail", r),) for r in
                                                             ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")}
    assert families["edgeomni_jetson_malformed_lines_total"][()] >= 1
    assert _families(registry)["edgeomni_jetson_telemetry_available"][()] == 0  # closed


def test_without_tegrastats_it_says_not_available_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    telemetry = JetsonTelemetry(TelemetryConfig(tegrastats=str(tmp_path / "no-such-tegrastats")))
    registry.register(telemetry)
    with caplog.at_level(logging.WARNING, logger="edgeomni.telemetry"):
        telemetry.start()
        for _ in range(3):
            _families(registry)
        telemetry.close()
    assert [r.getMessage() for r in caplog.records].count(
        f"jetson telemetry not available: no {str(tmp_path / 'no-such-tegrastats')!r} on this machine "
        "(not a Jetson?)") == 1
    assert len(caplog.records) == 1
    families = _families(registry)
    assert families["edgeomni_jetson_telemetry_available"][()] == 0
    assert not any(name.startswith(("edgeomni_jetson_power", "edgeomni_jetson_temperature")) for name in families)


def test_off_starts_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgeomni.telemetry"):
        JetsonTelemetry(TelemetryConfig(jetson="off", tegrastats=str(tmp_path / "none"))).start().close()
    assert not caplog.records
