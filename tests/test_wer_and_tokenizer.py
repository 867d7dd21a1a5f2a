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


def test_local_agreement_commits_whole_agreed_words_only() -> None:
    from edgeomni.captions.agreement import LocalAgreement

    starts = {10, 20, 30, 40}  # word-start tokens; 11 continues word 10, etc.
    agreement = LocalAgreement(lambda t: t in starts)
    assert agreement.update([10, 11, 20]) == []  # one hypothesis: nothing to agree with yet
    assert agreement.update([10, 11, 20, 21, 30]) == [10, 11]  # 20 vs 20,21: word 20 not settled
    assert agreement.update([10, 11, 20, 21, 30, 40]) == [20, 21, 30]  # 30 is followed by a new word
    assert agreement.update([10, 11, 20, 21, 30, 40, 41], max_words=2) == []  # capped at what was heard


def test_asr_loop_guard_cuts_immediate_repeats() -> None:
    from edgeomni.engines.asr import drop_loop as _drop_loop
    from edgeomni.engines.asr import loop_length as _loop_length

    phrase = [5, 6, 7, 8, 9]
    assert _loop_length([1, 2, *phrase, *phrase], fresh_from=2) == 5
    assert _drop_loop([1, 2, *phrase, *phrase], fresh_from=2) == [1, 2, *phrase]
    assert not _loop_length([1, 2, 3, 2, 3], fresh_from=0)  # short repeats ("no, no") are kept
    assert not _loop_length([*phrase, *phrase], fresh_from=10)  # a repeat wholly inside the forced prefix is not ours
    # The previous utterance replayed as context, then the speaker says it again: speech, not a loop...
    assert not _loop_length([*phrase, *phrase], fresh_from=5, own_from=5)
    assert _drop_loop([*phrase, *phrase], fresh_from=5, own_from=5) == [*phrase, *phrase]
    # ...but a loop inside the utterance's own tokens is still cut.
    assert _drop_loop([*phrase, 1, *phrase, *phrase], fresh_from=5, own_from=5) == [*phrase, 1, *phrase]


def test_a_final_that_replays_the_whole_previous_utterance_is_an_echo_of_the_context() -> None:
    """Seen with Whisper tiny.en (bench clip tts08): the context "Good morning everyone. Let us get started." came
    back inside the next sentence's own tokens; the captioner then decodes that utterance without context."""
    from edgeomni.captions.context import echoes_context

    context = [400, 11, 12, 13, 14, 15]  # first token: its spelling differs mid-sentence (" Good" vs "Good")
    assert echoes_context([7, 8, 401, 11, 12, 13, 14, 15, 9], context)
    assert not echoes_context([7, 8, 11, 12, 13, 14, 9], context)  # most of it, not all: a speaker's own words
    assert not echoes_context([11, 12, 13], [10, 11, 12, 13])  # too short to tell an echo from speech
    assert not echoes_context([], context)
