"""``audit``: sample N traced answers per question, compute every signal, score every selector against
majority vote on held-out questions, and write ``selection.csv``, ``signals.csv``, ``results.json``,
figures and ``report.html``."""

from __future__ import annotations

import random
import time
from pathlib import Path

from ..errors import SteerlabError
from ..io import save_folder, write_json
from ..progress import bar
from .evaluation import Record, evaluate
from .probe import features
from .signals import WINDOW, confidence_signals, lt_per_layer, lt_prefix, token_confidence
from .stopping import KEEP
from .tasks import answer_end, extract, load_task
from .traces import SEGMENT, TOP_K, sample

MARKER, FORMAT = "results.json", "steerlab-audit-1"

def collect(model, task: str, questions: int, samples: int, seed: int = 0, segment: int = SEGMENT,
            max_new_tokens: int = 128, temperature: float = 0.7, top_k: int = TOP_K, batch: int = 64,
            window: int = WINDOW, progress: bool | None = None, first: int = 0) -> list[Record]:
    """Sample ``samples`` traced answers to each of ``questions`` questions of ``task`` and score them.

    ``first``: index of the first question (a later chunk of the same seeded question list samples the
    same questions with the same seeds as one long call with the same ``batch``). A model without a
    chat template (a base model) gets the task's worked examples before each question and its
    samples end at their answer line (``tasks.few_shot_prompt``, ``tasks.answer_end``)."""
    from ..models.tokens import has_chat_template

    if not isinstance(samples, int) or samples < 1:
        raise SteerlabError(f"--samples must be a positive integer, got {samples!r}")
    data = load_task(task, first + questions, seed)
    per_call = max(1, batch // samples)
    base = not has_chat_template(model.tokenizer)
    texts = data.few_shot_prompts if base else data.prompts
    end = answer_end(model.tokenizer) if base else None
    records: list[Record] = []
    with bar(f"audit {task}", questions, progress) as advance:
        for begin in range(first, first + questions, per_call):
            qs = list(range(begin, min(begin + per_call, first + questions)))
            prompts = [texts[q] for q in qs for _ in range(samples)]
            traces = sample(model, prompts, segment=segment, top_k=top_k, max_new_tokens=max_new_tokens,
                            temperature=temperature, seed=seed * 100_003 + begin, end=end)
            for i, trace in enumerate(traces):
                q = qs[i // samples]
                answer = extract(trace.text)
                sig = {name: float(v.mean()) for name, v in lt_per_layer(trace.segments).items()}
                sig.update(confidence_signals(trace.top_logprobs, window))
                sig["length"] = float(len(trace))
                records.append(Record(q, i % samples, answer, data.score(q, answer), trace.tokens, sig,
                                      {k: v.numpy() for k, v in lt_per_layer(trace.segments).items()},
                                      features(trace, window), token_confidence(trace.top_logprobs).numpy(),
                                      lt_prefix=lt_prefix(trace.segments).numpy(), segment=segment))
            advance(len(qs))
    return records

def audit(model, task: str, questions: int, samples: int, out: str | Path, seed: int = 0,
          calibration: float = 0.3, segment: int = SEGMENT, max_new_tokens: int = 128, temperature: float = 0.7,
          window: int = WINDOW, keep: float = KEEP, batch: int = 64, overwrite: bool = False,
          progress: bool | None = None) -> dict:
    """Run the whole audit and write it to ``out``; returns the results (also in ``results.json``)."""
    if not 0 < calibration < 1:
        raise SteerlabError(f"--calibration must be a share in (0, 1), got {calibration!r}")
    if questions < 4:
        raise SteerlabError(f"--questions must be at least 4 (calibration and test splits), got {questions!r}")
    started = time.time()
    records = collect(model, task, questions, samples, seed, segment, max_new_tokens, temperature, batch=batch,
                      window=window, progress=progress)
    generation_s = time.time() - started
    order = list(range(questions))
    random.Random(seed).shuffle(order)
    cal = set(order[: max(1, round(calibration * questions))])
    rows, aurocs, settings = evaluate(records, cal, lambda t: model.tokenizer.decode(t, skip_special_tokens=True),
                                      window, keep, seed)
    results = {"format": FORMAT, "model": model.name, "task": task, "questions": questions, "samples": samples,
               "seed": seed, "calibration": calibration, "segment": segment, "max_new_tokens": max_new_tokens,
               "temperature": temperature, "window": window, "keep": keep, "generation_s": round(generation_s, 1),
               "total_s": round(time.time() - started, 1), **settings, "selection": rows, "signals": aurocs}

    def fill(folder: Path) -> None:
        from .report import write_report

        write_report(folder, results, records)
        write_json(folder / MARKER, results)

    save_folder(out, fill, marker=MARKER, format=FORMAT, overwrite=overwrite, what="audit")
    return results

def majority_row(results: dict) -> dict:
    """The ``majority`` row of ``results["selection"]``."""
    return next(r for r in results["selection"] if r["selector"] == "majority")

def tokens_saved(results: dict, selector: str) -> float:
    """Tokens saved by ``selector`` relative to majority vote over all samples, in percent."""
    row = next(r for r in results["selection"] if r["selector"] == selector)
    return float(100.0 * (1.0 - row["tokens"] / majority_row(results)["tokens"]))

__all__ = ["audit", "collect", "majority_row", "tokens_saved"]
