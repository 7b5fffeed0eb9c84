"""Target 6: the generation and capture ratios on a GPU, bf16, on a randomly initialised
Llama-shaped model of about 1.2B parameters built from a config (no download), batch 1, 8 and 64.

The embedded model's tokenizer supplies the vocabulary (49,152 tokens); weights are random, so
texts are gibberish, but every run decodes exactly the requested number of tokens
(``min_new_tokens``) and the work is the real work of a 1B model.
"""

from __future__ import annotations

import torch

SHAPE = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
         "num_key_value_heads": 8, "max_position_embeddings": 4096, "tie_word_embeddings": False}


def random_llama(sl, dtype=torch.bfloat16, device="cuda"):
    """A ``steerlab.Model`` around a random ~1.2B Llama on ``device`` (the embedded model's tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = sl.load("smollm2", device="cpu").tokenizer
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **SHAPE)
    torch.manual_seed(0)
    with torch.device(device):
        hf = LlamaForCausalLM(config).to(dtype)
    return sl.Model(hf.eval(), tokenizer, name="random-llama-1b")


def run(sl, runs: int = 5, tokens: int = 64, log=print) -> dict:
    """Generation (batch 1, 8, 64) and capture ratios in bf16 on CUDA; skipped without a GPU."""
    if not torch.cuda.is_available():
        log("  not measured: no GPU in this session (run `python benchmarks/run.py --gpu` on a machine with CUDA)")
        return {"skipped": "no GPU in this session"}
    import capture
    import generation

    model = random_llama(sl)
    params = sum(p.numel() for p in model.hf_model.parameters())
    log(f"  {torch.cuda.get_device_name(0)}: random Llama, {params / 1e9:.2f}B parameters, bf16")
    comparisons = generation.run(sl, model, runs=runs, new_tokens=tokens, batches=(1, 8, 64), log=log)
    comparisons += capture.run(model, runs=runs, log=log)
    for c in comparisons:
        c.name = "gpu/" + c.name
    return {"device": torch.cuda.get_device_name(0), "parameters": params, "comparisons": comparisons}
