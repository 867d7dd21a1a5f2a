from pathlib import Path

import pytest

from edgeomni.config import RunConfig

PROFILES = sorted((Path(__file__).parent.parent / "runtimes").glob("*/profile.toml"))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.parent.name)
def test_every_deployment_profile_is_a_valid_config(path: Path) -> None:
    config = RunConfig.load(path)
    assert config.engine.providers[-1] == "CPUExecutionProvider"  # every target can fall back to CPU


def test_there_is_a_profile_per_target() -> None:
    assert {p.parent.name for p in PROFILES} == {"desktop-cpu", "jetson", "server"}
