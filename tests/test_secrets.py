"""Secrets off the command line (any local user can read another's argv with `ps`): broker passwords from a file
or the environment for `trainer` and `sync`, the server token from a file or the environment for `serve`, and a
warning when a URL on the command line carries a password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sync_support import start_trainer, stop

from edgeomni.cli import main
from edgeomni.config import RunConfig
from edgeomni.errors import ConfigError


def _secret(tmp_path: Path, value: str, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def test_sync_takes_its_password_from_a_file_or_the_environment(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEOMNI_MQTT_PASSWORD", raising=False)
    secret = _secret(tmp_path, "from-file")
    config = RunConfig.from_dict({"sync": {"broker": "mqtt://dev-a@h", "password_file": str(secret)}})
    assert config.sync.address().password == "from-file"
    no_file = RunConfig.from_dict({"sync": {"broker": "mqtt://dev-a@h"}})
    monkeypatch.setenv("EDGEOMNI_MQTT_PASSWORD", "from-env")
    assert no_file.sync.address().password == "from-env"
    assert config.sync.address().password == "from-file"  # the file is named: it wins
    assert RunConfig.from_dict({"sync": {"broker": "mqtt://dev-a:in-url@h"}}).sync.address().password == "in-url"
    with pytest.raises(ConfigError, match=r"sync\.password_file: cannot read"):
        RunConfig.from_dict({"sync": {"broker": "mqtt://dev-a@h", "password_file": str(tmp_path / "none")}})


def test_the_trainer_connects_with_a_password_from_a_file(tmp_path: Path, mqtt_broker) -> None:
    pytest.importorskip("paho.mqtt", reason="paho-mqtt (the trainer extra) is not installed")
    pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    secret = _secret(tmp_path, broker.trainers["trainer"])
    url = f"{broker.url.replace('://', '://trainer@')}"
    trainer = start_trainer(url, tmp_path / "data", tmp_path / "trainer.log", "edgeomni-trainer-1",
                            "--password-file", str(secret))
    stop(trainer)
    assert broker.trainers["trainer"] not in " ".join(trainer.args)


def _edgeomni(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeomni", *args], capture_output=True, text=True, timeout=60)


def test_a_password_in_a_command_line_url_is_warned_about_and_never_echoed(tmp_path: Path) -> None:
    done = _edgeomni("trainer", "--broker", "mqtt://trainer:s3cret@127.0.0.1:99999", "--data", str(tmp_path / "d"))
    assert done.returncode == 2
    assert "warning" in done.stderr and "--password-file" in done.stderr
    assert "port is not a number" in done.stderr and "s3cret" not in done.stderr


def test_serve_takes_its_token_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = pytest.importorskip("edgeomni.webrtc.server", reason="the webrtc extra is not installed")
    seen: list[Any] = []
    monkeypatch.setattr(server, "run_server", lambda serve, config: seen.append(serve))
    monkeypatch.delenv("EDGEOMNI_SERVE_TOKEN", raising=False)
    assert main(["serve", "--token-file", str(_secret(tmp_path, "tok-from-file"))]) == 0
    monkeypatch.setenv("EDGEOMNI_SERVE_TOKEN", "tok-from-env")
    assert main(["serve"]) == 0
    assert [s.token for s in seen] == ["tok-from-file", "tok-from-env"]


def test_a_token_or_a_source_password_on_the_command_line_is_warned_about(capsys: pytest.CaptureFixture[str]) -> None:
    from edgeomni.credentials import warn_secrets_in_argv

    warn_secrets_in_argv(["serve", "--token", "t0ken", "--host", "0.0.0.0"])
    warn_secrets_in_argv(["run", "--source=rtsp://admin:pa55@cam/stream", "--sink", "terminal"])
    err = capsys.readouterr().err
    assert "--token on the command line" in err and "rtsp://admin:***@cam/stream" in err
    assert "t0ken" not in err and "pa55" not in err
