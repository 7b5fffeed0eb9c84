"""OLMo (the first one): Llama's layout, but its norms are LayerNorms without weight or bias (eps fixed at 1e-5).

Its config has ``attention_bias`` but no ``mlp_bias``, so additions on ``mlp_out`` cannot be baked.
"""

from dataclasses import replace

from .base import Norm
from .llama import LLAMA

OLMO = replace(
    LLAMA,
    family="olmo",
    model_types=("olmo",),
    norm=Norm("layer", eps_attr=None, eps=1e-5),
)
