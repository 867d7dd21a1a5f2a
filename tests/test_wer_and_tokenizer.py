import json
from pathlib import Path

from edgeomni.engines.tokenizer import Detokenizer
from edgeomni.wer import normalize, wer


def test_normalizer_treats_punctuation_case_and_dashes_alike() -> None:
    assert normalize("Ever tried. Ever failed—no matter! It’s 42, café-bar") == \
        "ever tried ever failed no matter it's 42 cafe bar"


def test_wer_counts_substitutions_insertions_and_deletions() -> None:
    assert wer("it was the best of times", "It was the best of times.") == 0.0
    assert wer("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert wer("a b", "a b c d") == 1.0
    assert wer("", "") == 0.0 and wer("", "noise") == 1.0


def test_detokenizer_handles_word_marks_and_byte_fallback(tmp_path: Path) -> None:
    spec = {"model": {"vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xC3>": 3, "<0xA9>": 4, "▁caf": 5,
                                "▁better": 6, ",": 7}},
            "added_tokens": [{"id": 1, "content": "<s>", "special": True},
                             {"id": 2, "content": "</s>", "special": True}]}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    assert Detokenizer(path).decode([1, 5, 3, 4, 7, 6, 2]) == "café, better"
