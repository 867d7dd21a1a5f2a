"""Endpointing logic on synthetic VAD probabilities (the VAD model itself is exercised end to end)."""
import itertools

import numpy as np

from edgeomni.captions.endpoint import Endpointer
from edgeomni.chunking import AudioFramer, FixedFrame
from edgeomni.config import SpeechConfig
from edgeomni.frames import AUDIO_RATE, AudioFrame

FRAME = 512
FRAME_S = FRAME / AUDIO_RATE


def feed(endpointer: Endpointer, probs: list[float]) -> list:
    out = []
    for i, p in enumerate(probs):
        samples = np.full(FRAME, p, dtype=np.float32)  # amplitude tracks "speechiness" for the split test
        utterance = endpointer.push(FixedFrame(samples, i * FRAME_S, 100.0 + i), p)
        if utterance is not None:
            out.append(utterance)
    tail = endpointer.flush()
    return [*out, tail] if tail is not None else out


def test_speech_between_silences_is_one_utterance_with_padding() -> None:
    config = SpeechConfig(min_silence_ms=320, pad_ms=96, min_speech_ms=100)
    probs = [0.0] * 20 + [0.9] * 30 + [0.0] * 30
    [utt] = feed(Endpointer(config), probs)
    assert abs(utt.start - (20 - 3) * FRAME_S) < 1e-6  # 3 frames (96 ms) of pre-roll
    assert abs(utt.end - (50 + 3) * FRAME_S) < 1e-6  # speech end + 96 ms of pad
    assert not utt.split


def test_an_asr_that_needs_more_pad_raises_it_and_a_switch_changes_it_between_utterances() -> None:
    """Whisper asks for >= 500 ms around speech (its min_pad_ms): 16 frames of pre-roll where the config says 3;
    an OTA switch back to an ASR without the need returns to the config's pad from the next utterance."""
    config = SpeechConfig(min_silence_ms=320, pad_ms=96, min_speech_ms=100)
    probs = [0.0] * 20 + [0.9] * 30 + [0.0] * 30
    endpointer = Endpointer(config, min_pad_ms=500)
    [utt] = feed(endpointer, probs)
    assert abs(utt.start - (20 - 16) * FRAME_S) < 1e-6
    assert abs(utt.end - (50 + 10) * FRAME_S) < 1e-6  # the pad is cut where the 320 ms of silence closed it
    endpointer.repad(0)
    [again] = feed(endpointer, probs)
    assert abs(again.start - (20 - 3) * FRAME_S) < 1e-6 and abs(again.end - (50 + 3) * FRAME_S) < 1e-6


def test_short_pause_does_not_end_the_utterance_but_long_one_does() -> None:
    config = SpeechConfig(min_silence_ms=320, pad_ms=0, min_speech_ms=100)
    probs = [0.9] * 20 + [0.1] * 5 + [0.9] * 20 + [0.1] * 15 + [0.9] * 20 + [0.1] * 15
    utts = feed(Endpointer(config), probs)
    assert len(utts) == 2
    assert abs(utts[0].end - 45 * FRAME_S) < 1e-6


def test_hysteresis_keeps_speech_between_release_and_threshold() -> None:
    config = SpeechConfig(min_silence_ms=320, pad_ms=0, threshold=0.5, release=0.35, min_speech_ms=0)
    probs = [0.9] * 10 + [0.4] * 30 + [0.0] * 12
    [utt] = feed(Endpointer(config), probs)
    assert abs(utt.end - 40 * FRAME_S) < 1e-6


def test_bursts_shorter_than_min_speech_are_rejected_and_counted() -> None:
    endpointer = Endpointer(SpeechConfig(min_silence_ms=320, min_speech_ms=250, pad_ms=0))
    assert feed(endpointer, [0.0] * 10 + [0.9] * 3 + [0.0] * 20) == []
    assert endpointer.rejected_bursts == 1


def test_long_speech_is_split_at_the_quietest_point_and_nothing_is_dropped() -> None:
    config = SpeechConfig(max_utterance_s=2.0, min_silence_ms=320, pad_ms=0, min_speech_ms=0)
    n = int(2.0 / FRAME_S)
    probs = [0.9] * n * 2
    probs[int(n * 0.8)] = 0.36  # a breath: still speech, but the least speech-like frame
    utts = feed(Endpointer(config), probs + [0.0] * 12)
    assert utts[0].split and abs(utts[0].end - (int(n * 0.8) + 1) * FRAME_S) < 1e-6
    total = sum(len(u.audio) for u in utts)
    assert total == len(probs) * FRAME  # every speech sample is in exactly one utterance
    for a, b in itertools.pairwise(utts):
        assert abs(a.end - b.start) < 1e-6


def test_stream_ending_mid_utterance_still_yields_it() -> None:
    [utt] = feed(Endpointer(SpeechConfig(min_speech_ms=0)), [0.9] * 20)
    assert abs(utt.end - 20 * FRAME_S) < 1e-6


def test_audio_framer_reframes_any_length_and_keeps_timestamps() -> None:
    framer = AudioFramer(512)
    frames = []
    pts = 0.0
    for n in (100, 1000, 37, 2000, 5):
        frames += list(framer.push(AudioFrame(np.arange(n, dtype=np.float32), pts, pts + 10)))
        pts += n / AUDIO_RATE
    frames += list(framer.flush(99.0))
    assert all(len(f.samples) == 512 for f in frames)
    assert len(frames) == -(-3142 // 512)
    for i, f in enumerate(frames):
        assert abs(f.pts - i * 512 / AUDIO_RATE) < 1e-9


def test_long_speech_ends_at_a_short_pause() -> None:
    config = SpeechConfig(min_silence_ms=480, long_speech_s=2.0, long_speech_silence_ms=192, pad_ms=0,
                          min_speech_ms=0)
    n_long = int(2.0 / FRAME_S)
    early = [0.9] * 20 + [0.1] * 8 + [0.9] * 20  # a 256 ms pause before long_speech_s: not an endpoint
    late = [0.9] * (n_long - len(early) + 5) + [0.1] * 8 + [0.9] * 10 + [0.0] * 20  # after it: an endpoint
    utts = feed(Endpointer(config), early + late)
    assert len(utts) == 2
    assert abs(utts[0].end - (len(early) + n_long - len(early) + 5) * FRAME_S) < 1e-6


def feed_levels(endpointer: Endpointer, frames: list[tuple[float, float]]) -> list:
    """(amplitude, VAD probability) per frame: for the loudness rule, which looks at the audio itself."""
    out = []
    for i, (amplitude, p) in enumerate(frames):
        utterance = endpointer.push(FixedFrame(np.full(FRAME, amplitude, dtype=np.float32), i * FRAME_S, 0.0), p)
        if utterance is not None:
            out.append(utterance)
    return out


def test_voice_far_below_the_speakers_level_ends_speech_although_the_vad_lags() -> None:
    # Silero keeps saying "speech" through trailing murmur and reverb; 20 dB under the voice is silence.
    frames = [(0.0, 0.0)] * 5 + [(0.3, 0.95)] * 30 + [(0.01, 0.9)] * 30 + [(0.0, 0.0)] * 20
    config = SpeechConfig(min_silence_ms=320, pad_ms=0, min_speech_ms=0, silence_db=20.0)
    [utt] = feed_levels(Endpointer(config), frames)
    assert abs(utt.end - 35 * FRAME_S) < 1e-6 and abs(utt.speech_end - 35 * FRAME_S) < 1e-6
    [lagging] = feed_levels(Endpointer(SpeechConfig(min_silence_ms=320, pad_ms=0, min_speech_ms=0, silence_db=0)),
                            frames)
    assert abs(lagging.end - 65 * FRAME_S) < 1e-6  # without the rule the VAD alone decides


def test_quieter_words_within_the_voice_range_stay_speech() -> None:
    frames = [(0.3, 0.95)] * 20 + [(0.05, 0.9)] * 20 + [(0.0, 0.0)] * 20  # -15.6 dB: a softer phrase, not silence
    config = SpeechConfig(min_silence_ms=320, pad_ms=0, min_speech_ms=0, silence_db=20.0)
    [utt] = feed_levels(Endpointer(config), frames)
    assert abs(utt.end - 40 * FRAME_S) < 1e-6


def test_pending_is_the_final_to_come_if_the_silence_holds() -> None:
    config = SpeechConfig(min_silence_ms=320, pad_ms=96, min_speech_ms=0)
    endpointer = Endpointer(config)
    guesses, finals = [], []
    probs = [0.9] * 20 + [0.0] * 4 + [0.9] * 10 + [0.0] * 12
    for i, p in enumerate(probs):
        utterance = endpointer.push(FixedFrame(np.full(FRAME, p, dtype=np.float32), i * FRAME_S, 0.0), p)
        if utterance is not None:
            finals.append(utterance)
        elif endpointer.in_speech:
            pending = endpointer.pending()
            assert (pending is None) == (p > 0)  # nothing to guess while the person speaks
            if pending is not None:
                assert endpointer.frames_to_endpoint == 10 - endpointer.silent_frames
                guesses.append(pending)
    [final] = finals
    first_pause, last_pause = guesses[:4], guesses[4:]
    assert all(g.speech_end != final.speech_end for g in first_pause)  # speech resumed: those guesses are stale
    assert all(g.speech_end == final.speech_end and g.start == final.start for g in last_pause)
    assert np.array_equal(last_pause[-1].audio, final.audio)  # once the pad has arrived, it is the final
    assert len(last_pause[0].audio) == (20 + 4 + 10 + 1) * FRAME  # the guess holds the pad that has arrived


def test_a_soft_onset_after_a_pause_is_speech_not_more_silence() -> None:
    # 7 silent frames (224 ms) then a quiet first frame that the VAD starts to like: the pause is not 256 ms.
    config = SpeechConfig(min_silence_ms=256, pad_ms=0, min_speech_ms=0, silence_db=20.0)
    frames = [(0.3, 0.95)] * 20 + [(0.0, 0.05)] * 7 + [(0.01, 0.55)] + [(0.3, 0.95)] * 10 + [(0.0, 0.0)] * 10
    [utt] = feed_levels(Endpointer(config), frames)
    assert abs(utt.end - 38 * FRAME_S) < 1e-6


def test_open_from_is_where_an_utterance_not_yet_closed_can_start() -> None:
    """What the video sink waits for: no final can start before open_from (the pre-roll, or the speech)."""
    config = SpeechConfig(min_silence_ms=320, pad_ms=96, min_speech_ms=100)
    endpointer = Endpointer(config)
    assert endpointer.open_from() is None  # nothing heard yet
    probs = [0.0] * 20 + [0.9] * 30 + [0.0] * 30
    seen = []
    for i, p in enumerate(probs):
        utterance = endpointer.push(FixedFrame(np.full(FRAME, p, np.float32), i * FRAME_S, 100.0 + i), p)
        seen.append((i, endpointer.open_from(), utterance))
    assert abs(seen[10][1] - 8 * FRAME_S) < 1e-6  # in silence: the pre-roll a new utterance would start with
    assert abs(seen[30][1] - 17 * FRAME_S) < 1e-6  # speaking: the utterance's own start
    closed = next(i for i, _, utterance in seen if utterance is not None)
    assert abs(seen[closed][2].start - 17 * FRAME_S) < 1e-6
    assert seen[closed][1] > seen[closed][2].end - 3 * FRAME_S  # after the close: only the fresh pre-roll
