"""Ray for work beyond one process: ``capture`` over a pool of model actors into the same sharded store."""

from .capture import capture

__all__ = ["capture"]
