"""Load checkpoints with plain transformers (no steerlab) and record logits and greedy tokens.

Run as ``python plain_transformers.py JOB.json OUT.pt`` by the bake tests, in a fresh process:
JOB is a list of ``{"dir", "texts", "prompts", "max_new_tokens"}``. For each checkpoint it writes
the next-token logits of every text (one text at a time, no padding) and the greedy tokens
generated for every prompt (up to and excluding EOS). It fails if steerlab got imported.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def run(job: dict) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(job["dir"])
    # eager attention, as the steered tiny models use: older transformers run Gemma 2's soft-capped
    # attention through SDPA by default, which ignores the cap and would differ from the reference
    model = AutoModelForCausalLM.from_pretrained(job["dir"], dtype=torch.float32,
                                                 attn_implementation=job.get("attn", "eager")).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    logits, tokens = [], []
    with torch.inference_mode():
        for text in job["texts"]:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            logits.append(model(input_ids=ids).logits[0, -1].float())
        for prompt in job["prompts"]:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=job["max_new_tokens"], pad_token_id=tokenizer.pad_token_id
                                 if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
            row = []
            for t in out[0, ids.shape[1]:].tolist():
                if t in eos:
                    break
                row.append(t)
            tokens.append(row)
    return {"logits": torch.stack(logits), "tokens": tokens, "config": model.config.to_dict()}


def in_fresh_process(jobs: list[dict], workdir) -> dict:
    """Run ``jobs`` through this script in a new Python process (no steerlab on its path) and load the results."""
    workdir = Path(workdir)
    job_file, out_file = workdir / "jobs.json", workdir / "results.pt"
    job_file.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([sys.executable, __file__, str(job_file), str(out_file)], env=env, cwd=str(workdir),
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"plain transformers run failed:\n{done.stderr[-3000:]}")
    return torch.load(out_file, weights_only=False)


if __name__ == "__main__":
    jobs = json.loads(Path(sys.argv[1]).read_text())
    results = {job["dir"]: run(job) for job in jobs}
    assert not any(name == "steerlab" or name.startswith("steerlab.") for name in sys.modules), "steerlab was imported"
    torch.save(results, sys.argv[2])
