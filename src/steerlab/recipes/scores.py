"""Logit-based behaviour scores at a prompt's last position, used to choose among candidate directions.

- ``refusal_score``: ``log p(R) - log(1 - p(R))``, ``p(R)`` the total probability of the tokens a
  refusal starts with (Arditi et al.).
- ``contrast_score``: ``log p(P) - log p(N)`` for two token sets, e.g. positive vs negative words.

``LogitScore`` bundles the token ids and whether prompts are chat-templated, so a selection can
call ``score.of(model, texts, steering)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import SteerlabError
from ..interventions import Steering
from ..models import Model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: How refusals commonly start; their first tokens make the refusal set ``R``.
REFUSAL_STARTS = ("I", "I'm", "Sorry", "As", "Unfortunately", "It is not", "No")
#: Sentiment words for ``contrast_score`` on sentiment data (with and without a leading space).
POSITIVE_WORDS = ("good", "great", "happy", "wonderful", "love", "lovely", "amazing", "excellent", "beautiful",
                  "delightful", "glad", "fantastic", "joy", "perfect", "best")
NEGATIVE_WORDS = ("bad", "terrible", "sad", "awful", "hate", "horrible", "worst", "poor", "angry", "disappointing",
                  "miserable", "ugly", "boring", "sorry", "painful")


def token_ids(tokenizer: PreTrainedTokenizerBase, words: Iterable[str], spaced: bool = True) -> list[int]:
    """The first token id of each word (and of ``" " + word`` when ``spaced``), deduplicated, in order."""
    out: list[int] = []
    for word in words:
        for text in ([word, " " + word] if spaced else [word]):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids and ids[0] not in out:
                out.append(int(ids[0]))
    if not out:
        raise SteerlabError(f"none of the words {list(words)!r} has a token in this tokenizer")
    return out


def _log_mass(logits: torch.Tensor, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(ids), log p(not ids))`` per row, computed stably from logits ``[n, vocab]``."""
    logits = logits.float()
    inside = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    inside[torch.as_tensor(ids, device=logits.device)] = True
    total = torch.logsumexp(logits, -1)
    log_in = torch.logsumexp(logits.masked_fill(~inside, float("-inf")), -1) - total
    log_out = torch.logsumexp(logits.masked_fill(inside, float("-inf")), -1) - total
    return log_in, log_out


def refusal_score(logits: torch.Tensor, refusal_ids: list[int]) -> torch.Tensor:
    """``log p(R) - log(1 - p(R))`` per row of next-token ``logits`` ``[n, vocab]``."""
    log_in, log_out = _log_mass(logits, refusal_ids)
    return log_in - log_out


def contrast_score(logits: torch.Tensor, positive_ids: list[int], negative_ids: list[int]) -> torch.Tensor:
    """``log p(P) - log p(N)`` per row of next-token ``logits`` ``[n, vocab]``."""
    return _log_mass(logits, positive_ids)[0] - _log_mass(logits, negative_ids)[0]


@dataclass
class LogitScore:
    """A next-token score: ``refusal`` (``positive_ids`` = the refusal set) or ``contrast``."""

    name: str
    positive_ids: list[int]
    negative_ids: list[int] | None = None
    chat: bool = False

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.negative_ids is None:
            return refusal_score(logits, self.positive_ids)
        return contrast_score(logits, self.positive_ids, self.negative_ids)

    def of(self, model: Model, texts: list[str], steering: Steering | Sequence[Steering | None] | None = None,
           batch_size: int = 32) -> torch.Tensor:
        """Scores of ``texts`` under ``steering`` (one recipe, or one per text)."""
        return self(model.logits(texts, steering=steering, chat=self.chat, batch_size=batch_size, progress=False))


def refusal_logit_score(tokenizer: PreTrainedTokenizerBase, starts: Iterable[str] = REFUSAL_STARTS,
                        chat: bool = True) -> LogitScore:
    """The refusal score with the first tokens of ``starts`` as ``R`` (prompts chat-templated)."""
    return LogitScore("refusal_score", token_ids(tokenizer, starts, spaced=False), None, chat)


def sentiment_logit_score(tokenizer: PreTrainedTokenizerBase, chat: bool = False) -> LogitScore:
    """Positive-word vs negative-word log-odds of the next token (texts used as given)."""
    return LogitScore("sentiment_logodds", token_ids(tokenizer, POSITIVE_WORDS), token_ids(tokenizer, NEGATIVE_WORDS),
                      chat)
