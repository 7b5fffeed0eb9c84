"""Per-family adapters: which module holds each site. One small declarative file per family."""

from __future__ import annotations

from torch import nn

from ...errors import SteerlabError
from .base import Adapter, Bound, bind, get_module
from .gemma import GEMMA
from .gpt2 import GPT2
from .gpt_neox import GPT_NEOX
from .llama import LLAMA

ADAPTERS: tuple[Adapter, ...] = (LLAMA, GEMMA, GPT2, GPT_NEOX)


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter for a transformers causal LM, chosen by ``config.model_type``."""
    model_type = getattr(model.config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    supported = sorted(t for a in ADAPTERS for t in a.model_types)
    raise SteerlabError(f"model_type {model_type!r} is not supported; supported: {', '.join(supported)}")


__all__ = ["ADAPTERS", "Adapter", "Bound", "adapter_for", "bind", "get_module"]
