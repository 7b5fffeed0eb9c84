"""nnsight (interventions written inside a trace; ``tracer.all()`` repeats them at every generation step)."""

from __future__ import annotations

import sys

import torch
from common import Job, new_tokens, stacked

job = Job(sys.argv[1])
from importlib.metadata import version

from nnsight import LanguageModel

model, tok = job.load_hf()
lm = LanguageModel(model, tokenizer=tok)
n = model.config.num_hidden_layers
for task in job.spec["tasks"]:
    if task.startswith("gen_"):
        batch = 1 if task.endswith("b1") else 8
        enc = job.chat(tok, job.prompts(batch))
        v = stacked(job, 8)[:, :, None, :] if task == "gen_rows_b8" else stacked(job)  # [8, L, 1, d] or [L, d]

        def steered(enc=enc, v=v, rows=task == "gen_rows_b8"):
            with lm.generate(dict(enc), **job.gen_kwargs(tok)) as tracer:
                for _ in tracer.iter[: job.tokens]:  # one forward per new token (min_new_tokens pins it)
                    for layer in range(n):
                        out = lm.model.layers[layer].output
                        lm.model.layers[layer].output = out + (v[:, layer] if rows else v[layer])
                ids = tracer.result.save()
            return ids

        job.keep(task, new_tokens(steered(), enc))
        job.time(task, job.plain_generate(model, tok, batch), steered, work=batch * job.tokens)
    elif task in ("capture_all", "capture_half"):
        layers = list(range(n)) if task == "capture_all" else list(range(n // 2))
        texts = job.spec["texts"]

        def captured(layers=layers):
            parts = []
            for enc, rows, last in job.text_batches(tok):
                saved = []  # filled inside the trace (a shared list survives the early stop)
                with lm.trace(dict(enc)) as tracer:
                    for k in layers:
                        saved.append(lm.model.layers[k].output[rows, last].save())
                    tracer.stop()  # the run stops after the deepest requested layer
                parts.append(torch.stack([torch.as_tensor(t) for t in saved], 1))
            return torch.cat(parts)

        job.keep(task, captured())
        job.time(task, job.plain_capture(model, tok, layers), captured, work=len(texts))
    else:
        job.cannot(task, "not implemented")
job.finish("nnsight", version("nnsight"))
