"""Caption heads: speech (partial/final) and visual notes, stamped with media time and latency."""

from edgeomni.captions.events import CaptionEvent, MediaClock

__all__ = ["CaptionEvent", "MediaClock"]
