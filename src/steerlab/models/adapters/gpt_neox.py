"""GPT-NeoX / Pythia: LayerNorm, and usually a parallel residual, so the MLP reads resid_pre, not resid_mid.

With ``use_parallel_residual`` the block computes ``x + attn(ln1(x)) + mlp(ln2(x))``; steerlab's
``resid_mid`` is then the virtual state ``resid_pre + attn_out``: reading it returns that sum and
writing it changes the block output by the same amount (the MLP, which never reads it, is unaffected).
The attention output projection has a bias when ``attention_bias`` is set (the default).
"""

from typing import Any

from .base import LAYER_NORM, Adapter


def _parallel(config: Any) -> bool:
    return bool(getattr(config, "use_parallel_residual", True))


GPT_NEOX = Adapter(
    family="gpt_neox",
    model_types=("gpt_neox",),
    layers="gpt_neox.layers",
    embed="gpt_neox.emb_dropout",
    final_norm="gpt_neox.final_layer_norm",
    attn_norm="input_layernorm",
    attn_out="attention",
    mlp_norm="post_attention_layernorm",
    mlp_out="mlp",
    o_proj="attention.dense",
    down_proj="mlp.dense_4h_to_h",
    norm=LAYER_NORM,
    bias_switches={"o_proj": ("attention_bias",)},
    parallel_residual=_parallel,
)
