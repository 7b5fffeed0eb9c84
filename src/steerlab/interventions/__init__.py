"""Interventions: what can be done at a site. Each is small and pure: tensor in, tensor out."""

from .ablate import Ablate
from .add import Add
from .base import Intervention
from .clamp import Clamp
from .conditional import Conditional
from .patch import Patch
from .positions import StepContext, parse_positions
from .rotate import Rotate
from .scale import Scale
from .steering import Steering
from .weighted import Weighted

__all__ = [
           "Ablate",
           "Add",
           "Clamp",
           "Conditional",
           "Intervention",
           "Patch",
           "Rotate",
           "Scale",
           "Steering",
           "StepContext",
           "Weighted",
           "parse_positions",
]
