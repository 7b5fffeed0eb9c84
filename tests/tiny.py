"""Tiny random models of every supported family, and a byte-level tokenizer, built offline."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import steerlab as sl

SPECIALS = ["<pad>", "<bos>", "<eos>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """One token per byte plus <pad>/<bos>/<eos> (ids 0, 1, 2); adds no BOS by itself."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


VOCAB = 3 + 256

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo", "granite", "gemma2", "gemma3", "gemma3_multimodal",
            "gpt2", "neox_parallel", "neox_sequential"]

#: the families whose norms scale by ``1 + weight`` (initialised around 0, not 1)
GEMMA_LIKE = ("gemma2", "gemma3", "gemma3_multimodal")


def tiny_config(family: str):
    from transformers import (
        Gemma2Config,
        Gemma3Config,
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        GraniteConfig,
        LlamaConfig,
        MistralConfig,
        OlmoConfig,
        Qwen2Config,
        Qwen3Config,
        SiglipVisionConfig,
        SmolLM3Config,
    )

    common = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
              "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False}
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=16)
    if family == "smollm3":  # every other layer without rotary positions (NoPE)
        return SmolLM3Config(**common, no_rope_layer_interval=2)
    if family == "olmo":  # LayerNorm without parameters, clipped q/k/v
        return OlmoConfig(**common, clip_qkv=8.0)
    if family == "granite":  # multipliers that are not powers of two, so a misplaced one shows
        return GraniteConfig(**common, embedding_multiplier=3.0, residual_multiplier=0.22, logits_scaling=2.5,
                             attention_multiplier=0.3)
    if family == "gemma2":
        return Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                            attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    if family == "gemma3":
        return Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=8)
    if family == "gemma3_multimodal":  # model_type "gemma3": the language model inside an image-text model
        text = Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=8)
        vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=16, patch_size=8)
        return Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                            tie_word_embeddings=False)
    if family == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=256,
                          bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    if family.startswith("neox"):
        return GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                             num_attention_heads=4, max_position_embeddings=256, rotary_pct=0.5,
                             use_parallel_residual=family == "neox_parallel", bos_token_id=1, eos_token_id=2,
                             pad_token_id=0, tie_word_embeddings=False)
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0, tied: bool | None = None, hidden_size: int | None = None) -> sl.Model:
    """A steerlab Model around a freshly initialised tiny transformers model of ``family``
    (``tied`` overrides whether the unembedding shares the embedding's weights; ``hidden_size``
    the width, 64 by default, for families configured with ``hidden_size``)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(family)
    if tied is not None:
        config.tie_word_embeddings = tied
    if hidden_size is not None:
        config.hidden_size = hidden_size
    hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    # Larger random weights than the default init (scaled by width), so outputs vary with the input
    # and steering visibly changes them.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, p.shape[-1] ** -0.5)
            elif ("norm" in name or ".ln" in name) and name.endswith("weight"):
                p.uniform_(0.8, 1.2) if family not in GEMMA_LIKE else p.uniform_(-0.2, 0.2)
            else:
                p.normal_(0.0, 0.1)
    hf.generation_config.eos_token_id = 2
    hf.generation_config.pad_token_id = 0
    return sl.Model(hf, byte_tokenizer(), name=f"tiny-{family}")
