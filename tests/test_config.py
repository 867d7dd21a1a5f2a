from pathlib import Path

import pytest

from edgeomni.cli import main
from edgeomni.config import RunConfig
from edgeomni.errors import ConfigError


def test_defaults_validate_and_round_trip_through_toml(tmp_path: Path) -> None:
    config = RunConfig().validate()
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert RunConfig.load(path) == config


def test_file_overrides_only_the_fields_it_names(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[speech]\nmin_silence_ms = 700\n[visual]\nenabled = false\n")
    config = RunConfig.load(path)
    assert config.speech.min_silence_ms == 700 and config.visual.enabled is False
    assert config.speech.threshold == RunConfig().speech.threshold


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[speech]\nthreshold = 1.5\n", "speech.threshold: expected a probability in (0, 1), got 1.5"),
        ("[speech]\nbogus = 1\n", "speech: unknown field(s) ['bogus']"),
        ("[nope]\nx = 1\n", "unknown field(s) ['nope'] (known: ['engine', 'metrics', 'ota', 'outbox', 'speech', "
                            "'sync', 'telemetry', 'visual'])"),
        ("[speech]\nmin_silence_ms = 'long'\n", "speech.min_silence_ms: expected int, got str 'long'"),
        ("[engine]\nproviders = [1]\n", "engine.providers[0]: expected str, got int 1"),
        ("[speech]\nenabled = 1\n", "speech.enabled: expected bool, got int 1"),
        ("[visual]\nblock_frames = 0\n", "visual.block_frames: expected 1..256, got 0"),
        ("[engine]\nproviders = ['GPU']\n", "engine.providers"),
        ("[speech\n", "not valid TOML"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=None) as err:
        RunConfig.load(path)
    assert needle in str(err.value)


def test_a_validated_config_is_immutable_and_overrides_make_a_validated_copy() -> None:
    config = RunConfig().validate()
    with pytest.raises(AttributeError):
        config.speech.enabled = False  # type: ignore[misc]
    changed = config.override({"speech.enabled": False, "ota.broker": None})
    assert changed.speech.enabled is False and config.speech.enabled is True and changed.ota == config.ota
    with pytest.raises(ConfigError, match=r"speech.threshold: expected a probability in \(0, 1\), got 1.5"):
        config.override({"speech.threshold": 1.5})
    with pytest.raises(ConfigError, match=r"speech: unknown field\(s\) \['bogus'\]"):
        config.override({"speech.bogus": 1})


def test_config_show_prints_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    for section in ("[speech]", "[visual]", "[engine]", "min_silence_ms", "block_frames", "providers"):
        assert section in out


def test_missing_config_file_is_a_clean_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["config", "show", "--config", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: no such file" in capsys.readouterr().err


def test_config_show_hides_sync_secrets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[sync]\nbroker = "mqtts://dev-a:s3cret-url@broker.example:8883"\nusername = "dev-a"\n'
                    'password = "s3cret-field"\n')
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert 'broker = "mqtts://dev-a:***@broker.example:8883"' in out and 'password = "***"' in out
    assert 'username = "dev-a"' in out


@pytest.mark.parametrize("url", ["MQTTS://dev-a:s3cret-upper@broker.example:8883",
                                 "mqtt://dev-a:p@s3cret-at@broker.example:1883",
                                 "Mqtt://dev-a:s3cret@sign@@broker.example"])
def test_config_show_hides_the_password_of_any_broker_url(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          url: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[sync]\nbroker = "{url}"\n')
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "dev-a:***@broker.example" in out, out


@pytest.mark.parametrize("url", ["mqtt://dev-a:s3cret@host:notaport", "http://dev-a:s3cret@host",
                                 "mqtt://dev-a:s3/cret@host", "mqtt://dev-a:s3cret@"])
def test_a_bad_broker_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"sync": {"broker": url}})
    assert "sync.broker" in str(err.value) and "s3" not in str(err.value) and "cret" not in str(err.value)
