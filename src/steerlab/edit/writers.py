"""The residual stream's writers and how to change their weights in a saved-checkpoint-safe way.

Every vector the residual stream holds is a sum of *writers*: the embedding (plus GPT-2's learned
position embedding), and each block's attention output projection and MLP down projection. An edit
of a writer's output that is affine (``y -> A y + c``) is a weight edit: ``W <- A W``, ``b <- A b + c``.

Changes are made so that the result is a plain transformers checkpoint:

- a projection without a bias gets one only through the family's own config switch (Llama's
  ``mlp_bias``/``attention_bias``); the other biases that switch creates are set to zero;
- tied input/output embeddings are untied (the unembedding keeps the original weights) before the
  embedding is changed, and ``tie_word_embeddings`` is set to False.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import SteerlabError
from ..models.adapters import Bound

#: the config switches that give an output projection a bias, per projection
BIAS_SWITCHES = {"o_proj": ("attention_bias",), "down_proj": ("mlp_bias",)}

#: learned absolute position embeddings that are part of the ``embed`` site, per family
POSITION_EMBEDDINGS = {"gpt2": "transformer.wpe"}


class NotBakeableError(SteerlabError):
    """A recipe (or part of one) that no weight edit reproduces exactly; the message says why."""


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's ``Conv1D`` stores its weight as ``[in, out]`` (the transpose of ``nn.Linear``)."""
    return type(module).__name__ == "Conv1D"


def out_in(module: nn.Module) -> torch.Tensor:
    """The weight of a linear map as ``[out, in]`` (a view; Conv1D's is transposed)."""
    return module.weight.T if is_conv1d(module) else module.weight


def set_out_in(module: nn.Module, matrix: torch.Tensor) -> None:
    """Write ``matrix`` (``[out, in]``, any float dtype) into the module's weight, in place."""
    with torch.no_grad():
        out_in(module).copy_(matrix.to(module.weight.dtype))


def has_bias(module: nn.Module) -> bool:
    return getattr(module, "bias", None) is not None


def projection_path(bound: Bound, which: str, layer: int) -> str:
    """Full dotted path of layer ``layer``'s ``o_proj`` or ``down_proj`` (``which``)."""
    return f"{bound.adapter.layers}.{layer}.{getattr(bound.adapter, which)}"


def writes_residual_directly(bound: Bound, which: str) -> bool:
    """Whether the sub-layer's residual write (attn_out/mlp_out) *is* this projection's output.

    True when the site's module contains the projection (Llama's ``self_attn`` holds ``o_proj``);
    False when a post-norm sits between them (Gemma 2/3).
    """
    site_module = bound.adapter.attn_out if which == "o_proj" else bound.adapter.mlp_out
    return getattr(bound.adapter, which).startswith(site_module + ".")


def ensure_bias(hf: nn.Module, bound: Bound, which: str) -> str | None:
    """Give every layer's ``which`` projection a bias through a config switch; return the switch used.

    Returns None if the projection already has a bias. The switch may add other biases (Llama's
    ``mlp_bias`` also adds gate/up biases): they are added as zeros, so the model computes exactly
    what it did. Raises ``NotBakeableError`` when the family has no such switch.
    """
    first = hf.get_submodule(projection_path(bound, which, 0))
    if has_bias(first):
        return None
    declared = hf.config.to_dict()
    tried = []
    for switch in BIAS_SWITCHES[which]:
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
        like = first.weight
        for name in added:
            module = hf.get_submodule(name.rsplit(".", 1)[0])
            module.bias = nn.Parameter(torch.zeros(new[name].shape, dtype=like.dtype, device=like.device))
        setattr(hf.config, switch, True)
        return switch
    module_name = getattr(bound.adapter, which)
    looked = f"its config has {', '.join(tried)} but it does not add that bias" if tried else (
        f"its config has no switch for one (looked for {', '.join(BIAS_SWITCHES[which])})")
    raise NotBakeableError(
        f"{hf.config.model_type}: {module_name} has no bias and {looked}; a checkpoint with a bias there "
        "would need custom code to load, so this addition cannot be baked for this family"
    )


def untie_embeddings(hf: nn.Module) -> bool:
    """Give the unembedding its own copy of the weights if it shares them with the embedding.

    Returns whether it was tied. Sets ``tie_word_embeddings=False`` so the checkpoint loads untied.
    """
    inp, out = hf.get_input_embeddings(), hf.get_output_embeddings()
    if out is None or out.weight.data_ptr() != inp.weight.data_ptr():
        return False
    out.weight = nn.Parameter(out.weight.detach().clone())
    for config in {id(c): c for c in (hf.config, hf.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    return True


def embedding_parts(hf: nn.Module, family: str) -> list[tuple[nn.Module, bool, float]]:
    """The modules whose outputs sum to the ``embed`` site: ``(module, takes_constant, scale)``.

    The token embedding takes any constant added to the site (divided by its output ``scale``:
    Gemma multiplies embeddings by sqrt(d_model)); position embeddings only take the linear part.
    """
    token = hf.get_input_embeddings()
    scale = getattr(token, "embed_scale", None)
    scale = 1.0 if scale is None else float(scale)
    parts = [(token, True, scale)]
    if family in POSITION_EMBEDDINGS:
        parts.append((hf.get_submodule(POSITION_EMBEDDINGS[family]), False, 1.0))
    return parts


def _run_ops(rows: torch.Tensor, bias: torch.Tensor | None, ops, scale: float = 1.0, constants: bool = True):
    """Apply ``ops`` to outputs stored as rows ``[n, d]`` (and a bias ``[d]``), in float64, in order."""
    for kind, t in ops:
        if kind == "ablate":
            rows = rows - (rows @ t.T) @ t
            if bias is not None:
                bias = bias - (t @ bias) @ t
        elif constants:
            if bias is not None:
                bias = bias + t
            else:
                rows = rows + t / scale
    return rows, bias


def edit_projection(module: nn.Module, ops) -> None:
    """Apply output edits to a linear map: ablations ``W <- W - Q^T Q W`` (and its bias), additions to its bias."""
    W = out_in(module).detach().double()  # [out, in]: the outputs are its columns
    bias = module.bias.detach().double() if has_bias(module) else None
    if bias is None and any(kind == "add" for kind, _ in ops):
        raise AssertionError("ensure_bias must run before adding a constant")  # pragma: no cover
    cols, bias = _run_ops(W.T, bias, ops)
    set_out_in(module, cols.T)
    if bias is not None:
        with torch.no_grad():
            module.bias.copy_(bias.to(module.bias.dtype))


def edit_embeddings(hf: nn.Module, family: str, ops) -> None:
    """Apply ``embed``-site edits to every embedding row (constants go to the token embedding only,
    divided by its output scale)."""
    for module, takes_constant, scale in embedding_parts(hf, family):
        rows, _ = _run_ops(module.weight.detach().double(), None, ops, scale, constants=takes_constant)
        with torch.no_grad():
            module.weight.copy_(rows.to(module.weight.dtype))
