"""Everything that touches a transformers model: loading, adapters, hooks, capture and generation."""

from .generate import GenerationResult
from .load import cache_dir, embedded_gguf, load
from .model import Model

__all__ = ["GenerationResult", "Model", "cache_dir", "embedded_gguf", "load"]
