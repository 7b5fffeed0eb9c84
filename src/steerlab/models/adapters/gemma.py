"""Gemma 2 and 3: sandwich norms, so attn_out/mlp_out are the outputs of the post-norms.

In these families each sub-layer's output is normalised (``post_attention_layernorm``,
``post_feedforward_layernorm``) before it is added to the residual stream; steerlab's
``attn_out``/``mlp_out`` are those normalised outputs, i.e. exactly what is added.
The token embedding module already multiplies by sqrt(d_model), so ``embed`` includes that scale.
"""

from .base import Adapter

GEMMA = Adapter(
    family="gemma",
    model_types=("gemma2", "gemma3_text", "gemma3"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    attn_norm="input_layernorm",
    attn_out="post_attention_layernorm",
    mlp_norm="pre_feedforward_layernorm",
    mlp_out="post_feedforward_layernorm",
    o_proj="self_attn.o_proj",
    down_proj="mlp.down_proj",
    notes="attn_out and mlp_out are taken after the post-norms, which is what the residual stream receives",
)
