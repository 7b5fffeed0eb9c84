"""Target 1 (and 4): steered generation against plain ``hf_model.generate`` on the same inputs.

Greedy, ``max_new_tokens`` new tokens with ``min_new_tokens`` equal to it, so every run decodes
the same number of tokens whatever the steering does to EOS. The baseline tokenises the same
chat-templated prompts, calls ``generate`` and decodes, as a transformers user would.
"""

from __future__ import annotations

import torch

from timing import Comparison, clock, compare, compare_many
from workloads import GEN_PROMPTS, recipes

TARGETS = {"add": 0.97, "rotate": 0.95, "ablate": 0.95, "mixed8": 0.95}


def plain_generate(model, prompts: list[str], new_tokens: int):
    """A closure running plain transformers generation (tokenise, generate, decode) on ``prompts``."""
    tok = model.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    side = tok.padding_side
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def run():
        tok.padding_side = "left"
        try:
            enc = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True)
        finally:
            tok.padding_side = side
        with torch.inference_mode():
            out = model.hf_model.generate(**enc.to(model.device), max_new_tokens=new_tokens,
                                          min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad,
                                          temperature=None, top_p=None, top_k=None)
        return tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)

    return run


def steered_generate(model, prompts, steering, new_tokens: int, **kwargs):
    """A closure running ``model.generate`` with ``steering``."""
    return lambda: model.generate(prompts, steering=steering, max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, **kwargs)


def run(sl, model, runs: int = 5, new_tokens: int = 64, batches=(1, 8), log=print) -> list[Comparison]:
    """Every steering recipe at every batch size; ``mixed8`` (8 rows, 8 recipes) at batch 8 only."""
    made = recipes(sl, model.n_layers, model.d_model)
    results = []
    for batch in batches:
        prompts = GEN_PROMPTS[:batch] if batch <= len(GEN_PROMPTS) else \
            [GEN_PROMPTS[i % len(GEN_PROMPTS)] + f" ({i})" for i in range(batch)]
        names = [n for n in ("add", "rotate", "ablate", "mixed8") if n != "mixed8" or batch == 8]
        candidates = {n: steered_generate(model, prompts, made[n], new_tokens) for n in names}
        warm = {n: steered_generate(model, prompts, made[n], 2) for n in names}
        warm["__baseline__"] = plain_generate(model, prompts, 2)
        got = compare_many(f"generate/b{batch}", plain_generate(model, prompts, new_tokens), candidates,
                           runs=runs, work=batch * new_tokens, unit="token", targets=TARGETS,
                           note=f"greedy, {new_tokens} new tokens, batch {batch}, vs plain hf_model.generate",
                           warmup=lambda n, warm=warm: warm[n]())
        for cmp in got:
            log(cmp)
        results.extend(got)
    return results


def run_compiled(sl, model, runs: int = 5, new_tokens: int = 64, batch: int = 8, log=print) -> list[Comparison]:
    """Target 4: ``generate(compile=True)`` (steered, Add on every layer) against plain eager generate.

    The first compiled call (tracing and compiling) is timed on its own and reported separately.
    """
    made = recipes(sl, model.n_layers, model.d_model)
    prompts = GEN_PROMPTS[:batch]
    plain = plain_generate(model, prompts, new_tokens)
    fast = steered_generate(model, prompts, made["add"], new_tokens, compile=True)
    first = clock(fast)
    cmp = compare(f"generate/add/b{batch}/compile", plain, fast, runs=runs, work=batch * new_tokens, unit="token",
                  target=1.0, note=f"compile=True vs plain eager generate; first call (compiling) took {first:.1f}s")
    cmp.first_call = first  # type: ignore[attr-defined]
    log(cmp)
    return [cmp]
