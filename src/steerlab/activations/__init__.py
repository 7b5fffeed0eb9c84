"""Captured activations: in memory, or sharded safetensors on disk with a manifest."""

from .memory import Activations
from .store import DiskActivations, ShardWriter, texts_hash

__all__ = ["Activations", "DiskActivations", "ShardWriter", "texts_hash"]


def open_activations(path) -> DiskActivations:
    """Open activations written by ``model.capture(..., out=path)``."""
    return DiskActivations(path)
