"""Caption heads: what turns a stream's frames into caption events. Speech (partials and finals) and visual notes
(screen changes); each implements `edgeomni.captions.head.Head`. A new head is listed here."""

from edgeomni.captions.head import Head, HeadContext, Publish
from edgeomni.captions.speech import SpeechCaptioner
from edgeomni.captions.visual import VisualTagger

HEADS: tuple[type[SpeechCaptioner] | type[VisualTagger], ...] = (SpeechCaptioner, VisualTagger)

__all__ = ["HEADS", "Head", "HeadContext", "Publish", "SpeechCaptioner", "VisualTagger"]
