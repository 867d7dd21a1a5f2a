"""The JSONL contract: a run recorded before the events were typed must read back into typed events and serialise
to the very same bytes, and a run today must have the recording's record kinds with the same keys in the same
order (later versions may add keys, never rename or reorder them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_run_e2e import run_cli

from edgeomni.events import RECORD_KINDS, from_record, to_json

RECORDED = Path(__file__).parent / "data" / "jsonl_contract" / "sample_no_realtime.jsonl"


def _lines() -> list[str]:
    return RECORDED.read_text(encoding="utf-8").splitlines()


def test_every_recorded_record_reads_back_and_serialises_to_the_same_bytes() -> None:
    lines = _lines()
    kinds = {json.loads(line)["type"] for line in lines}
    assert {"start", "partial", "final", "visual", "end"} <= kinds
    for number, line in enumerate(lines, 1):
        assert to_json(from_record(json.loads(line))) == line, f"{RECORDED.name} line {number}"


@pytest.mark.parametrize("record", [{"type": "final", "stream": "main"}, {"type": "caption", "text": "x"},
                                    {**json.loads(_lines()[-1]), "surprise": 1}])
def test_a_record_that_breaks_the_contract_is_named(record: dict) -> None:
    with pytest.raises(ValueError, match=f"{record['type']} record|record type"):
        from_record(record)


def test_a_run_today_keeps_every_kind_and_key_order_of_the_recording(default_bundle: Path) -> None:
    code, events, err = run_cli(default_bundle, "--source", "sample", "--no-realtime")
    assert code == 0, err
    recorded = {}
    for line in _lines():
        record = json.loads(line)
        recorded.setdefault(record["type"], list(record))
    today = {}
    for event in events:
        today.setdefault(event["type"], list(event))
        assert list(event) == recorded[event["type"]], (event["type"], list(event))
    assert set(today) == set(recorded) and set(today) <= set(RECORD_KINDS)
