"""steerlab on the peers' tasks, through the same job protocol (run in steerlab's own environment)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from common import Job, stacked

job = Job(sys.argv[1])
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
import steerlab as sl

model = sl.load(job.spec["model_dir"], device="cpu", dtype=torch.float32)
hf, tok = model.hf_model, model.tokenizer
n = model.n_layers
for task in job.spec["tasks"]:
    if task.startswith("gen_"):
        batch = 1 if task.endswith("b1") else 8
        prompts = job.prompts(batch)
        if task == "gen_rows_b8":
            v = stacked(job, 8)
            steering = [sl.Steering([sl.Add({k: v[b, k] for k in range(n)})]) for b in range(8)]
        else:
            v = stacked(job)
            steering = sl.Steering([sl.Add({k: v[k] for k in range(n)})])

        def steered(prompts=prompts, steering=steering):
            return model.generate(prompts, steering=steering, max_new_tokens=job.tokens, min_new_tokens=job.tokens)

        job.keep(task, torch.tensor(steered().tokens))
        job.time(task, job.plain_generate(hf, tok, batch), steered, work=batch * job.tokens)
    elif task in ("capture_all", "capture_half"):
        layers = list(range(n)) if task == "capture_all" else list(range(n // 2))
        texts = job.spec["texts"]

        def captured(layers=layers, texts=texts):
            acts = model.capture(texts, sites="resid_post", layers=layers, batch_size=16, progress=False)
            return acts.stack("resid_post")

        job.keep(task, captured())
        job.time(task, job.plain_capture(hf, tok, layers), captured, work=len(texts))
    else:
        job.cannot(task, "not implemented")
job.finish("steerlab", sl.__version__)
