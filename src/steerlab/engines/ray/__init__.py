"""Ray for work beyond one process: ``capture`` over a pool of model actors into the same sharded store,
and ``RayGenerator`` to spread the generations of a sweep or comparison over actors."""

from .capture import capture
from .generate import RayGenerator

__all__ = ["RayGenerator", "capture"]
