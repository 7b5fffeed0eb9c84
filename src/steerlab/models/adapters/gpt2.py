"""GPT-2: learned absolute positions (the embed site is token + position embedding), Conv1D projections."""

from .base import Adapter

GPT2 = Adapter(
    family="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    embed="transformer.drop",
    final_norm="transformer.ln_f",
    attn_norm="ln_1",
    attn_out="attn",
    mlp_norm="ln_2",
    mlp_out="mlp",
    o_proj="attn.c_proj",
    down_proj="mlp.c_proj",
)
