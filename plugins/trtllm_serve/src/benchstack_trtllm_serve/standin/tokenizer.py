"""Deterministic tokenization for the stand-in: counts prompt tokens and makes output tokens.

Default (:class:`SimpleTokenizer`): a token is a run of word characters or a single other
non-space character (regex ``\\w+|[^\\w\\s]``), so ``"Hello, world!"`` is 4 tokens. Token ids are
``1000 + crc32(token) % 30000``. A chat conversation is rendered as one line per message,
``<|role|> content``, plus a last line ``<|assistant|>`` when ``add_generation_prompt`` is true,
and tokenized by the same rule: each role marker is 5 tokens (``<``, ``|``, role, ``|``, ``>``),
so ``[{"role": "user", "content": "Hello, world!"}]`` is 5 + 4 + 5 = 14 prompt tokens.

With a tokenizer directory holding ``tokenizer.json`` and the ``tokenizers`` package importable,
:class:`HFTokenizer` counts with that tokenizer instead (the chat rendering stays the simple one).
Generated text is a fixed word cycle chosen by the request's prompt ids, so identical requests get
identical answers.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Iterable, Optional

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_WORDS = ("the", "model", "serves", "tokens", "quickly", "and", "every", "request", "gets",
          "a", "deterministic", "answer", "from", "this", "stand-in", "engine")
VOCAB_BASE = 1000
VOCAB_SPAN = 30000


def _token_id(piece: str) -> int:
    return VOCAB_BASE + zlib.crc32(piece.encode("utf-8")) % VOCAB_SPAN


def render_chat(messages: Iterable[dict], add_generation_prompt: bool = True) -> str:
    """Render chat messages with the stand-in's template (see module docstring)."""
    lines = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        role = message.get("role", "user") if isinstance(message, dict) else "user"
        lines.append(f"<|{role}|> {content or ''}")
    if add_generation_prompt:
        lines.append("<|assistant|>")
    return "\n".join(lines)


class SimpleTokenizer:
    """Regex word/punctuation tokenizer; see the module docstring for the exact rules."""

    name = "simple"

    def encode(self, text: str) -> list[int]:
        return [_token_id(p) for p in _TOKEN_RE.findall(text)]

    def decode_one(self, token_id: int) -> str:
        return " " + _WORDS[token_id % len(_WORDS)]


class HFTokenizer(SimpleTokenizer):
    """Counts with a Hugging Face ``tokenizer.json`` through the ``tokenizers`` package."""

    name = "tokenizers"

    def __init__(self, path: Path):
        from tokenizers import Tokenizer  # optional dependency

        self._tok = Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=True).ids)

    def decode_one(self, token_id: int) -> str:
        try:
            text = self._tok.decode([token_id])
        except Exception:  # noqa: BLE001 - an id outside the vocabulary
            text = ""
        return text or super().decode_one(token_id)


def load_tokenizer(directory: Optional[str]) -> SimpleTokenizer:
    """A tokenizer for ``directory`` (``--tokenizer`` or the model dir); simple if unusable."""
    if directory:
        candidate = Path(directory) / "tokenizer.json"
        if candidate.is_file():
            try:
                return HFTokenizer(candidate)
            except Exception:  # noqa: BLE001 - tokenizers missing or file unreadable
                pass
    return SimpleTokenizer()


def output_token_ids(seed_ids: list[int], count: int, first: Optional[int] = None) -> list[int]:
    """``count`` deterministic output ids for a prompt; ``first`` fixes the first one."""
    seed = zlib.crc32(repr(seed_ids[:64]).encode()) if seed_ids else 7
    ids = [VOCAB_BASE + (seed + 7919 * i) % VOCAB_SPAN for i in range(count)]
    if first is not None and ids:
        ids[0] = int(first)
    return ids
