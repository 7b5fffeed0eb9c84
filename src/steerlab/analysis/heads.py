"""Attention heads: direct attribution, ablation, and interchange.

- ``head_attribution``: each head's own write to the residual stream at one position,
  ``c_h = W_O[:, h] z_h``, scored along a direction (``c_h·w/‖w‖``, RefusalCliff's
  ``find_refusal_head``) or onto a logit difference through the final norm with its scale frozen
  at the actual final state (direct logit attribution).
- ``head_ablation``: knock heads out (zero, or their mean output) and measure a metric; with
  ``renorm`` the whole attention output keeps its norm (RefusalCliff's ablation).
- ``head_interchange``: write one head's output from a contrast run: the audit that ablation can
  miss (a head whose zero output changes nothing may still carry the difference between runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import nn

from ..errors import SteerlabError
from ..interventions import Add, Intervention, Patch, Scale, Steering
from ..models.adapters import Norm, bias_of
from ..models.tokens import check_texts
from ..sites import normalize_layers
from ._common import check_same_length, make_metric, pairs_of, resolve_position, token_ids

if TYPE_CHECKING:
    from ..models.model import Model


def frozen_norm(module: nn.Module, x: torch.Tensor, parts: torch.Tensor, norm: Norm) -> torch.Tensor:
    """A norm module applied to additive ``parts`` ``[n, k, d]`` of its input with the scale frozen at ``x`` ``[n, d]``.

    Linear in the parts: for the whole input (``parts = x``) it equals ``module(x)`` minus any bias.
    ``norm`` says how the family's norms compute (``model.adapter.norm``): RMSNorm (Gemma's ``1 + weight``
    included) or LayerNorm (which also centres each part).
    """
    x = x.float()
    parts = parts.float()
    eps = norm.epsilon(module)
    if norm.kind == "layer":
        scale = (x.var(-1, unbiased=False, keepdim=True) + eps).rsqrt()
        parts = parts - parts.mean(-1, keepdim=True)
    else:
        scale = (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
    out = parts * scale[:, None, :]
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor):
        out = out * (norm.weight_offset + weight.detach().float().cpu())
    return out


def o_proj_weight(model: Model, layer: int) -> torch.Tensor:
    """``W_O`` of ``layer`` as ``[d_model, n_heads * d_head]`` (in the layout the adapter declares)."""
    return model.bound.linear_weight(model.bound.projection(layer, "o_proj")).detach().float().cpu()


def head_writes(model: Model, z: torch.Tensor, layer: int) -> torch.Tensor:
    """Each head's own write to the residual stream, ``[n, n_heads, d_model]``, from its output ``z`` ``[n, H, d_head]``.

    In families with a norm after attention (Gemma 2/3) the norm is applied with its scale frozen
    at the whole attention output, so the writes sum to what the residual stream receives (less the
    projection's bias); a family's residual multiplier (Granite) is applied too.
    """
    bound = model.bound
    w = o_proj_weight(model, layer).view(model.d_model, model.n_heads, model.d_head)
    writes = torch.einsum("nhk,dhk->nhd", z.float(), w)
    if model.adapter.post_norm:
        bias = bias_of(bound.projection(layer, "o_proj"))
        total = writes.sum(1) + (0 if bias is None else bias.detach().float().cpu())
        writes = frozen_norm(bound.block_module(layer, model.adapter.attn_out), total, writes, model.adapter.norm)
    return writes * bound.residual_multiplier


def _direction_at(direction, layer: int, d: int) -> torch.Tensor:
    if hasattr(direction, "weights") and hasattr(direction, "at"):  # a Probe
        w = direction.at(direction.layer)[0]
    elif hasattr(direction, "layers") and not isinstance(direction, torch.Tensor):  # a Direction
        w = direction[layer] if layer in direction.layers or len(direction.layers) != 1 else direction[direction.layers[0]]
    else:
        w = torch.as_tensor(direction, dtype=torch.float32)
    w = w.float().flatten()
    if w.numel() != d or float(w.norm()) == 0:
        raise SteerlabError(f"direction must be a non-zero vector of width {d}, got shape {tuple(w.shape)}")
    return w / w.norm()


def head_attribution(model, texts, direction=None, answers=None, layers=None, position: int = -1, chat: bool = False,
                     batch_size: int = 16, progress: bool | None = None) -> pd.DataFrame:
    """Score each head's direct write at ``position`` along ``direction``, or onto ``logit(a) − logit(b)``.

    ``direction``: a tensor ``[d]``, a ``Direction`` (its vector at each head's layer; a one-layer
    direction is used everywhere) or a ``Probe``. ``answers=(a, b)``: direct logit attribution
    (the final norm's scale frozen at the real final state; a logit divisor such as Granite's
    ``logits_scaling`` applied, soft-capping ignored). Returns one row
    per (layer, head): mean ``score`` over texts, its ``std``, and ``rank`` (1 = largest score).
    """
    texts = check_texts(texts)
    if (direction is None) == (answers is None):
        raise SteerlabError("give exactly one of direction=... (a vector, Direction or Probe) or answers=(' Paris', ' Rome')")
    layer_list = normalize_layers(layers, model.n_layers)
    last = model.n_layers - 1
    sites = [f"layers.{l}.attn.heads" for l in layer_list] + ([f"layers.{last}.resid_post"] if answers else [])
    acts = model.capture(texts, sites=sites, positions="all", chat=chat, batch_size=batch_size, progress=progress)
    ids = token_ids(model, texts, chat)
    at = [resolve_position(position, len(row), "position") for row in ids]

    def pick(site):
        return torch.stack([acts[site][i][p] for i, p in enumerate(at)])

    if answers is not None:
        metric = make_metric(model.tokenizer, len(texts), answers=answers)
        unembed = model.hf_model.get_output_embeddings().weight.detach().float().cpu()
        u = unembed[metric.ids[:, 0]] - unembed[metric.ids[:, 1]]  # [n, d]
        final_norm = model.bound.module(model.adapter.final_norm)
        x_final = pick(f"layers.{last}.resid_post")
    rows = []
    for layer in layer_list:
        writes = head_writes(model, pick(f"layers.{layer}.attn.heads"), layer)  # [n, H, d]
        if answers is not None:
            scores = (frozen_norm(final_norm, x_final, writes, model.adapter.norm) * u[:, None, :]).sum(-1)
            scores = scores / model.bound.logits_divisor
        else:
            scores = writes @ _direction_at(direction, layer, model.d_model)
        for h in range(model.n_heads):
            col = scores[:, h]
            rows.append({"layer": layer, "head": h, "score": float(col.mean()),
                         "std": float(col.std(unbiased=False)), "texts": len(texts)})
    table = pd.DataFrame(rows)
    table["rank"] = table["score"].rank(ascending=False, method="first").astype(int)
    return table.sort_values("rank").reset_index(drop=True)


def _head_list(model, heads, layers) -> list[tuple[int, int]]:
    if heads == "each" or heads is None:
        return [(l, h) for l in normalize_layers(layers, model.n_layers) for h in range(model.n_heads)]
    out = []
    for item in heads:
        try:
            l, h = (int(v) for v in item)
        except (TypeError, ValueError):
            raise SteerlabError(f"heads must be 'each' or a list of (layer, head) pairs, got {item!r}") from None
        l = normalize_layers([l], model.n_layers)[0]
        if not 0 <= h < model.n_heads:
            raise SteerlabError(f"head {h} is out of range; this model has heads 0..{model.n_heads - 1}")
        out.append((l, h))
    if not out:
        raise SteerlabError("heads is empty; give at least one (layer, head) pair")
    return out


def _label(group) -> str:
    return "+".join(f"L{l}H{h}" for l, h in group)


def _ablation_recipe(model, group, mode: str, renorm: bool, means) -> Steering:
    items: list[Intervention] = []
    by_layer: dict[int, list[int]] = {}
    for l, h in group:
        by_layer.setdefault(l, []).append(h)
    for l, hs in sorted(by_layer.items()):
        items.append(Scale(0.0, layers=[l], site="attn.heads", index=sorted(set(hs)), renorm=renorm))
        if mode == "mean":
            vec = torch.zeros(model.n_heads, model.d_head)
            for h in hs:
                vec[h] = means[l][h]
            items.append(Add(vec.flatten(), layers=[l], site="attn.heads"))
    return Steering(items)


def head_ablation(model, texts, heads="each", answers=None, gold=None, mode: str = "zero", renorm: bool = False,
                  together: bool = False, layers=None, mean_texts=None, chat: bool = False, batch_size: int = 32,
                  progress: bool | None = None) -> pd.DataFrame:
    """Ablate heads (each alone, or all listed ``together``) at every position and measure a metric.

    ``mode``: ``"zero"`` or ``"mean"`` (the head's mean output over every token of ``mean_texts``,
    default ``texts``). ``renorm`` (zero mode) rescales the whole attention output to its original
    norm. Returns one row per head (or one for the group): ``heads`` label, mean ``metric`` before
    and after, ``effect`` (after − before, mean over texts) and its ``std``.
    """
    texts = check_texts(texts)
    if mode not in ("zero", "mean"):
        raise SteerlabError(f"mode={mode!r} is not allowed; use 'zero' or 'mean'")
    if renorm and mode != "zero":
        raise SteerlabError("renorm=True goes with mode='zero' (RefusalCliff's ablation); use one or the other")
    metric = make_metric(model.tokenizer, len(texts), answers, gold)
    head_list = _head_list(model, heads, layers)
    groups = [head_list] if together else [[hh] for hh in head_list]
    means = _head_means(model, check_texts(mean_texts) if mean_texts is not None else texts,
                        sorted({l for l, _ in head_list}), chat) if mode == "mean" else None
    recipes = [_ablation_recipe(model, g, mode, renorm, means) for g in groups]
    n = len(texts)
    base = metric(model.logits(texts, chat=chat, batch_size=batch_size, progress=False))
    job_texts = [t for _ in groups for t in texts]
    job_recipes = [r for r in recipes for _ in texts]
    after = metric(model.logits(job_texts, steering=job_recipes, chat=chat, batch_size=batch_size, progress=progress),
                   torch.arange(n).repeat(len(groups))).view(len(groups), n)
    rows = []
    for g, values in zip(groups, after):
        effect = values - base
        rows.append({"heads": _label(g), "layer": g[0][0] if len(g) == 1 else -1, "head": g[0][1] if len(g) == 1 else -1,
                     "metric_before": float(base.mean()), "metric_after": float(values.mean()),
                     "effect": float(effect.mean()), "effect_std": float(effect.std(unbiased=False)), "texts": n})
    return pd.DataFrame(rows)


def _head_means(model, texts, layers, chat) -> dict[int, torch.Tensor]:
    acts = model.capture(texts, sites="attn.heads", layers=layers, positions="all", chat=chat, progress=False)
    return {l: torch.cat(acts[f"layers.{l}.attn.heads"]).mean(0) for l in layers}


def head_interchange(model, base, source, answers=None, gold=None, heads="each", layers=None, positions="all",
                     chat: bool = False, batch_size: int = 32, progress: bool | None = None) -> pd.DataFrame:
    """Write one head's output from the ``source`` run into the ``base`` run (one row per pair and head).

    ``positions``: ``"all"`` (needs texts of the same token length) or ``"last"``. Returns per head the
    mean ``effect`` (patched − base metric) and ``normalized`` ``(patched − base) / (source − base)``.
    """
    base, source = pairs_of(base, source, ("base", "source"))
    if positions not in ("all", "last"):
        raise SteerlabError(f"positions={positions!r} is not allowed here; use 'all' or 'last'")
    n = len(base)
    metric = make_metric(model.tokenizer, n, answers, gold)
    head_list = _head_list(model, heads, layers)
    layer_list = sorted({l for l, _ in head_list})
    ids_b, ids_s = token_ids(model, base, chat), token_ids(model, source, chat)
    if positions == "all":
        check_same_length(model, base, source, chat, ("base", "source"))
    acts_b = model.capture(base, sites="attn.heads", layers=layer_list, positions="all", chat=chat, progress=False)
    acts_s = model.capture(source, sites="attn.heads", layers=layer_list, positions="all", chat=chat, progress=False)
    logits0 = model.logits(base + source, chat=chat, batch_size=batch_size, progress=False)
    rows_idx = torch.arange(n)
    m_base, m_source = metric(logits0[:n], rows_idx), metric(logits0[n:], rows_idx)
    texts, recipes, jobs = [], [], []
    for i in range(n):
        pb = list(range(len(ids_b[i]))) if positions == "all" else [len(ids_b[i]) - 1]
        ps = list(range(len(ids_s[i]))) if positions == "all" else [len(ids_s[i]) - 1]
        for l, h in head_list:
            value = acts_b[f"layers.{l}.attn.heads"][i][pb].clone()
            value[:, h] = acts_s[f"layers.{l}.attn.heads"][i][ps][:, h]
            texts.append(base[i])
            recipes.append(Patch(value.flatten(1), layers=[l], site="attn.heads", positions=pb))
            jobs.append((i, l, h))
    values = metric(model.logits(texts, steering=recipes, chat=chat, batch_size=batch_size, progress=progress),
                    torch.tensor([j[0] for j in jobs]))
    frame = pd.DataFrame([{"pair": i, "layer": l, "head": h, "effect": float(v - m_base[i]),
                           "normalized": float((v - m_base[i]) / (m_source[i] - m_base[i]))
                           if abs(float(m_source[i] - m_base[i])) > 1e-9 else float("nan")}
                          for (i, l, h), v in zip(jobs, values)])
    out = frame.groupby(["layer", "head"], sort=True).agg(effect=("effect", "mean"), normalized=("normalized", "mean"),
                                                          pairs=("pair", "nunique")).reset_index()
    out.insert(0, "heads", [f"L{l}H{h}" for l, h in zip(out["layer"], out["head"])])
    return out
