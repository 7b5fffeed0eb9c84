"""Captured activations: in memory, or sharded safetensors on disk with a manifest."""

from __future__ import annotations

import os

from ..io import texts_hash
from .memory import Activations, SiteValue
from .store import DiskActivations, ShardWriter

__all__ = ["Activations", "DiskActivations", "ShardWriter", "SiteValue", "open_activations", "texts_hash"]


def open_activations(path: str | os.PathLike[str]) -> DiskActivations:
    """Open activations written by ``model.capture(..., out=path)``."""
    return DiskActivations(path)
