"""The adapter contract: everything steerlab knows about one family, as data and tiny functions.

An adapter names modules by their dotted paths (block-relative paths inside a decoder block) and
declares what the family computes around them: the kind of norm, the layout of the projection
weights, the multipliers and soft-caps it applies outside any module, its learned position
embeddings and the config switches that give a projection a bias. ``bind`` resolves all of it on
one loaded model (a ``Bound``); `models/hooks.py`, `analysis/` and `edit/` ask the ``Bound``.
Nothing here runs the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ...errors import SteerlabError
from ...sites import Site

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: which side of a module a site is: its first input, its output, or (the model only) its output logits
Side = Literal["in", "out", "logits"]
#: the output projections that write the residual stream, by their adapter field names
Projection = Literal["o_proj", "down_proj"]
PROJECTIONS: tuple[Projection, ...] = ("o_proj", "down_proj")


@dataclass(frozen=True)
class Norm:
    """How a family's norms compute: ``"rms"`` (x / rms(x)) or ``"layer"`` (centred, / std(x)), then
    times ``weight_offset + weight`` when the module has a weight (Gemma: ``1 + weight``).

    Epsilon is the module attribute ``eps_attr``, or the fixed ``eps`` when the module stores none.
    """

    kind: Literal["rms", "layer"]
    weight_offset: float = 0.0
    eps_attr: str | None = "variance_epsilon"
    eps: float = 1e-6

    def epsilon(self, module: nn.Module) -> float:
        """The epsilon ``module`` adds to the variance."""
        if self.eps_attr is None:
            return self.eps
        return float(getattr(module, self.eps_attr))


RMS = Norm("rms")
LAYER_NORM = Norm("layer", eps_attr="eps")


@dataclass(frozen=True)
class At:
    """Where a site is read and written: the module at ``path`` (``""``: the block itself, or the
    whole model when not ``in_block``), which ``side`` of it, and the config key of a multiplier the
    model applies to that output before the residual stream receives it (the site is the product)."""

    path: str
    side: Side
    multiplier: str | None = None
    in_block: bool = True


def _never_parallel(config: Any) -> bool:
    return False


def _no_scale(config: Any) -> float:
    return 1.0


@dataclass(frozen=True)
class Adapter:
    """What one family is made of.

    Paths without a ``{}`` are relative to the causal-LM module; block paths are relative to one
    decoder block. ``attn_out``/``mlp_out`` name the module whose output (times
    ``residual_multiplier``, where declared) is exactly what the sub-layer adds to the residual
    stream: the post-norm when ``post_norm`` (Gemma 2/3), else the sub-layer itself.

    Multipliers and caps are config keys, read from the (text) config when bound:
    ``embedding_multiplier`` scales the embedding output, ``residual_multiplier`` each sub-layer's
    output, ``logits_divisor`` divides the logits, ``final_softcap`` is the final logit soft-cap
    (``cap * tanh(logits / cap)``). ``embed_scale(config)`` is the scale the embedding *module*
    already applies (so the ``embed`` site includes it). ``bias_switches`` maps a projection to the
    config switches that give it a bias in a plain checkpoint (Llama's ``attention_bias``).
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
    norm: Norm = RMS
    post_norm: bool = False
    transposed_weights: bool = False
    position_embed: str | None = None
    embed_scale: Callable[[Any], float] = _no_scale
    embedding_multiplier: str | None = None
    residual_multiplier: str | None = None
    logits_divisor: str | None = None
    final_softcap: str | None = None
    bias_switches: Mapping[Projection, tuple[str, ...]] = field(default_factory=dict)
    parallel_residual: Callable[[Any], bool] = _never_parallel
    notes: str = ""

    def where(self, kind: str) -> At:
        """The site -> module table: where a site of ``kind`` is read and written.

        ``resid_mid`` is listed at the MLP pre-norm's input; in parallel-residual blocks, where
        nothing reads it, the hooks build it from ``resid_pre`` and ``attn_out`` instead.
        """
        table = {
            "embed": At(self.embed, "out", self.embedding_multiplier, in_block=False),
            "resid_pre": At("", "in"),
            "attn_in": At(self.attn_norm, "out"),
            "attn.heads": At(self.o_proj, "in"),
            "attn_out": At(self.attn_out, "out", self.residual_multiplier),
            "resid_mid": At(self.mlp_norm, "in"),
            "mlp_in": At(self.mlp_norm, "out"),
            "mlp.neurons": At(self.down_proj, "in"),
            "mlp_out": At(self.mlp_out, "out", self.residual_multiplier),
            "resid_post": At("", "out"),
            "final": At(self.final_norm, "out", in_block=False),
            "logits": At("", "logits", in_block=False),
        }
        if kind not in table:  # pragma: no cover - sites.py lists every kind
            raise SteerlabError(f"site kind {kind!r} is unknown")
        return table[kind]

    def linear_weight(self, module: nn.Module) -> torch.Tensor:
        """The weight of a block's linear layer (``o_proj``, ``down_proj``) as ``[out, in]``: a view,
        transposed where the family stores ``[in, out]`` (GPT-2's ``Conv1D``)."""
        weight = weight_of(module)
        return weight.T if self.transposed_weights else weight

    def set_linear_weight(self, module: nn.Module, matrix: torch.Tensor) -> None:
        """Write ``matrix`` (``[out, in]``, any float dtype) into a block linear layer's weight, in place."""
        weight = self.linear_weight(module)
        with torch.no_grad():
            weight.copy_(matrix.to(weight.dtype))


@dataclass
class Bound:
    """An adapter bound to one loaded model: the modules themselves, the sizes, and the family's
    multipliers as numbers (1.0 where the family has none)."""

    adapter: Adapter
    model: PreTrainedModel
    blocks: list[nn.Module]
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    vocab: int
    parallel: bool
    embed_scale: float = 1.0
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    logits_divisor: float = 1.0
    final_softcap: float | None = None

    def module(self, path: str) -> nn.Module:
        return get_module(self.model, path)

    def block_module(self, layer: int, path: str) -> nn.Module:
        return get_module(self.blocks[layer], path)

    def locate(self, site: Site) -> tuple[nn.Module, Side, float]:
        """The module a site is read and written at, which side of it, and the multiplier applied
        to that side's value to give the site (1.0 when none)."""
        at = self.adapter.where(site.kind)
        if not at.in_block:
            module = self.module(at.path) if at.path else self.model
        else:
            if site.layer is None:  # pragma: no cover - sites.py gives every block kind a layer
                raise SteerlabError(f"site {site.name} needs a layer")
            module = self.block_module(site.layer, at.path) if at.path else self.blocks[site.layer]
        return module, at.side, self.multiplier(at.multiplier)

    def multiplier(self, key: str | None) -> float:
        """The value of a declared multiplier (``embedding_multiplier``/``residual_multiplier``)."""
        if key is None:
            return 1.0
        if key == self.adapter.embedding_multiplier:
            return self.embedding_multiplier
        if key == self.adapter.residual_multiplier:
            return self.residual_multiplier
        raise SteerlabError(f"{self.adapter.family}: unknown multiplier {key!r}")  # pragma: no cover

    def projection(self, layer: int, which: Projection) -> nn.Module:
        """Layer ``layer``'s attention output projection (``"o_proj"``) or MLP down projection (``"down_proj"``)."""
        return self.block_module(layer, getattr(self.adapter, which))

    def projection_path(self, layer: int, which: Projection) -> str:
        """Full dotted path of a projection from the model (the same in any copy of it)."""
        return f"{self.adapter.layers}.{layer}.{getattr(self.adapter, which)}"

    def linear_weight(self, module: nn.Module) -> torch.Tensor:
        """``adapter.linear_weight``: a block linear layer's weight as ``[out, in]``."""
        return self.adapter.linear_weight(module)

    def logits_from_unembedded(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model does to its unembedding's output: divide by ``logits_divisor``, then soft-cap."""
        if self.logits_divisor != 1.0:
            logits = logits / self.logits_divisor
        if self.final_softcap:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted path (``"model.layers"``) from ``root``."""
    module: Any = root
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    if not isinstance(module, nn.Module):
        raise SteerlabError(f"{path!r} names a {type(module).__name__}, not a module")
    return module


def weight_of(module: nn.Module) -> torch.Tensor:
    """A module's ``weight`` tensor (a SteerlabError naming the module when it has none)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise SteerlabError(f"{type(module).__name__} has no weight tensor")
    return weight


def bias_of(module: nn.Module) -> torch.Tensor | None:
    """A module's ``bias`` tensor, or None when it has none."""
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


def _multiplier(config: Any, key: str | None) -> float:
    """A declared multiplier's value (1.0 when the family or the config has none); zero is refused."""
    value = None if key is None else getattr(config, key, None)
    if value is None:
        return 1.0
    if float(value) == 0.0:
        raise SteerlabError(f"{config.model_type}: {key}=0 makes the sites undefined; this model cannot be steered")
    return float(value)


def bind(adapter: Adapter, model: PreTrainedModel) -> Bound:
    """Resolve an adapter's paths on a model and read the sizes and multipliers the sites need."""
    config = model.config.get_text_config()
    layers = get_module(model, adapter.layers)
    if not isinstance(layers, nn.ModuleList):
        raise SteerlabError(f"{config.model_type}: {adapter.layers!r} is a {type(layers).__name__}, not the list of blocks")
    blocks = list(layers)
    block0 = blocks[0]
    n_heads = int(config.num_attention_heads)
    o_in = adapter.linear_weight(get_module(block0, adapter.o_proj)).shape[1]
    d_mlp = adapter.linear_weight(get_module(block0, adapter.down_proj)).shape[1]
    head = model.get_output_embeddings()
    if head is None:
        raise SteerlabError(f"{config.model_type}: the model has no output embeddings; load it as a causal LM")
    head_weight = weight_of(head)
    cap = getattr(config, adapter.final_softcap, None) if adapter.final_softcap else None
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
        embed_scale=float(adapter.embed_scale(config)),
        embedding_multiplier=_multiplier(config, adapter.embedding_multiplier),
        residual_multiplier=_multiplier(config, adapter.residual_multiplier),
        logits_divisor=_multiplier(config, adapter.logits_divisor),
        final_softcap=float(cap) if cap else None,
    )
