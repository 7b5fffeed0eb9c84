"""repeng (ControlModel wraps decoder layers and adds a control vector to their outputs)."""

from __future__ import annotations

import sys

from common import CAPTURE_TASKS, Job, new_tokens, stacked

job = Job(sys.argv[1])
from importlib.metadata import version

from repeng import ControlModel

plain, tok = job.load_hf()
wrapped, _ = job.load_hf()  # repeng replaces the layers of the model it wraps: keep a plain copy
n = plain.config.num_hidden_layers
cm = ControlModel(wrapped, list(range(n)))
for task in job.spec["tasks"]:
    if task in ("gen_add_b1", "gen_add_b8", "gen_rows_b8"):
        batch = 1 if task.endswith("b1") else 8
        enc = job.chat(tok, job.prompts(batch))
        if task == "gen_rows_b8":  # a [B, 1, d] raw control broadcasts over rows (not a documented feature)
            v = stacked(job, 8)
            control = {layer: v[:, layer][:, None, :] for layer in range(n)}
        else:
            v = stacked(job)
            control = {layer: v[layer] for layer in range(n)}

        def steered(enc=enc, control=control):
            cm.set_raw_control(control)
            try:
                import torch

                with torch.inference_mode():
                    return cm.generate(**enc, **job.gen_kwargs(tok))
            finally:
                cm.reset()

        job.keep(task, new_tokens(steered(), enc))
        job.time(task, job.plain_generate(plain, tok, batch), steered, work=batch * job.tokens)
    elif task in CAPTURE_TASKS:
        job.cannot(task, "no capture API (its extraction calls output_hidden_states itself)")
    else:
        job.cannot(task, "not implemented")
job.finish("repeng", version("repeng"))
