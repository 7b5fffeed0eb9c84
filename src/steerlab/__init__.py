"""steerlab: read, steer and audit what a language model computes from its hidden states.

    import steerlab as sl
    model = sl.load("smollm2")
    pairs = sl.data.load("sentiment")
    d = sl.directions.mean_diff(model, pairs)
    out = model.generate(["Tell me about your day."], steering=sl.Steering([sl.Add(d, alpha=1.5, layers=[8, 9, 10])]))

Subpackages (``sl.data``, ``sl.directions``, ``sl.recipes``, ``sl.analysis``, ``sl.evaluate``,
``sl.edit``, ...) are imported on first use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

from .activations import Activations, DiskActivations
from .directions.direction import Direction
from .errors import SteerlabError
from .interventions import Ablate, Add, Clamp, Conditional, Intervention, Patch, Rotate, Scale, Steering, Weighted
from .models import GenerationResult, Model, load
from .sites import Site, parse_site

#: subpackages imported on first use (``sl.analysis``, ...); each one exists under ``steerlab/``
SUBPACKAGES = ("activations", "analysis", "data", "directions", "edit", "evaluate", "interventions", "models",
               "reasoning", "recipes", "report", "sae")


def __getattr__(name: str) -> ModuleType:
    if name in SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'steerlab' has no attribute {name!r}")


#: the public names, the subpackages (SUBPACKAGES) included
__all__ = [
    "Ablate", "Activations", "Add", "Clamp", "Conditional", "Direction", "DiskActivations", "GenerationResult",
    "Intervention", "Model", "Patch", "Rotate", "Scale", "Site", "Steering", "SteerlabError", "Weighted", "__version__",
    "activations", "analysis", "data", "directions", "edit", "evaluate", "interventions", "load", "models",
    "parse_site", "reasoning", "recipes", "report", "sae",
]
