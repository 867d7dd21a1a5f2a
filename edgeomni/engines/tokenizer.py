"""Detokenizer for Moonshine's SentencePiece-style BPE vocabulary, without the `tokenizers` package.

The runtime only ever decodes ids to text; tokenizer.json's decoder is
Replace("▁" -> " ") + ByteFallback + Fuse + Strip(1 leading space), which is all done here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class Detokenizer:
    def __init__(self, tokenizer_json: Path) -> None:
        spec = json.loads(Path(tokenizer_json).read_text())
        vocab: dict[str, int] = spec["model"]["vocab"]
        self._pieces: dict[int, str] = {i: piece for piece, i in vocab.items()}
        self._special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        for token in spec.get("added_tokens", []):
            self._pieces.setdefault(token["id"], token["content"])

    def starts_word(self, token_id: int) -> bool:
        """True for tokens that begin a new word (SentencePiece marks them with a leading "▁")."""
        return self._pieces.get(token_id, "").startswith("▁")

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        for token_id in ids:
            if token_id in self._special:
                continue
            piece = self._pieces.get(token_id)
            if piece is None:
                continue
            byte = _BYTE_TOKEN.match(piece)
            if byte:
                out.append(int(byte.group(1), 16))
            else:
                out.extend(piece.replace("▁", " ").encode("utf-8"))
        text = out.decode("utf-8", errors="replace")
        return text[1:] if text.startswith(" ") else text
