"""Shared pieces of the analyses: answer tokens, metrics on logits, token labels, the model's readout.

Kept private: the public analyses take plain strings (``answers=(" Paris", " Rome")`` or
``gold=" Paris"``) and turn them into token ids and a metric here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import SteerlabError
from ..models.adapters import weight_of
from ..models.tokens import check_texts, encode

if TYPE_CHECKING:
    from ..models.model import Model


def single_token(tokenizer, answer: str, what: str = "target") -> int:
    """The id of ``answer`` when it is exactly one token; else a SteerlabError suggesting alternatives."""
    if not isinstance(answer, str) or not answer:
        raise SteerlabError(f"{what} must be a non-empty string such as ' Paris', got {answer!r}")
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return int(ids[0])
    pieces = [tokenizer.decode([i]) for i in ids]
    hints = []
    for alt in {answer.strip(), " " + answer.strip()} - {answer}:
        if alt and len(tokenizer(alt, add_special_tokens=False)["input_ids"]) == 1:
            hints.append(repr(alt))
    if pieces:
        hints.append(f"its first token {pieces[0]!r}")
    raise SteerlabError(
        f"{what}={answer!r} is {len(ids)} tokens {pieces}; it must be a single token"
        + (f" (try {' or '.join(hints)})" if hints else "")
    )


def per_text(value, n: int, what: str) -> list:
    """``value`` repeated ``n`` times, or a list of exactly ``n`` values."""
    if isinstance(value, (str, tuple)) or value is None:
        return [value] * n
    items = list(value)
    if len(items) != n:
        raise SteerlabError(f"{what} has {len(items)} entries but there are {n} texts; give one, or one per text")
    return items


@dataclass
class Metric:
    """A scalar per row computed from next-token logits: a logit difference or a gold log-probability.

    ``ids`` is ``[n, 2]`` (answer, other) for ``kind="logit_diff"`` and ``[n, 1]`` for ``"logprob"``.
    """

    kind: str
    ids: torch.Tensor
    labels: list

    def __call__(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The metric of each row of ``logits`` ``[m, vocab]``; ``rows`` maps each to its text (default 0..m-1)."""
        ids = self.ids if rows is None else self.ids[rows]
        logits = logits.float()
        if self.kind == "logit_diff":
            return logits.gather(1, ids[:, :1])[:, 0] - logits.gather(1, ids[:, 1:2])[:, 0]
        return logits.log_softmax(-1).gather(1, ids[:, :1])[:, 0]

    @property
    def name(self) -> str:
        return "logit_diff" if self.kind == "logit_diff" else "logprob"


def make_metric(tokenizer, n: int, answers=None, gold=None) -> Metric:
    """A Metric from ``answers=(a, b)`` (logit of a minus logit of b) or ``gold=a`` (log p(a)).

    Either may be one value for every text or a list with one per text (a list of exactly two strings
    counts as one pair for every text); answers must be single tokens.
    """
    if (answers is None) == (gold is None):
        raise SteerlabError("give exactly one of answers=(' Paris', ' Rome') (a logit difference) or gold=' Paris'")
    if answers is not None:
        rows = per_text(tuple(answers) if isinstance(answers, list) and len(answers) == 2
                        and all(isinstance(a, str) for a in answers) else answers, n, "answers")
        ids = []
        for row in rows:
            if not isinstance(row, (tuple, list)) or len(row) != 2:
                raise SteerlabError(f"answers must be a pair like (' Paris', ' Rome'), got {row!r}")
            ids.append([single_token(tokenizer, row[0], "answers[0]"), single_token(tokenizer, row[1], "answers[1]")])
        return Metric("logit_diff", torch.tensor(ids), [tuple(r) for r in rows])
    rows = per_text(gold, n, "gold")
    ids = [[single_token(tokenizer, g, "gold")] for g in rows]
    return Metric("logprob", torch.tensor(ids), rows)


def token_ids(model, texts, chat: bool = False) -> list[list[int]]:
    """Each text's token ids exactly as ``capture``/``logits`` tokenise it."""
    return encode(model.tokenizer, check_texts(texts), chat)


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """Readable labels of tokens (decoded one by one)."""
    return [tokenizer.decode([i]) for i in ids]


def check_same_length(model, a: list[str], b: list[str], chat: bool, what=("clean", "corrupted")):
    """Token ids of paired texts, refusing pairs of different token lengths (positions must line up)."""
    ids_a, ids_b = token_ids(model, a, chat), token_ids(model, b, chat)
    for i, (x, y) in enumerate(zip(ids_a, ids_b)):
        if len(x) != len(y):
            raise SteerlabError(
                f"pair {i}: {what[0]} {a[i]!r} has {len(x)} tokens but {what[1]} {b[i]!r} has {len(y)}; "
                "position-wise patching needs prompts of the same token length "
                f"({what[0]}: {token_labels(model.tokenizer, x)}, {what[1]}: {token_labels(model.tokenizer, y)})"
            )
    return ids_a, ids_b


def pairs_of(clean, corrupted, what=("clean", "corrupted")) -> tuple[list[str], list[str]]:
    """Two text lists of equal length (a string counts as a list of one)."""
    a, b = check_texts(clean, what[0]), check_texts(corrupted, what[1])
    if len(a) != len(b):
        raise SteerlabError(f"{what[0]} has {len(a)} texts but {what[1]} has {len(b)}; give one {what[1]} per {what[0]}")
    return a, b


def readout(model: Model, h: torch.Tensor) -> torch.Tensor:
    """The model's own final norm and unembedding applied to residual states ``[..., d]`` -> logits (float32).

    Then what the family does to its logits (the adapter's logit divisor, e.g. Granite's
    ``logits_scaling``, and soft-cap, e.g. Gemma 2's), so the last layer's readout equals the model's logits.
    """
    bound = model.bound
    norm = bound.module(model.adapter.final_norm)
    head = bound.model.get_output_embeddings()
    if head is None:  # pragma: no cover - bind refuses such models
        raise SteerlabError("the model has no output embeddings")
    like = weight_of(head)
    with torch.inference_mode():
        out = head(norm(h.to(device=like.device, dtype=like.dtype))).float()
        out = bound.logits_from_unembedded(out)
    return out.cpu()


def resolve_position(position: int, length: int, what: str = "position") -> int:
    """A prompt-relative position (negatives count from the end) as a 0-based index, checked."""
    fixed = position + length if position < 0 else position
    if not 0 <= fixed < length:
        raise SteerlabError(f"{what}={position} is out of range for a text of {length} tokens (use 0..{length - 1} "
                            f"or -{length}..-1)")
    return fixed


def parse_positions(positions, length: int) -> list[int]:
    """``"all"``, ``"last"``, an int or a list of ints -> sorted 0-based indices for a text of ``length`` tokens."""
    if positions == "all":
        return list(range(length))
    if positions == "last":
        return [length - 1]
    if isinstance(positions, int) and not isinstance(positions, bool):
        return [resolve_position(positions, length, "positions")]
    if isinstance(positions, (list, tuple, range)) and len(positions) > 0:
        return sorted({resolve_position(int(p), length, "positions") for p in positions})
    raise SteerlabError(f"positions={positions!r} is not allowed; use 'all', 'last', an int or a list of ints")
