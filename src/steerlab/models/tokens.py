"""Tokenisation and padding, the tokenizer's own way.

``capture``/``logits`` tokenise texts with the tokenizer's defaults (it decides about BOS). A
chat-templated prompt already holds its special tokens, so it is tokenised without adding them a
second time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError, SteerlabError


def check_texts(texts, what: str = "texts") -> list[str]:
    """A non-empty list of strings (a single string becomes a list of one)."""
    if isinstance(texts, str):
        texts = [texts]
    try:
        items = list(texts)
    except TypeError:
        raise SteerlabError(f"{what} must be a string or a list of strings, got {type(texts).__name__}") from None
    if not items:
        raise DataError(f"{what} is empty; give at least one text")
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise SteerlabError(f"{what}[{i}] must be a string, got {type(t).__name__}")
    return items


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer, text: str, system: str | None = None) -> str:
    """``text`` as a user turn in the tokenizer's chat template, ready for the assistant's reply."""
    if not has_chat_template(tokenizer):
        raise SteerlabError("chat=True needs a tokenizer with a chat template; this one has none (use chat=False)")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(tokenizer, texts: list[str], chat: bool, system: str | None = None) -> list[list[int]]:
    """Token ids of each text (chat-templated when ``chat``), unpadded."""
    if chat:
        prompts = [chat_prompt(tokenizer, t, system) for t in texts]
        ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(texts)["input_ids"]
    for i, row in enumerate(ids):
        if not row:
            raise DataError(f"text {i} ({texts[i]!r}) has no tokens")
    return ids


@dataclass
class Batch:
    """A padded batch: ``input_ids``/``attention_mask`` ``[B, T]``; ``start``/``end`` the real tokens' span."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.end - self.start

    def position_ids(self) -> torch.Tensor:
        """Positions counted from each row's first real token (0 on padding)."""
        return (self.attention_mask.long().cumsum(1) - 1).clamp_min(0)


def pad(rows: list[list[int]], pad_id: int, side: str, device) -> Batch:
    """Pad token id lists to one width on the ``"left"`` or ``"right"``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    start = torch.zeros(len(rows), dtype=torch.long)
    end = torch.zeros(len(rows), dtype=torch.long)
    for i, r in enumerate(rows):
        s = width - len(r) if side == "left" else 0
        ids[i, s : s + len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, s : s + len(r)] = 1
        start[i], end[i] = s, s + len(r)
    return Batch(ids.to(device), mask.to(device), start.to(device), end.to(device))


def pad_id(tokenizer) -> int:
    """The pad token id, falling back to EOS (common for decoder-only tokenizers)."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0
