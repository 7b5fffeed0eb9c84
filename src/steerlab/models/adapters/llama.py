"""Llama-like pre-norm decoders: Llama, Mistral, Qwen2, Qwen3, SmolLM (and others with the same layout)."""

from .base import Adapter

LLAMA = Adapter(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo", "granite"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    attn_norm="input_layernorm",
    attn_out="self_attn",
    mlp_norm="post_attention_layernorm",
    mlp_out="mlp",
    o_proj="self_attn.o_proj",
    down_proj="mlp.down_proj",
)
