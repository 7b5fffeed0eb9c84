"""steering-vectors (SteeringVector.apply adds per-layer vectors through forward hooks; record_activations)."""

from __future__ import annotations

import sys

import torch
from common import Job, new_tokens, stacked

job = Job(sys.argv[1])
from importlib.metadata import version

from steering_vectors import SteeringVector, record_activations

model, tok = job.load_hf()
n = model.config.num_hidden_layers
for task in job.spec["tasks"]:
    if task in ("gen_add_b1", "gen_add_b8"):
        batch = 1 if task.endswith("b1") else 8
        enc = job.chat(tok, job.prompts(batch))
        v = stacked(job)
        sv = SteeringVector({layer: v[layer] for layer in range(n)}, layer_type="decoder_block")

        def steered(enc=enc, sv=sv):
            with sv.apply(model), torch.inference_mode():
                return model.generate(**enc, **job.gen_kwargs(tok))

        job.keep(task, new_tokens(steered(), enc))
        job.time(task, job.plain_generate(model, tok, batch), steered, work=batch * job.tokens)
    elif task == "gen_rows_b8":
        job.cannot(task, "one vector per layer for the whole batch (no per-row recipes)")
    elif task in ("capture_all", "capture_half"):
        layers = list(range(n)) if task == "capture_all" else list(range(n // 2))
        texts = job.spec["texts"]

        def captured(layers=layers):
            parts = []
            for enc, rows, last in job.text_batches(tok):
                with record_activations(model, layer_type="decoder_block", layer_nums=layers) as rec, \
                        torch.inference_mode():
                    model(**enc)  # no early stop: the whole model runs
                parts.append(torch.stack([rec[k][0][rows, last] for k in layers], 1))
            return torch.cat(parts)

        job.keep(task, captured())
        job.time(task, job.plain_capture(model, tok, layers), captured, work=len(texts),
                 note="record_activations keeps every token of every layer; the forward pass does not stop early")
    else:
        job.cannot(task, "not implemented")
job.finish("steering-vectors", version("steering-vectors"))
