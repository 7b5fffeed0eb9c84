"""Steer2Edit (Sun et al.): turn a contrastive set into sparse rank-1 weight edits.

For each layer, the steering vector of a sub-layer is the difference of the mean outputs of its
output projection over positive and negative texts: ``v = W (m⁺ - m⁻)`` where ``m`` is the mean
input of the projection (the bias cancels), so only the inputs are captured (``attn.heads`` and
``mlp.neurons``); this holds in every family, including Gemma's post-norm layout. With ``v̂ = v/‖v‖``
and ``x̄ = ½(m⁺ + m⁻)``:

- head ``j`` (``W_j`` = its ``d_head`` columns of ``o_proj``): score ``g = cos(v̂, W_j x̄_j)``, input
  direction ``k̂ = W_jᵀ v̂ / ‖W_jᵀ v̂‖``, edit ``W_j += λ v̂ k̂ᵀ``;
- neuron ``j`` (column ``w_j`` of ``down_proj``): ``g = cos(v̂, w_j x̄_j)``, edit ``w_j += λ sign(w_j·v̂) v̂``;
- ``λ = sign(g) max(|g| - ρα, 0) / (ρ(1 - α))``: the closed-form elastic-net solution of
  ``max Σ g_i λ_i - ρ(α‖λ‖₁ + (1-α)/2 ‖λ‖²)``; most components get ``λ = 0`` (sparse).

``ρ`` is set separately for heads and neurons; ``ρ <= 0`` (the authors' -1) leaves that kind alone.
Each text's activations are averaged over all its tokens (the authors average over the response
span of each sample; pass texts that are the part you want, or ``positions="last"``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..errors import SteerlabError
from ..models.adapters import Projection
from ..sites import normalize_layers
from .bake import attach_tokenizer

if TYPE_CHECKING:
    import pandas as pd

    from ..models.model import Model


@dataclass
class Steer2EditResult:
    """The edited model (a transformers model; ``save_pretrained`` also writes the tokenizer), one row
    per edited component in ``edits`` (a DataFrame: layer, component ``head``/``neuron``, index, score
    ``g``, ``lam`` the signed magnitude, ``delta_norm`` = ‖ΔW‖_F), the per-layer steering vectors
    (``{"attn": {layer: v}, "mlp": {layer: v}}``) and the settings used."""

    model: Any
    edits: pd.DataFrame
    vectors: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per layer: how many heads and neurons were edited and the total ‖ΔW‖."""
        if len(self.edits) == 0:
            return "no component passed the threshold (raise the scores or lower rho*alpha)"
        lines = []
        for layer, rows in self.edits.groupby("layer"):
            heads = rows[rows.component == "head"]
            neurons = rows[rows.component == "neuron"]
            lines.append(f"layer {layer}: {len(heads)} heads {sorted(heads['index'].tolist())}, "
                         f"{len(neurons)} neurons, sum |lambda| {rows['delta_norm'].sum():.3f}")
        return "\n".join(lines)


def elastic_net(g: torch.Tensor, rho: float | None, alpha: float) -> torch.Tensor:
    """``λ = sign(g) max(|g| - ρα, 0) / (ρ(1-α))``; zeros when ``ρ <= 0`` (that kind switched off)."""
    if rho is None or rho <= 0:
        return torch.zeros_like(g)
    return torch.sign(g) * torch.clamp(g.abs() - rho * alpha, min=0.0) / (rho * (1.0 - alpha))


def _means(model: Model, texts: list[str], layers: list[int], positions: str,
           batch_size: int) -> dict[str, torch.Tensor]:
    acts = model.capture(texts, sites=["attn.heads", "mlp.neurons"], layers=layers, positions=positions,
                         batch_size=batch_size, progress=False)
    return {name: acts.tensor(name).double().flatten(1).mean(0) for name in acts.sites}


def steer2edit(model: Model, pairs: Any, rho_attn: float | None = 0.18, rho_mlp: float | None = 0.55,
               alpha: float = 0.8, layers: Any = None, positions: str = "mean", batch_size: int = 8) -> Steer2EditResult:
    """Steer2Edit rank-1 edits of every attention head and MLP neuron of ``layers`` (default all).

    ``pairs`` is a ``ContrastiveSet`` (positive = the behaviour wanted). Defaults are the authors'
    best setting for Llama-2-7B safety (ρ_attn 0.18, ρ_mlp 0.55, α 0.8); ``rho_* <= 0`` disables a
    kind. Returns a ``Steer2EditResult``; the original model is not changed.
    """
    if not 0 <= alpha < 1:
        raise SteerlabError(f"alpha={alpha} is not allowed; the elastic-net closed form needs 0 <= alpha < 1")
    if (rho_attn is None or rho_attn <= 0) and (rho_mlp is None or rho_mlp <= 0):
        raise SteerlabError("rho_attn and rho_mlp are both <= 0, which edits nothing; give one a positive value")
    if not hasattr(pairs, "positive") or not hasattr(pairs, "negative"):
        raise SteerlabError(f"pairs must be a ContrastiveSet (positive=..., negative=...), got {type(pairs).__name__}")
    if positions not in ("mean", "last"):
        raise SteerlabError(f"positions={positions!r} is not allowed; use 'mean' or 'last'")
    bound = model.bound
    layer_list = normalize_layers(layers, bound.n_layers)
    pos = _means(model, pairs.positive, layer_list, positions, batch_size)
    neg = _means(model, pairs.negative, layer_list, positions, batch_size)

    hf = copy.deepcopy(model.hf_model)
    rows: list[dict[str, Any]] = []
    vectors: dict[str, dict[int, torch.Tensor]] = {"attn": {}, "mlp": {}}
    kinds: tuple[tuple[str, str, Projection, float | None], ...] = (
        ("attn", "attn.heads", "o_proj", rho_attn), ("mlp", "mlp.neurons", "down_proj", rho_mlp))
    for layer in layer_list:
        for kind, site, which, rho in kinds:
            name = f"layers.{layer}.{site}"
            module = hf.get_submodule(bound.projection_path(layer, which))
            W = bound.linear_weight(module).detach().double()  # [d_model, d_in]
            v = W @ (pos[name] - neg[name])
            vectors[kind][layer] = v.float()
            if rho is None or rho <= 0:
                continue
            if float(v.norm()) == 0.0:
                continue
            vhat = v / v.norm()
            xbar = 0.5 * (pos[name] + neg[name])
            if kind == "attn":
                delta, found = _head_edits(W, vhat, xbar, bound.n_heads, rho, alpha)
            else:
                delta, found = _neuron_edits(W, vhat, xbar, rho, alpha)
            if found:
                bound.adapter.set_linear_weight(module, W + delta)
                rows.extend({"layer": layer, **row} for row in found)
    attach_tokenizer(hf, model.tokenizer)
    settings = {"rho_attn": rho_attn, "rho_mlp": rho_mlp, "alpha": alpha, "layers": layer_list,
                "positions": positions, "pairs": pairs.describe() if hasattr(pairs, "describe") else None}
    hf.config.steerlab = {"steer2edit": settings, "edited": len(rows)}
    import pandas as pd

    edits = pd.DataFrame(rows, columns=["layer", "component", "index", "score", "lam", "delta_norm"])
    return Steer2EditResult(model=hf, edits=edits, vectors=vectors, settings=settings)


def _head_edits(W: torch.Tensor, vhat: torch.Tensor, xbar: torch.Tensor, n_heads: int, rho: float,
                alpha: float) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """ΔW for the heads whose λ is non-zero, and a report row for each."""
    d_head = W.shape[1] // n_heads
    blocks = W.view(W.shape[0], n_heads, d_head)  # [d, heads, d_head]
    contrib = torch.einsum("dhk,hk->hd", blocks, xbar.view(n_heads, d_head))  # W_j x̄_j
    g = torch.nn.functional.cosine_similarity(contrib, vhat[None], dim=-1)
    lam = elastic_net(g, rho, alpha)
    delta = torch.zeros_like(W)
    rows = []
    for j in torch.nonzero(lam).flatten().tolist():
        k = blocks[:, j].T @ vhat
        if float(k.norm()) == 0.0:
            continue
        khat = k / k.norm()
        delta[:, j * d_head:(j + 1) * d_head] = float(lam[j]) * torch.outer(vhat, khat)
        rows.append({"component": "head", "index": j, "score": float(g[j]), "lam": float(lam[j]),
                     "delta_norm": abs(float(lam[j]))})
    return delta, rows


def _neuron_edits(W: torch.Tensor, vhat: torch.Tensor, xbar: torch.Tensor, rho: float,
                  alpha: float) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """ΔW for the neurons whose λ is non-zero, and a report row for each."""
    g = torch.nn.functional.cosine_similarity(W * xbar[None], vhat[:, None], dim=0)
    lam = elastic_net(g, rho, alpha)
    k = torch.sign(W.T @ vhat)
    lam = torch.where(k != 0, lam * k, torch.zeros_like(lam))
    delta = torch.outer(vhat, lam)
    rows = [{"component": "neuron", "index": j, "score": float(g[j]), "lam": float(lam[j]),
             "delta_norm": abs(float(lam[j]))} for j in torch.nonzero(lam).flatten().tolist()]
    return delta, rows
