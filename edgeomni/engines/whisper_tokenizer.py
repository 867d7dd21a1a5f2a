"""Detokenizer for Whisper's GPT-2 byte-level BPE vocabulary, in pure Python (no `tokenizers`).

Byte-level BPE maps every byte to a printable character (GPT-2's bytes_to_unicode table) before merging,
so a token's text is a string of such characters; decoding maps them back to bytes and decodes UTF-8.
The vocabulary is CTranslate2's vocabulary.txt: one token per line, line number = token id.
"""

from __future__ import annotations

from pathlib import Path

SPACE_MARK = "\u0120"  # "Ġ": the byte-level stand-in for a space, so a token starting with it starts a word


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> character table: printable bytes map to themselves, the rest to 256+."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


class ByteLevelDetokenizer:
    """`decode(ids)` and `starts_word(id)`, the interface the caption heads use (see engines/tokenizer.py)."""

    def __init__(self, vocabulary_txt: Path, first_special: int) -> None:
        path = Path(vocabulary_txt)
        self._pieces = path.read_text(encoding="utf-8").split("\n")
        if self._pieces and self._pieces[-1] == "":
            self._pieces.pop()
        if len(self._pieces) <= first_special:
            raise ValueError(f"{path}: {len(self._pieces)} tokens, expected more than {first_special} "
                             f"(special tokens start at {first_special})")
        self._first_special = first_special
        self._byte_of = {char: byte for byte, char in bytes_to_unicode().items()}

    def __len__(self) -> int:
        return len(self._pieces)

    def piece(self, token_id: int) -> str:
        return self._pieces[token_id]

    def starts_word(self, token_id: int) -> bool:
        return 0 <= token_id < self._first_special and self._pieces[token_id].startswith(SPACE_MARK)

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        for token_id in ids:
            if not 0 <= token_id < self._first_special:
                continue  # special tokens (end of text, timestamps, ...) are not text
            out.extend(self._byte_of[char] for char in self._pieces[token_id] if char in self._byte_of)
        text = out.decode("utf-8", errors="replace")
        return text[1:] if text.startswith(" ") else text
