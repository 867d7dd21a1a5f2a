"""Export progress bars: a log gets a line per ~10% (and the last one), never a flood, never silence."""

from __future__ import annotations

from edgeomni.export.progress import ProgressBar, track


def test_log_mode_prints_about_every_tenth_and_the_end() -> None:
    lines: list[str] = []
    assert list(track(range(100), 100, "calibrating", lines.append)) == list(range(100))
    assert 9 <= len(lines) <= 11, lines
    assert lines[-1].startswith("    calibrating [########################] 100/100 (")
    assert "] 3/100" not in " ".join(lines) and "left)" in lines[0]


def test_a_zero_total_bar_finishes_cleanly() -> None:
    lines: list[str] = []
    bar = ProgressBar(0, "nothing", lines.append, live=False)
    bar.advance()
    assert lines == ["    nothing [########################] 0/0 (0 s)"]
