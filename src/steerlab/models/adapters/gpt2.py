"""GPT-2: learned absolute positions (the embed site is token + position embedding, read after the
embedding dropout), LayerNorm, and ``Conv1D`` projections that store their weights as ``[in, out]``.

Every projection already has a bias, so no config switch is needed to bake an addition.
"""

from .base import LAYER_NORM, Adapter

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
    norm=LAYER_NORM,
    transposed_weights=True,
    position_embed="transformer.wpe",
)
