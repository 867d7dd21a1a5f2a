"""Chunking: fixed audio frames for the VAD, 16-frame video blocks for the vision engines."""

from edgeomni.chunking.audio import AudioFramer, FixedFrame
from edgeomni.chunking.video import VideoBlock, VideoBlocker

__all__ = ["AudioFramer", "FixedFrame", "VideoBlock", "VideoBlocker"]
