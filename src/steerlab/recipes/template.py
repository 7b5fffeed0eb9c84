"""The chat template's tokens after the user's instruction ("post-instruction" positions), from the tokenizer.

Arditi et al. build refusal-direction candidates at every token the template puts between the
user's instruction and the assistant's reply (e.g. ``<|im_end|> \\n <|im_start|> assistant \\n``).
They are found here without knowing the family: the template is rendered around two different
sentinel instructions, and the token ids both renderings end with are the template's own. A token
that straddles the instruction's end differs between the two and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SteerlabError
from ..models.tokens import encode, has_chat_template

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Two instructions that share no ending, so their renderings share only the template's suffix.
SENTINELS = ("Describe the weather on a quiet morning", "List three prime numbers, then stop!?")


@dataclass(frozen=True)
class PostInstruction:
    """The template's tokens after the instruction: ``ids`` and ``tokens`` (as text), and ``positions``,
    their indices counted from the end of a chat prompt (``[-k, ..., -1]``)."""

    ids: list[int]
    tokens: list[str]

    @property
    def positions(self) -> list[int]:
        return list(range(-len(self.ids), 0))


def post_instruction(tokenizer: PreTrainedTokenizerBase, system: str | None = None) -> PostInstruction:
    """The chat template's post-instruction tokens, rendered the way ``chat=True`` prompts are."""
    if not has_chat_template(tokenizer):
        raise SteerlabError("post-instruction positions need a tokenizer with a chat template; this one has none")
    first, second = encode(tokenizer, list(SENTINELS), chat=True, system=system)
    n = 0
    while n < min(len(first), len(second)) and first[-1 - n] == second[-1 - n]:
        n += 1
    if n == 0:
        raise SteerlabError("the chat template puts no token after the user's instruction, so there are no "
                            "post-instruction positions; give positions explicitly (e.g. positions=[-1])")
    ids = [int(i) for i in first[len(first) - n:]]
    return PostInstruction(ids, [str(tokenizer.decode([i])) for i in ids])


def post_instruction_positions(tokenizer: PreTrainedTokenizerBase, system: str | None = None) -> list[int]:
    """Indices (from the end of a chat prompt) of the template's post-instruction tokens, e.g. ``[-5, ..., -1]``."""
    return post_instruction(tokenizer, system).positions
