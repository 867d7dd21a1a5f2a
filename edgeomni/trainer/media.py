"""Checks that a hard example's media can be used, without an image or audio library: the trainer runs them at
ingest (a bad file is a `schema` reject) and `build-sets` again on what older trainers stored (a bad row is
skipped and counted). Each raises ValueError saying what is wrong."""

from __future__ import annotations

import io
import struct
import wave
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 16_384  # pixels; the device keeps frames at a few hundred
RATES = (8_000, 192_000)  # WAV frame rates the sets can use (the device writes 16 kHz)
# PNG colour type -> channels, and the bit depths it allows
_COLOUR_TYPES = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (1, (1, 2, 4, 8)), 4: (2, (8, 16)), 6: (4, (8, 16))}


def wav_info(blob: bytes) -> tuple[int, int]:
    """(frames, frame rate) of a PCM WAV file whose samples are all there."""
    try:
        with wave.open(io.BytesIO(blob)) as clip:
            channels, width, rate, frames = clip.getnchannels(), clip.getsampwidth(), clip.getframerate(), \
                clip.getnframes()
            data = clip.readframes(frames)
    except (wave.Error, EOFError, struct.error) as exc:
        raise ValueError(f"not a readable WAV file ({exc})") from None
    if not RATES[0] <= rate <= RATES[1]:
        raise ValueError(f"WAV frame rate {rate} Hz, expected {RATES[0]}..{RATES[1]}")
    if not 1 <= channels <= 8 or not 1 <= width <= 4:
        raise ValueError(f"WAV of {channels} channel(s) of {width} byte(s), expected 1..8 of 1..4")
    if len(data) != frames * channels * width:
        raise ValueError(f"WAV header says {frames} frames, the file holds {len(data) // (channels * width)}")
    return frames, rate


def png_size(blob: bytes) -> tuple[int, int]:
    """(width, height) of a PNG whose chunks are intact and whose pixels inflate to what its header says."""
    if blob[:8] != PNG_SIGNATURE:
        raise ValueError("not a PNG file")
    chunks: dict[bytes, list[bytes]] = {}
    at = 8
    while at < len(blob):
        if at + 12 > len(blob):
            raise ValueError("PNG cut short")
        length, tag = struct.unpack(">I4s", blob[at:at + 8])
        body = blob[at + 8:at + 8 + length]
        if len(body) != length or blob[at + 8 + length:at + 12 + length] != struct.pack(">I", zlib.crc32(tag + body)):
            raise ValueError(f"PNG chunk {tag!r} is damaged")
        if not chunks and tag != b"IHDR":
            raise ValueError("PNG does not start with its IHDR chunk")
        chunks.setdefault(tag, []).append(body)
        at += 12 + length
        if tag == b"IEND":
            break
    if b"IEND" not in chunks or b"IDAT" not in chunks or len(chunks[b"IHDR"][0]) != 13:
        raise ValueError("PNG without its header, pixels or end")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValueError(f"PNG of {width} x {height} pixels, expected 1..{MAX_SIDE} a side")
    channels, depths = _COLOUR_TYPES.get(colour, (0, ()))
    if depth not in depths:
        raise ValueError(f"PNG colour type {colour} with {depth}-bit samples")
    expected = height * (1 + (width * channels * depth + 7) // 8)
    limit = expected if interlace == 0 else 2 * expected + 7 * height  # Adam7 passes: more rows, more filter bytes
    inflater = zlib.decompressobj()
    try:
        pixels = inflater.decompress(b"".join(chunks[b"IDAT"]), limit + 1)
    except zlib.error as exc:
        raise ValueError(f"PNG pixels do not inflate ({exc})") from None
    if not inflater.eof or len(pixels) > limit or (interlace == 0 and len(pixels) != expected):
        raise ValueError(f"PNG pixels inflate to {len(pixels)}+ bytes, its header says {expected}")
    return width, height
