"""IBM Granite: Llama's layout plus three multipliers applied outside any module, which steerlab's sites include.

The model computes ``h = embedding_multiplier * embed(ids)``, ``h = h + residual_multiplier * attn(...)``,
``h = h + residual_multiplier * mlp(...)`` and ``logits = lm_head(norm(h)) / logits_scaling``. So that the
documented invariants hold (``resid_mid == resid_pre + attn_out``, ``embed`` is what enters the first
block), ``embed``, ``attn_out`` and ``mlp_out`` are the *multiplied* outputs: reading returns the product,
and a write changes the module's output by the written difference divided by the multiplier. Baking folds
the multipliers in the same way (a bias of ``c / residual_multiplier``), so it stays exact.
"""

from dataclasses import replace

from .llama import LLAMA

GRANITE = replace(
    LLAMA,
    family="granite",
    model_types=("granite",),
    embedding_multiplier="embedding_multiplier",
    residual_multiplier="residual_multiplier",
    logits_divisor="logits_scaling",
)
