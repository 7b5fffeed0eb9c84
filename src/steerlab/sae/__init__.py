"""Sparse autoencoders: SAELens-format load/save, training on stored captures, features as directions.

    sae = sl.sae.load("my.sae")                        # a SAELens folder (cfg.json + sae_weights.safetensors)
    d = sae.feature(123)                               # a Direction: Add, Clamp, Ablate, bake take it
    edit = sl.sae.SAEEdit(sae, clamp={123: 8.0})       # edit inside the SAE's basis, error term kept
"""

from .edit import SAEEdit
from .features import contrast_features, encode_activations, top_texts
from .format import hook_name, load, save, site_of_hook
from .metrics import loss_increase, reconstruction_metrics
from .model import ARCHITECTURES, SAE
from .train import TrainConfig, TrainResult, train_sae

__all__ = ["ARCHITECTURES", "SAE", "SAEEdit", "TrainConfig", "TrainResult", "contrast_features",
           "encode_activations", "hook_name", "load", "loss_increase", "reconstruction_metrics", "save",
           "site_of_hook", "top_texts", "train_sae"]
