"""TransformerLens 4.x (TransformerBridge over the transformers model; hook points such as
``blocks.{i}.hook_resid_post``; its own generation loop)."""

from __future__ import annotations

import sys

import torch
from common import Job, new_tokens, stacked

job = Job(sys.argv[1])
from importlib.metadata import version

from transformer_lens.model_bridge import TransformerBridge

model, tok = job.load_hf()  # the plain baseline (transformers' default attention)
bridge = TransformerBridge.boot_transformers(job.spec["model_dir"], device="cpu", dtype=torch.float32,
                                             tokenizer=tok)
bridge.eval()
n = model.config.num_hidden_layers


def add_hooks(v, rows: bool):
    def make(layer):
        delta = v[:, layer] if rows else v[layer]
        return lambda x, hook: x + delta

    return [(f"blocks.{layer}.hook_resid_post", make(layer)) for layer in range(n)]


for task in job.spec["tasks"]:
    if task.startswith("gen_"):
        batch = 1 if task.endswith("b1") else 8
        enc = job.chat(tok, job.prompts(batch))
        rows = task == "gen_rows_b8"
        v = stacked(job, 8)[:, :, None, :] if rows else stacked(job)
        hooks = add_hooks(v, rows)

        def steered(enc=enc, hooks=hooks):
            with bridge.hooks(fwd_hooks=hooks), torch.inference_mode():
                return bridge.generate(enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=job.tokens,
                                       stop_at_eos=False, do_sample=False, use_past_kv_cache=True,
                                       return_type="tokens", verbose=False)

        job.keep(task, new_tokens(steered(), enc))
        job.time(task, job.plain_generate(model, tok, batch), steered, work=batch * job.tokens,
                 note="TransformerBridge runs eager attention (forced, so hooks can see patterns)")
    elif task in ("capture_all", "capture_half"):
        layers = list(range(n)) if task == "capture_all" else list(range(n // 2))
        texts = job.spec["texts"]
        names = [f"blocks.{k}.hook_resid_post" for k in layers]

        def captured(layers=layers, names=names):
            parts = []
            for enc, rows, last in job.text_batches(tok):
                with torch.inference_mode():
                    _, cache = bridge.run_with_cache(enc.input_ids, attention_mask=enc.attention_mask,
                                                     names_filter=names, stop_at_layer=max(layers) + 1)
                parts.append(torch.stack([cache[name][rows, last] for name in names], 1))
            return torch.cat(parts)

        job.keep(task, captured())
        job.time(task, job.plain_capture(model, tok, layers), captured, work=len(texts))
    else:
        job.cannot(task, "not implemented")
job.finish("transformer-lens", version("transformer-lens"))
