"""Sparse autoencoders: SAELens-format load/save, training on stored captures, features as directions.

    sae = sl.sae.load("my_sae/")                       # a SAELens folder (cfg.json + sae_weights.safetensors)
    d = sae.feature(123)                               # a Direction: Add, Clamp, Ablate, bake take it
    edit = sl.sae.SAEEdit(sae, clamp={123: 8.0})       # edit inside the SAE's basis, error term kept
"""

from .edit import SAEEdit
from .format import hook_name, load, save, site_of_hook
from .model import ARCHITECTURES, SAE

__all__ = ["ARCHITECTURES", "SAE", "SAEEdit", "hook_name", "load", "save", "site_of_hook"]
