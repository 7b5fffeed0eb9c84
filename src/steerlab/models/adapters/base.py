"""The adapter contract: a declarative map from steerlab's uniform sites to a family's modules.

An adapter names modules by their dotted paths (block-relative paths inside a decoder block).
`models/hooks.py` turns those names into forward hooks; nothing here runs the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ...errors import SteerlabError


@dataclass(frozen=True)
class Adapter:
    """Where each site of a family lives.

    Paths without a ``{}`` are relative to the causal-LM module; block paths are relative to one
    decoder block. ``attn_out``/``mlp_out`` name the module whose output is exactly what the
    sub-layer adds to the residual stream (the post-norm in Gemma 2/3, else the sub-layer itself).
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    embed: str
    final_norm: str
    attn_norm: str
    attn_out: str
    mlp_norm: str
    mlp_out: str
    o_proj: str
    down_proj: str
    parallel_residual: Callable[[object], bool] = field(default=lambda config: False)
    notes: str = ""


@dataclass
class Bound:
    """An adapter bound to one loaded model: the modules themselves and the model's sizes."""

    adapter: Adapter
    model: nn.Module
    blocks: list[nn.Module]
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    vocab: int
    parallel: bool

    def module(self, path: str) -> nn.Module:
        return get_module(self.model, path)

    def block_module(self, layer: int, path: str) -> nn.Module:
        return get_module(self.blocks[layer], path)


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted path (``"model.layers"``) from ``root``."""
    module = root
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def linear_in_features(module: nn.Module) -> int:
    """Input width of an ``nn.Linear`` or GPT-2's transposed ``Conv1D``."""
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if weight is not None and weight.dim() == 2 and type(module).__name__ == "Conv1D":
        return weight.shape[0]
    raise SteerlabError(f"cannot read the input width of {type(module).__name__}")


def bind(adapter: Adapter, model: nn.Module) -> Bound:
    """Resolve an adapter's paths on a model and read the sizes the sites need."""
    config = model.config
    blocks = list(get_module(model, adapter.layers))
    block0 = blocks[0]
    n_heads = getattr(config, "num_attention_heads", None) or config.n_head
    o_in = linear_in_features(get_module(block0, adapter.o_proj))
    d_mlp = linear_in_features(get_module(block0, adapter.down_proj))
    head_weight = model.get_output_embeddings().weight
    return Bound(
        adapter=adapter,
        model=model,
        blocks=blocks,
        n_layers=len(blocks),
        d_model=head_weight.shape[1],
        n_heads=n_heads,
        d_head=o_in // n_heads,
        d_mlp=d_mlp,
        vocab=head_weight.shape[0],
        parallel=bool(adapter.parallel_residual(config)),
    )
