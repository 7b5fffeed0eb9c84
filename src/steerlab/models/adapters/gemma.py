"""Gemma 2 and 3: sandwich norms, so attn_out/mlp_out are the outputs of the post-norms.

In these families each sub-layer's output is normalised (``post_attention_layernorm``,
``post_feedforward_layernorm``) before it is added to the residual stream; steerlab's
``attn_out``/``mlp_out`` are those normalised outputs, i.e. exactly what is added. The norms are
RMSNorms that scale by ``1 + weight``. The token embedding module already multiplies by
sqrt(d_model), so ``embed`` includes that scale. The logits are soft-capped when the config sets
``final_logit_softcapping`` (Gemma 2). ``gemma3`` is the image-text model: its language model is
the same decoder under ``model.language_model`` (text-only inputs; images are not steered).
"""

from dataclasses import replace
from typing import Any

from .base import Adapter, Norm


def _sqrt_d_model(config: Any) -> float:
    return float(config.hidden_size) ** 0.5


GEMMA = Adapter(
    family="gemma",
    model_types=("gemma2", "gemma3_text"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    attn_norm="input_layernorm",
    attn_out="post_attention_layernorm",
    mlp_norm="pre_feedforward_layernorm",
    mlp_out="post_feedforward_layernorm",
    o_proj="self_attn.o_proj",
    down_proj="mlp.down_proj",
    norm=Norm("rms", weight_offset=1.0, eps_attr="eps"),
    post_norm=True,
    embed_scale=_sqrt_d_model,
    final_softcap="final_logit_softcapping",
    notes="attn_out and mlp_out are taken after the post-norms, which is what the residual stream receives",
)

GEMMA3_MULTIMODAL = replace(
    GEMMA,
    model_types=("gemma3",),
    layers="model.language_model.layers",
    embed="model.language_model.embed_tokens",
    final_norm="model.language_model.norm",
)
