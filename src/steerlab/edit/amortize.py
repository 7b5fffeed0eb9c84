"""Amortized steering (CASAL-style): train one layer's MLP down projection so the *unsteered* model's
output at that layer matches the steered model's, then ship it as a plain checkpoint with no hooks.

Only the down projection of ``layer`` changes (a low-rank update of its weight and a bias), so the
residual stream before it is the unsteered model's, and the block output is
``resid_post = resid_mid + W n + b`` with ``n`` the MLP's hidden activations (site ``mlp.neurons``).
Matching the steered ``resid_post`` is then a linear regression of the residual difference
``R = h_steered - h_plain`` on ``[n, 1]`` over every token of the training texts: ridge least squares,
truncated to ``rank`` by reduced-rank regression (the top right singular vectors of the fitted values).
This works for any recipe acting at or before ``layer`` (Rotate, norm-matched Add, Conditional,
Weighted: those ``bake`` refuses), approximately: how well is measured by ``fit["relative_error"]``
on the training tokens and, for behaviour, on held-out prompts.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import io
from ..errors import DataError, SteerlabError
from ..interventions import Conditional, Intervention, Steering
from ..interventions.weighted import Weighted
from ..sites import Site
from . import writers
from .bake import as_steering, attach_tokenizer, source_fingerprint

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ..models.model import Model


@dataclass
class Amortized:
    """A checkpoint that behaves steered with no hooks: ``model`` (transformers; its ``save_pretrained``
    also writes the tokenizer), the ``layer`` and ``rank`` trained, and ``fit`` (training-token error)."""

    model: PreTrainedModel
    layer: int
    rank: int | None
    fit: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the checkpoint (weights, config, tokenizer) to ``path``; an existing ``path`` is refused
        unless ``overwrite=True``, and even then only an earlier steerlab checkpoint is replaced."""
        return io.replace_folder(path, lambda tmp: self.model.save_pretrained(str(tmp)), ours=is_steerlab_checkpoint,
                                 overwrite=overwrite, what="amortized checkpoint")


def is_steerlab_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint steerlab wrote (its config.json records a ``steerlab`` section)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return path.is_dir() and isinstance(config, dict) and isinstance(config.get("steerlab"), dict)


def _sites_of(item: Intervention, n_layers: int) -> list[Site]:
    sites = list(item.targets(n_layers))
    if isinstance(item, Conditional):
        sites.append(item.condition_site(n_layers))
    if isinstance(item, Weighted):
        sites += [Site(item.input_site, layer) for layer in item.layout(n_layers)[0]]
    return sites


def deepest_layer(steering: Steering, n_layers: int) -> int:
    """The last layer whose block any intervention of ``steering`` touches (reads or writes)."""
    depth = max(site.depth(n_layers) for item in steering for site in _sites_of(item, n_layers))
    return min(depth[0], n_layers - 1)


def regression(neurons: torch.Tensor, residual: torch.Tensor, rank: int | None = None,
               ridge: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dW [d, m], b [d])`` minimising ``‖n dWᵀ + b - R‖² + λ‖dW‖²`` (``λ = ridge * mean diag(nᵀn)``,
    ``n`` centred), the weight truncated to ``rank`` by reduced-rank regression (the bias stays free).
    ``neurons`` ``[N, m]``, ``residual`` ``[N, d]``."""
    n, r = neurons.double(), residual.double()
    n_mean, r_mean = n.mean(0), r.mean(0)
    x, y = n - n_mean, r - r_mean          # centred: the bias is free and outside the rank
    gram = x.T @ x
    lam = ridge * float(gram.diagonal().mean())
    beta = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=torch.float64), x.T @ y)   # [m, d]
    if rank is not None and rank < min(beta.shape):
        _, _, vh = torch.linalg.svd(x @ beta, full_matrices=False)
        v = vh[:rank].T                                                # [d, r]
        beta = beta @ v @ v.T
    d_w = beta.T.contiguous()
    return d_w, r_mean - d_w @ n_mean


def amortize(model: Model, steering: Steering | Intervention, texts: list[str], layer: int | None = None,
             rank: int | None = 64, ridge: float = 1e-4, chat: bool = False, batch_size: int = 8) -> Amortized:
    """Fit layer ``layer``'s down projection (a rank-``rank`` weight update and a bias; ``rank=None``: full)
    so the unsteered model's block output matches the ``steering``-steered one over every token of ``texts``.

    ``layer`` defaults to the deepest layer the recipe touches; a recipe acting after ``layer`` is refused.
    Texts are used as given (``chat=True`` applies the chat template); append the steered model's own
    replies to the prompts so generated tokens are matched too. Families with a post-norm after the
    MLP (Gemma 2/3) are refused (the down projection does not write the residual stream directly).
    """
    steering = as_steering(steering)
    steering.check_model(model.fingerprint)
    if not len(steering):
        raise SteerlabError("steering is empty; give at least one intervention to amortize")
    if not texts:
        raise DataError("amortize needs training texts (prompts, ideally with the steered model's replies)")
    bound = model.bound
    n = bound.n_layers
    deepest = deepest_layer(steering, n)
    layer = deepest if layer is None else int(layer)
    if not 0 <= layer < n:
        raise SteerlabError(f"layer {layer} is out of range; this model has layers 0..{n - 1}")
    if deepest > layer:
        raise SteerlabError(f"the recipe acts at layer {deepest}, after layer {layer}: training layer {layer} cannot "
                            f"reproduce it; pass layer={deepest} (or later)")
    if rank is not None and rank < 1:
        raise SteerlabError(f"rank must be at least 1 (or None for a full update), got {rank}")
    if not writers.writes_residual_directly(bound, "down_proj"):
        raise SteerlabError(f"amortize trains the MLP down projection, but in {model.hf_model.config.model_type} a "
                            "post-norm sits between it and the residual stream; this family is not supported")
    start = time.perf_counter()
    names = [f"layers.{layer}.mlp.neurons", f"layers.{layer}.resid_post"]
    plain = model.capture(texts, sites=names, positions="all", chat=chat, batch_size=batch_size, progress=False)
    steered = model.capture(texts, sites=names[1], positions="all", chat=chat, batch_size=batch_size,
                            steering=steering, progress=False)
    neurons = torch.cat(list(plain[names[0]]))
    base = torch.cat(list(plain[names[1]]))
    target = torch.cat(list(steered[names[1]]))
    residual = (target - base).double()
    d_w, b = regression(neurons, residual, rank, ridge)
    fitted = neurons.double() @ d_w.T + b
    denom = float(residual.norm()) or 1.0
    fit = {"relative_error": float((fitted - residual).norm()) / denom, "tokens": len(neurons),
           "steering_size": float(residual.norm(dim=-1).mean()), "seconds": time.perf_counter() - start}
    hf = copy.deepcopy(model.hf_model)
    switch = writers.ensure_bias(hf, bound, "down_proj")
    module = hf.get_submodule(writers.projection_path(bound, "down_proj", layer))
    scale = bound.residual_multiplier
    weight = bound.linear_weight(module).detach().double()
    bound.adapter.set_linear_weight(module, weight + d_w / scale)
    bias = writers.bias_of(module)
    assert bias is not None
    with torch.no_grad():
        bias.add_((b / scale).to(bias.dtype))
    hf.config.steerlab = {"amortized": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from": model.name,
                          "source": source_fingerprint(model), "layer": layer, "rank": rank,
                          "recipe": steering.digest(), "switches": [switch] if switch else [], **fit}
    attach_tokenizer(hf, model.tokenizer)
    return Amortized(hf, layer, rank, fit)


def with_replies(model: Model, steering: Steering | Intervention, prompts: list[str], max_new_tokens: int = 24,
                 batch_size: int = 16) -> list[str]:
    """Training texts for ``amortize`` (use ``chat=False``): each prompt chat-templated (when the tokenizer has
    a template) followed by the steered model's greedy reply, so generated tokens are matched too."""
    from ..models.tokens import chat_prompt, has_chat_template

    steering = as_steering(steering)
    chat = has_chat_template(model.tokenizer)
    out = []
    for begin in range(0, len(prompts), batch_size):
        rows = prompts[begin:begin + batch_size]
        replies = model.generate(rows, steering=steering, max_new_tokens=max_new_tokens, chat=chat).texts
        out += [(chat_prompt(model.tokenizer, p) if chat else p) + r for p, r in zip(rows, replies)]
    return out
