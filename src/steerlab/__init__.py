"""steerlab: read, steer and audit what a language model computes from its hidden states.

    import steerlab as sl
    model = sl.load("smollm2")
    pairs = sl.data.load("sentiment")
    d = sl.directions.mean_diff(model, pairs)
    out = model.generate(["Tell me about your day."], steering=sl.Steering([sl.Add(d, alpha=4.0, layers=[10, 11])]))
"""

__version__ = "0.1.0"

from .activations import Activations, DiskActivations
from .errors import SteerlabError
from .interventions import Ablate, Add, Clamp, Conditional, Intervention, Patch, Rotate, Scale, Steering
from .models import GenerationResult, Model, load
from .sites import Site, parse_site
from . import edit, recipes  # noqa: E402  (sl.edit.bake, sl.recipes.directional_ablation)

__all__ = [
    "Ablate", "Activations", "Add", "Clamp", "Conditional", "DiskActivations", "GenerationResult", "Intervention",
    "Model", "Patch", "Rotate", "Scale", "Site", "Steering", "SteerlabError", "__version__", "load", "parse_site",
]
