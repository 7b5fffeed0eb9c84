"""Edit weights: bake recipes into a plain checkpoint, Steer2Edit, llama.cpp control vectors, peers' vectors.

    baked = sl.edit.bake(model, sl.recipes.directional_ablation(d))   # a transformers model
    baked.save_pretrained("out/")                                     # also writes the tokenizer
    d.to_gguf("happy.gguf")                                           # llama.cpp control vector
"""

from ..directions.gguf import ControlVectorFile, read_control_vector, write_control_vector
from .amortize import Amortized, amortize, with_replies
from .bake import bake, check_equivalent, plan
from .lofit import LoFiT, bake_lofit, lofit
from .peers import from_repeng, from_steering_vectors
from .steer2edit import Steer2EditResult, steer2edit
from .writers import NotBakeableError

__all__ = ["Amortized", "ControlVectorFile", "LoFiT", "NotBakeableError", "Steer2EditResult", "amortize", "bake",
           "bake_lofit", "check_equivalent", "from_repeng", "from_steering_vectors", "lofit", "plan",
           "read_control_vector", "steer2edit", "with_replies", "write_control_vector"]
