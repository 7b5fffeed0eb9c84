"""LoFiT: localized fine-tuning of a few attention heads' outputs (after "LoFiT: Localized Fine-tuning on LLM
Representations").

Two trainings on a small task set, both on each head's output ``z_h`` (the ``attn.heads`` site, the input of
the attention output projection), every token, every weight of the model frozen:

1. **importance**: a scaling vector per head, ``z_h ← z_h ⊙ (1 + A_h)`` (``A = 0`` at the start), trained on
   the task loss plus ``l1 · Σ|A|``; heads are ranked by ``‖A_h‖`` and the top ``fraction`` kept;
2. **offsets**: a bias vector per kept head, ``z_h ← z_h + v_h`` (``v = 0`` at the start), trained on the task
   loss alone.

The result is a plain recipe, ``Add`` at ``layers.l.attn.heads`` (zero outside the kept heads), and since
``o_proj(z + v) = o_proj(z) + W_O v`` it bakes exactly into the attention output projection's bias where the
family's attention writes the residual stream directly (``bake_lofit``); Gemma 2/3 put a norm after it, so
there it stays a recipe. The task loss is the mean negative log-likelihood of each answer after its prompt.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..errors import DataError, SteerlabError
from ..interventions import Add, Steering
from ..models.grad import GradOp, teacher_forced_nll
from ..models.tokens import check_texts, encode
from ..progress import bar
from ..sites import Site

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ..models.model import Model


@dataclass
class LoFiT:
    """``heads`` kept ((layer, head), most important first); ``importance`` (every head's ``score`` = ‖A_h‖ and
    ``rank``); ``offsets`` ``{layer: [n_heads, d_head]}``; ``steering`` the recipe; ``losses`` per step of each
    phase."""

    heads: list[tuple[int, int]]
    importance: pd.DataFrame
    offsets: dict[int, torch.Tensor]
    steering: Steering
    losses: dict[str, list[float]] = field(default_factory=dict)


def _batches(n: int, batch_size: int, epochs: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        out += [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return out


def _at_layer(op, layer: int) -> GradOp:
    def edit(x: torch.Tensor, prompt_end: torch.Tensor) -> torch.Tensor:
        return op(layer, x)

    return edit


def _train(model: Model, params: dict[int, torch.Tensor], op, prompts, targets, steps: list[list[int]], lr: float,
           penalty, what: str, progress: bool | None) -> list[float]:
    """Adam on ``params`` for the listed batches; ``op(layer, x)`` edits ``attn.heads`` of ``layer``."""
    tensors = list(params.values())
    opt = torch.optim.Adam(tensors, lr=lr)
    losses = []
    edits: dict[str | Site, GradOp] = {f"layers.{layer}.attn.heads": _at_layer(op, layer) for layer in params}
    with bar(what, len(steps), progress) as advance:
        for rows in steps:
            loss = teacher_forced_nll(model, [prompts[i] for i in rows], [targets[i] for i in rows], edits).mean()
            total = loss + (penalty() if penalty is not None else 0.0)
            grads = torch.autograd.grad(total, tensors)
            for t, g in zip(tensors, grads):
                t.grad = g
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            advance()
    return losses


def task_tokens(model: Model, prompts: Sequence[str], answers: Sequence[str], chat: bool = True,
                system: str | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt ids (chat-templated when ``chat``) and answer ids (the answer text, plus EOS when the tokenizer has one)."""
    prompts, answers = check_texts(prompts, "prompts"), check_texts(answers, "answers")
    if len(prompts) != len(answers):
        raise DataError(f"{len(prompts)} prompts but {len(answers)} answers; give one answer per prompt")
    prompt_ids = encode(model.tokenizer, prompts, chat, system)
    eos = model.tokenizer.eos_token_id
    target_ids = [model.tokenizer(a, add_special_tokens=False)["input_ids"] + ([int(eos)] if eos is not None else [])
                  for a in answers]
    return prompt_ids, target_ids


def lofit(model: Model, prompts: Sequence[str], answers: Sequence[str], fraction: float = 0.05,
          n_heads: int | None = None, select_epochs: int = 2, epochs: int = 4, select_lr: float = 5e-3,
          lr: float = 5e-3, l1: float = 1e-3, batch_size: int = 8, seed: int = 0, chat: bool = True,
          heads: Sequence[tuple[int, int]] | None = None, progress: bool | None = None) -> LoFiT:
    """Select heads by learned importance (or take ``heads`` as given) and train their offsets on ``answers``
    given ``prompts`` (chat-templated when ``chat``).

    ``n_heads`` (default ``max(1, round(fraction · layers · heads))``) heads are kept. Returns a ``LoFiT`` whose
    ``steering`` applies the offsets; ``bake_lofit`` turns it into weights.
    """
    if not 0 < fraction <= 1:
        raise SteerlabError(f"fraction={fraction} must be in (0, 1]")
    if min(epochs, batch_size) < 1 or select_epochs < 0:
        raise SteerlabError("epochs and batch_size must be at least 1, select_epochs at least 0")
    prompt_ids, target_ids = task_tokens(model, prompts, answers, chat)
    n = len(prompt_ids)
    L, H, dh = model.n_layers, model.n_heads, model.d_head
    k = n_heads if n_heads is not None else max(1, round(fraction * L * H))
    if not 1 <= k <= L * H:
        raise SteerlabError(f"n_heads={k} must be between 1 and {L * H}")
    device = model.device
    losses: dict[str, list[float]] = {}
    torch.manual_seed(seed)
    if heads is None:
        if select_epochs < 1:
            raise SteerlabError("select_epochs must be at least 1 unless heads=... are given")
        scales = {layer: torch.zeros(H, dh, device=device, requires_grad=True) for layer in range(L)}

        def scale_op(layer, x):
            return x * (1 + scales[layer]).to(x.dtype)

        def l1_penalty():
            return l1 * sum(a.abs().sum() for a in scales.values())

        losses["importance"] = _train(model, scales, scale_op, prompt_ids, target_ids,
                                      _batches(n, batch_size, select_epochs, seed), select_lr, l1_penalty,
                                      "lofit: head importance", progress)
        score = torch.stack([scales[layer].detach().norm(dim=-1).cpu() for layer in range(L)])  # [L, H]
        order = score.flatten().argsort(descending=True)
        ranked = [(int(i) // H, int(i) % H) for i in order]
        importance = pd.DataFrame([{"layer": layer, "head": h, "score": float(score[layer, h]), "rank": r + 1}
                                   for r, (layer, h) in enumerate(ranked)])
        chosen = ranked[:k]
    else:
        chosen = [(int(a), int(b)) for a, b in heads]
        for layer, h in chosen:
            if not (0 <= layer < L and 0 <= h < H):
                raise SteerlabError(f"head ({layer}, {h}) is out of range: {L} layers of {H} heads")
        importance = pd.DataFrame(columns=["layer", "head", "score", "rank"])
    layers = sorted({layer for layer, _ in chosen})
    masks = {layer: torch.zeros(H, 1, device=device) for layer in layers}
    for layer, h in chosen:
        masks[layer][h] = 1.0
    offsets = {layer: torch.zeros(H, dh, device=device, requires_grad=True) for layer in layers}

    def offset_op(layer, x):
        return x + (offsets[layer] * masks[layer]).to(x.dtype)

    losses["offsets"] = _train(model, offsets, offset_op, prompt_ids, target_ids,
                               _batches(n, batch_size, epochs, seed + 1), lr, None, "lofit: offsets", progress)
    final = {layer: (offsets[layer] * masks[layer]).detach().cpu() for layer in layers}
    steering = Steering([Add(final[layer].flatten(), layers=[layer], site="attn.heads") for layer in layers])
    return LoFiT(chosen, importance, final, steering, losses)


def heads_as_attn_out(model: Model, steering: Steering) -> Steering:
    """The same recipe with each ``Add`` at ``attn.heads`` (all positions) rewritten as an ``Add`` at ``attn_out``:
    ``W_O v`` times the family's residual multiplier (exact where attention writes the residual stream directly)."""
    bound = model.bound
    items = []
    for item in steering:
        if not isinstance(item, Add) or item.site != "attn.heads" or item.norm_match or item.positions != "all":
            raise SteerlabError(f"{type(item).__name__} at {item.site} is not an addition at attn.heads on every "
                                "token; only those are rewritten")
        for site in item.targets(bound.n_layers):
            layer = site.layer
            assert layer is not None
            v = item.params(site, (bound.n_heads, bound.d_head))["delta"].float()
            w = bound.linear_weight(bound.projection(layer, "o_proj")).detach().float().cpu()  # [d, H*dh]
            items.append(Add(w @ v.cpu() * bound.residual_multiplier, layers=[layer], site="attn_out"))
    return Steering(items)


def bake_lofit(model: Model, result: LoFiT | Steering, verify: bool = True) -> PreTrainedModel:
    """The LoFiT offsets as attention output-projection biases: a plain transformers model (see ``sl.edit.bake``).

    Raises ``NotBakeableError`` for families with a norm after attention (Gemma 2/3): keep the recipe there.
    """
    from .bake import bake

    steering = result.steering if isinstance(result, LoFiT) else result
    return bake(model, heads_as_attn_out(model, steering), verify=verify)
