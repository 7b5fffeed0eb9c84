"""Differentiable forward passes through the one steered path, for audits and fine-tuning that need gradients.

``teacher_forced_nll`` runs prompts plus fixed continuations in one pass with gradients on, and
differentiable site ops (plain ``x -> x + delta`` closures over tensors that require grad) attached
through ``steered()``'s op list, so the hooks are the same ones every other call uses. The model's own
weights are never asked for gradients (``torch.autograd.grad`` names the inputs), so nothing of the
model changes or accumulates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from ..errors import SteerlabError
from ..sites import Site, parse_site
from .forward import Layout, steered
from .tokens import pad, pad_id

if TYPE_CHECKING:
    from .model import Model

#: a differentiable edit of a site's activation ``[B, T, ...]`` -> same shape; ``prompt_end`` ``[B]`` (padded
#: index one past each row's prompt) lets an edit pick its tokens
GradOp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def teacher_forced_nll(model: Model, prompt_ids: Sequence[Sequence[int]], target_ids: Sequence[Sequence[int]],
                       edits: Mapping[str | Site, GradOp] | None = None, reduce: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of each row's ``target_ids`` after its ``prompt_ids``, with ``edits`` applied.

    Rows are right-padded (a row's tokens sit at the same index as if alone). ``edits`` maps a site
    (``"layers.12.resid_post"``) to a ``GradOp`` run on that site's activation, after no recipe; the
    result keeps the autograd graph. Returns ``[B]``: the mean (``reduce="mean"``) or sum over each
    row's target tokens.
    """
    if len(prompt_ids) != len(target_ids) or not prompt_ids:
        raise SteerlabError("prompt_ids and target_ids must be non-empty with one entry per row")
    if any(len(t) == 0 for t in target_ids) or any(len(p) == 0 for p in prompt_ids):
        raise SteerlabError("every row needs at least one prompt token and one target token")
    if reduce not in ("mean", "sum"):
        raise SteerlabError(f"reduce={reduce!r} is not allowed; use 'mean' or 'sum'")
    rows = [list(p) + list(t) for p, t in zip(prompt_ids, target_ids)]
    batch = pad(rows, pad_id(model.tokenizer), "right", model.device)
    prompt_end = torch.tensor([len(p) for p in prompt_ids], device=model.device)
    layout = Layout(batch.start, prompt_end)
    ops = {}
    for name, fn in (edits or {}).items():
        site = parse_site(name, model.n_layers) if isinstance(name, str) else name
        ops[site] = [_as_site_op(fn, prompt_end)]
    with torch.enable_grad(), steered(model, None, layout, "single", reads=ops):
        logits = model.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                position_ids=batch.position_ids(), use_cache=False).logits
    # only the positions that predict a target token: [N, vocab], not the whole [B, T, vocab]
    lengths = torch.tensor([len(t) for t in target_ids], device=model.device)
    owner = torch.repeat_interleave(torch.arange(len(target_ids), device=model.device), lengths)
    cols = torch.cat([torch.arange(len(p) - 1, len(p) - 1 + len(t), device=model.device)
                      for p, t in zip(prompt_ids, target_ids)])
    wanted = torch.cat([torch.as_tensor(list(t), device=model.device) for t in target_ids])
    token_lp = torch.log_softmax(logits[owner, cols].float(), -1).gather(-1, wanted[:, None])[:, 0]
    total = -torch.zeros(len(target_ids), device=model.device, dtype=token_lp.dtype).index_add(0, owner, token_lp)
    return total / lengths if reduce == "mean" else total


def _as_site_op(fn: GradOp, prompt_end: torch.Tensor):
    def op(x, ctx):
        return fn(x, prompt_end)

    return op
