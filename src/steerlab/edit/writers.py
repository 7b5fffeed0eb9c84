"""The residual stream's writers and how to change their weights in a saved-checkpoint-safe way.

Every vector the residual stream holds is a sum of *writers*: the embedding (plus learned position
embeddings where the family has them), and each block's attention output projection and MLP down
projection. An edit of a writer's output that is affine (``y -> A y + c``) is a weight edit:
``W <- A W``, ``b <- A b + c / m`` where ``m`` is what the family multiplies the writer's output by
before the residual stream receives it (Granite's multipliers, Gemma's embedding scale; else 1).

Changes are made so that the result is a plain transformers checkpoint:

- a projection without a bias gets one only through the family's own config switch (the adapter's
  ``bias_switches``, e.g. Llama's ``mlp_bias``/``attention_bias``); the other biases that switch
  creates are set to zero;
- tied input/output embeddings are untied (the unembedding keeps the original weights) before the
  embedding is changed, and ``tie_word_embeddings`` is set to False.

What a family computes (weight layout, multipliers, position embeddings, bias switches) comes from
its adapter; nothing here looks at class names.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import SteerlabError
from ..models.adapters import Bound, Projection, bias_of, weight_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: one edit of a writer's output: ``("ablate", Q)`` (Q orthonormal rows) or ``("add", c)``
Op = tuple[str, torch.Tensor]


class NotBakeableError(SteerlabError):
    """A recipe (or part of one) that no weight edit reproduces exactly; the message says why."""


def has_bias(module: nn.Module) -> bool:
    return bias_of(module) is not None


def projection_path(bound: Bound, which: Projection, layer: int) -> str:
    """Full dotted path of layer ``layer``'s ``o_proj`` or ``down_proj`` (``which``)."""
    return bound.projection_path(layer, which)


def writes_residual_directly(bound: Bound, which: Projection) -> bool:
    """Whether the sub-layer's residual write (attn_out/mlp_out) is this projection's output (times the
    family's residual multiplier): False when a post-norm sits between them (Gemma 2/3)."""
    return not bound.adapter.post_norm


def ensure_bias(hf: PreTrainedModel, bound: Bound, which: Projection) -> str | None:
    """Give every layer's ``which`` projection a bias through a config switch; return the switch used.

    Returns None if the projection already has a bias. The switch may add other biases (Llama's
    ``mlp_bias`` also adds gate/up biases): they are added as zeros, so the model computes exactly
    what it did. Raises ``NotBakeableError`` when the family has no such switch.
    """
    first = hf.get_submodule(projection_path(bound, which, 0))
    if has_bias(first):
        return None
    switches = bound.adapter.bias_switches.get(which, ())
    declared = hf.config.to_dict()
    tried = []
    for switch in switches:
        if switch not in declared:
            continue
        tried.append(switch)
        probe_config = copy.deepcopy(hf.config)
        setattr(probe_config, switch, True)
        with torch.device("meta"):
            probe = type(hf)(probe_config)
        old = dict(hf.named_parameters(remove_duplicate=False))
        new = dict(probe.named_parameters(remove_duplicate=False))
        added = sorted(set(new) - set(old))
        wanted = [projection_path(bound, which, i) + ".bias" for i in range(bound.n_layers)]
        if set(old) - set(new) or not all(name.endswith(".bias") for name in added) or not set(wanted) <= set(added):
            continue
        like = weight_of(first)
        for name in added:
            module = hf.get_submodule(name.rsplit(".", 1)[0])
            module.bias = nn.Parameter(torch.zeros(new[name].shape, dtype=like.dtype, device=like.device))
        setattr(hf.config, switch, True)
        return switch
    module_name = getattr(bound.adapter, which)
    if tried:
        looked = f"its config has {', '.join(tried)} but it does not add that bias"
    elif switches:
        looked = f"its config has no switch for one (looked for {', '.join(switches)})"
    else:
        looked = "the family has no config switch for one"
    raise NotBakeableError(
        f"{hf.config.model_type}: {module_name} has no bias and {looked}; a checkpoint with a bias there "
        "would need custom code to load, so this addition cannot be baked for this family"
    )


def untie_embeddings(hf: PreTrainedModel) -> bool:
    """Give the unembedding its own copy of the weights if it shares them with the embedding.

    Returns whether it was tied. Sets ``tie_word_embeddings=False`` so the checkpoint loads untied.
    """
    inp, out = hf.get_input_embeddings(), hf.get_output_embeddings()
    if out is None or weight_of(out).data_ptr() != weight_of(inp).data_ptr():
        return False
    out.weight = nn.Parameter(weight_of(out).detach().clone())
    for config in {id(c): c for c in (hf.config, hf.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    return True


def embedding_parts(hf: PreTrainedModel, bound: Bound) -> list[tuple[nn.Module, bool, float]]:
    """The modules whose outputs sum to the ``embed`` site: ``(module, takes_constant, scale)``.

    The token embedding takes any constant added to the site, divided by ``scale``: what the family
    multiplies a row by on its way to the site (Gemma's sqrt(d_model), Granite's embedding_multiplier);
    position embeddings only take the linear part.
    """
    token = hf.get_input_embeddings()
    parts = [(token, True, bound.embed_scale * bound.embedding_multiplier)]
    if bound.adapter.position_embed:
        parts.append((hf.get_submodule(bound.adapter.position_embed), False, 1.0))
    return parts


def _run_ops(rows: torch.Tensor, bias: torch.Tensor | None, ops: Sequence[Op], scale: float = 1.0,
             constants: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply ``ops`` to outputs stored as rows ``[n, d]`` (and a bias ``[d]``), in float64, in order.

    ``scale`` multiplies the rows (and bias) on their way to the site, so a constant ``c`` at the
    site is ``c / scale`` here; ablations commute with it.
    """
    for kind, t in ops:
        if kind == "ablate":
            rows = rows - (rows @ t.T) @ t
            if bias is not None:
                bias = bias - (t @ bias) @ t
        elif constants:
            if bias is not None:
                bias = bias + t / scale
            else:
                rows = rows + t / scale
    return rows, bias


def edit_projection(bound: Bound, module: nn.Module, ops: Sequence[Op]) -> None:
    """Apply output edits to a block projection: ablations ``W <- W - Q^T Q W`` (and its bias), additions
    to its bias (divided by the family's residual multiplier)."""
    W = bound.linear_weight(module).detach().double()  # [out, in]: the outputs are its columns
    stored = bias_of(module)
    bias = None if stored is None else stored.detach().double()
    if bias is None and any(kind == "add" for kind, _ in ops):
        raise AssertionError("ensure_bias must run before adding a constant")  # pragma: no cover
    cols, bias = _run_ops(W.T, bias, ops, bound.residual_multiplier)
    bound.adapter.set_linear_weight(module, cols.T)
    if stored is not None and bias is not None:
        with torch.no_grad():
            stored.copy_(bias.to(stored.dtype))


def edit_embeddings(hf: PreTrainedModel, bound: Bound, ops: Sequence[Op]) -> None:
    """Apply ``embed``-site edits to every embedding row (constants go to the token embedding only,
    divided by its scale on the way to the site)."""
    for module, takes_constant, scale in embedding_parts(hf, bound):
        weight = weight_of(module)
        rows, _ = _run_ops(weight.detach().double(), None, ops, scale, constants=takes_constant)
        with torch.no_grad():
            weight.copy_(rows.to(weight.dtype))
