"""Teacher-forced steered forward passes: a prompt, then a fixed continuation, scored token by token.

The prompt runs first (the prefill, where conditional recipes read their condition), then the
continuation runs on the KV cache as if the model had generated it, so every recipe touches the
same tokens it would touch while generating (``positions="last"``/``"generated"`` included).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..errors import SteerlabError
from ..models.forward import Layout, recipes_for, steered
from ..models.tokens import check_context, pad_id


def continuation_logprobs(model, prompt_ids: list[list[int]], continuation_ids: list[list[int]], steering=None,
                          batch_size: int = 4) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(row, logprobs)`` with ``logprobs`` ``[len(continuation_ids[row]), vocab]``: the steered
    model's log-distribution over each continuation token, given the prompt and the tokens before it.

    ``steering``: None, one recipe, or one per row. Rows are batched ``batch_size`` at a time
    (prompts left-padded, continuations right-padded).
    """
    n = len(prompt_ids)
    if len(continuation_ids) != n:
        raise SteerlabError("prompt_ids and continuation_ids must have one entry per row")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SteerlabError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_context(model, [p + c for p, c in zip(prompt_ids, continuation_ids)], what="prompt and continuation")
    recipes = recipes_for(model, steering, n, [len(p) for p in prompt_ids])
    pad = pad_id(model.tokenizer)
    for begin in range(0, n, batch_size):
        rows = list(range(begin, min(begin + batch_size, n)))
        width_p = max(len(prompt_ids[r]) for r in rows)
        width_c = max(len(continuation_ids[r]) for r in rows)
        ids = torch.full((len(rows), width_p + width_c), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        start = torch.zeros(len(rows), dtype=torch.long)
        for i, r in enumerate(rows):
            p, c = prompt_ids[r], continuation_ids[r]
            s = width_p - len(p)
            ids[i, s:width_p] = torch.tensor(p)
            ids[i, width_p:width_p + len(c)] = torch.tensor(c, dtype=torch.long)
            mask[i, s:width_p + len(c)] = 1
            start[i] = s
        ids, mask, start = ids.to(model.device), mask.to(model.device), start.to(model.device)
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        end = torch.full_like(start, width_p)
        layout = Layout(start, end, generating=True)
        with torch.inference_mode(), steered(model, [recipes[r] for r in rows], layout, "cached"):
            first = model.hf_model(input_ids=ids[:, :width_p], attention_mask=mask[:, :width_p],
                                   position_ids=positions[:, :width_p], use_cache=True, logits_to_keep=1)
            rest = model.hf_model(input_ids=ids[:, width_p:], attention_mask=mask,
                                  position_ids=positions[:, width_p:], past_key_values=first.past_key_values,
                                  use_cache=True)
        logits = torch.cat([first.logits[:, -1:], rest.logits[:, :-1]], 1).float()
        logprobs = torch.log_softmax(logits, -1).cpu()
        for i, r in enumerate(rows):
            yield r, logprobs[i, :len(continuation_ids[r])]
