"""Llama-like pre-norm decoders: Llama, Mistral, Qwen2, Qwen3, SmolLM2/3 (the same layout and RMSNorm).

SmolLM3 leaves rotary positions out of some layers (NoPE); that is inside attention and changes no site.
A bias is added to ``o_proj``/``down_proj`` through the config's ``attention_bias``/``mlp_bias``
where the family's config has them (Qwen2 and Qwen3 lack one or both: such additions are refused).
"""

from .base import RMS, Adapter

LLAMA = Adapter(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    attn_norm="input_layernorm",
    attn_out="self_attn",
    mlp_norm="post_attention_layernorm",
    mlp_out="mlp",
    o_proj="self_attn.o_proj",
    down_proj="mlp.down_proj",
    norm=RMS,
    bias_switches={"o_proj": ("attention_bias",), "down_proj": ("mlp_bias",)},
)
