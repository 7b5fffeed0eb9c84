"""Per-family adapters: which module holds each site, and what the family computes around them.
One small declarative file per family."""

from __future__ import annotations

from torch import nn

from ...errors import SteerlabError
from .base import (
    LAYER_NORM,
    PROJECTIONS,
    RMS,
    Adapter,
    At,
    Bound,
    Norm,
    Projection,
    Side,
    bias_of,
    bind,
    get_module,
    weight_of,
)
from .gemma import GEMMA, GEMMA3_MULTIMODAL
from .gpt2 import GPT2
from .gpt_neox import GPT_NEOX
from .granite import GRANITE
from .llama import LLAMA
from .olmo import OLMO

ADAPTERS: tuple[Adapter, ...] = (LLAMA, OLMO, GRANITE, GEMMA, GEMMA3_MULTIMODAL, GPT2, GPT_NEOX)


def supported_model_types() -> list[str]:
    """Every ``config.model_type`` some adapter accepts, sorted."""
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter for a transformers causal LM, chosen by ``config.model_type``."""
    model_type = getattr(model.config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise SteerlabError(f"model_type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}")


__all__ = ["ADAPTERS", "LAYER_NORM", "PROJECTIONS", "RMS", "Adapter", "At", "Bound", "Norm", "Projection", "Side",
           "adapter_for", "bias_of", "bind", "get_module", "supported_model_types", "weight_of"]
