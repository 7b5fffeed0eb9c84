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


def context_length(model) -> int | None:
    """The most positions ``model`` was made for (``max_position_embeddings`` or GPT-2's ``n_positions``)."""
    config = model.hf_model.config
    for part in (config, getattr(config, "text_config", None)):
        for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(part, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def check_context(model, ids: list[list[int]], texts: list[str] | None = None, extra: int = 0,
                  what: str = "texts", more: str = "max_new_tokens") -> None:
    """Refuse a text whose tokens (plus ``extra`` tokens to come) do not fit ``model``'s context.

    steerlab never truncates: a prompt cut silently would be steered and read as if whole. The
    error names the longest text, its length and the limit.
    """
    limit = context_length(model)
    if limit is None or not ids:
        return
    longest = max(range(len(ids)), key=lambda i: len(ids[i]))
    n = len(ids[longest])
    if n + extra <= limit:
        return
    preview = "" if texts is None else f" ({texts[longest][:40]!r}...)"
    name = getattr(model, "name", "the model")
    if n > limit:
        raise SteerlabError(f"{what}[{longest}]{preview} has {n} tokens, more than {name}'s context of {limit} "
                            "tokens; shorten it (steerlab does not truncate)")
    raise SteerlabError(f"{what}[{longest}]{preview} has {n} tokens and {more}={extra} would take it to {n + extra}, "
                        f"past {name}'s context of {limit} tokens; shorten it or lower {more}")


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
