"""What every peer script shares: the job file, the model, plain baselines, timing and the report.

A peer script runs inside that peer's own venv (no steerlab there): ``python <peer>_bench.py
job.json``. The job names the model folder, prompts, texts, steering vectors (a safetensors file),
the tasks and where to write the result. Each task is timed against the same library stack's
plain transformers baseline, alternating (``benchmarks/timing.py``); outputs (generated tokens,
captured activations) are saved so the parent can compare libraries with each other.

Tasks (a peer implements those it can; the rest are reported with the reason):
- ``gen_add_b1`` / ``gen_add_b8``: ``+ alpha * v[layer]`` at every decoder layer's output, every
  token, greedy generation of ``tokens`` new tokens, batch 1 / 8.
- ``gen_rows_b8``: batch 8 where row ``b`` adds its own vector ``v[b, layer]`` (8 recipes in one batch).
- ``capture_all`` / ``capture_half``: every layer's (first half's) output at the last token of each
  text, batch 16, against a plain forward with ``output_hidden_states=True``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from safetensors.torch import load_file, save_file

from timing import paired, rounds

GEN_TASKS = ("gen_add_b1", "gen_add_b8", "gen_rows_b8")
CAPTURE_TASKS = ("capture_all", "capture_half")


class Job:
    """The parsed job file plus the loaded model, tokenizer and vectors."""

    def __init__(self, path: str):
        self.spec = json.loads(Path(path).read_text())
        torch.set_num_threads(int(self.spec["threads"]))
        self.out = Path(self.spec["out"])
        self.out.mkdir(parents=True, exist_ok=True)
        self.vectors = load_file(self.spec["vectors"])["v"]  # [8, n_layers, d]
        self.alpha = float(self.spec["alpha"])
        self.tokens = int(self.spec["tokens"])
        self.runs = int(self.spec["runs"])
        self.results: dict = {}
        self.pending: dict = {}  # baseline key -> {"baseline": fn, "tasks": {task: (fn, work, note)}}
        self.saved: dict[str, torch.Tensor] = {}

    def load_hf(self, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.spec["model_dir"])
        model = AutoModelForCausalLM.from_pretrained(self.spec["model_dir"], torch_dtype=torch.float32, **kwargs)
        return model.eval(), tok

    def prompts(self, batch: int) -> list[str]:
        return self.spec["prompts"][:batch]

    def chat(self, tok, prompts: list[str]):
        """Left-padded chat-templated ids, the same way for every library."""
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                 for p in prompts]
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return encode(tok, texts, add_special_tokens=False)

    def gen_kwargs(self, tok) -> dict:
        return {"max_new_tokens": self.tokens, "min_new_tokens": self.tokens, "do_sample": False,
                "pad_token_id": tok.pad_token_id, "temperature": None, "top_p": None, "top_k": None}

    def plain_generate(self, model, tok, batch: int):
        enc = self.chat(tok, self.prompts(batch))

        def run():
            with torch.inference_mode():
                return model.generate(**enc, **self.gen_kwargs(tok))

        run.key = f"generate/b{batch}"  # tasks with the same baseline share its runs
        return run

    def text_batches(self, tok, size: int = 16):
        """The job's texts in right-padded batches: ``(enc, rows, last)`` with each row's index and
        the position of its last real token (every library's capture reads these)."""
        tok.padding_side = "right"
        texts = self.spec["texts"]
        for begin in range(0, len(texts), size):
            enc = encode(tok, texts[begin : begin + size])
            last = enc.attention_mask.sum(1) - 1
            yield enc, torch.arange(len(last)), last

    def plain_capture(self, model, tok, layers: list[int]):
        """Plain ``output_hidden_states`` capture of ``layers`` at the last token, batch 16, bare decoder."""
        base = model.model

        def run():
            parts = []
            for enc, rows, last in self.text_batches(tok):
                with torch.inference_mode():
                    out = base(**enc, output_hidden_states=True, use_cache=False)
                parts.append(torch.stack([out.hidden_states[k + 1][rows, last] for k in layers], 1))
            return torch.cat(parts)

        run.key = f"capture/{len(layers)}"
        return run

    def time(self, task: str, baseline, candidate, work: float, note: str = "") -> None:
        """Queue ``candidate`` against ``baseline``; ``finish`` times every queue in alternating rounds,
        one baseline run per round serving every task that shares it (same ``baseline.key``)."""
        key = getattr(baseline, "key", task)
        group = self.pending.setdefault(key, {"baseline": baseline, "tasks": {}})
        group["tasks"][task] = (candidate, work, note)

    def _run_pending(self) -> None:
        for group in self.pending.values():
            fns = {"__baseline__": group["baseline"], **{t: c for t, (c, _, _) in group["tasks"].items()}}
            # the candidates have run once already (their outputs were kept): warm the baseline only
            times = rounds(fns, self.runs, warmup=lambda name, fns=fns: fns[name]() if name == "__baseline__" else None)
            for task, (_, work, note) in group["tasks"].items():
                cmp = paired(task, times, "__baseline__", task, work=work, note=note)
                self.results[task] = cmp.summary()
                print(f"  {task}: {cmp.ratio:.3f}x ({min(cmp.ratios):.2f}-{max(cmp.ratios):.2f})", flush=True)
        self.pending.clear()

    def cannot(self, task: str, reason: str) -> None:
        self.results[task] = reason
        print(f"  {task}: {reason}", flush=True)

    def keep(self, name: str, value: torch.Tensor) -> None:
        """Save an output (tokens, activations) for the cross-library comparison."""
        self.saved[name] = value.detach().to("cpu").contiguous()

    def finish(self, library: str, version: str) -> None:
        import transformers

        self._run_pending()
        if self.saved:
            save_file(self.saved, str(self.out / "outputs.safetensors"))
        (self.out / "result.json").write_text(json.dumps({
            "library": library, "version": version, "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "tasks": self.results, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, indent=1))


def encode(tok, texts: list[str], **kwargs):
    """Padded ids and attention mask only (v4 fast tokenizers add ``token_type_ids``, which Llama refuses)."""
    enc = tok(texts, return_tensors="pt", padding=True, **kwargs)
    enc.pop("token_type_ids", None)
    return enc


def new_tokens(output: torch.Tensor, enc) -> torch.Tensor:
    """The generated part of ``generate``'s output."""
    return output[:, enc.input_ids.shape[1]:]


def stacked(job: Job, rows: int | None = None) -> torch.Tensor:
    """``alpha * v`` as ``[n_layers, d]`` (the same for all rows) or ``[rows, n_layers, d]``."""
    if rows is None:
        return job.alpha * job.vectors[0]
    return job.alpha * job.vectors[:rows]
