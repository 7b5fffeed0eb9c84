"""Step-wise do-interventions on reasoning steps, and causal-necessity metrics over them.

Each example is a prompt made of steps (token spans) and a gold answer that follows it. For every
step and mode, the step's hidden states are replaced, ``do(h := h̃)``, at the chosen site and
layers, and the teacher-forced answer is scored against the unedited run:

- ``zero``: ``h̃ = 0``; ``mean``: the global mean state (over every step token of every example);
  ``step_mean``: the mean of that step's states over examples (``μ_t``);
- ``add_noise``: ``h + N(0, σ²)``; ``noise``: ``N(0, σ²)``; ``mean_noise``: ``μ + N(0, σ²)``,
  with ``σ = 0.5 · mean‖h‖ / √d`` per layer (over the step tokens).

Metrics per example: greedy exactness of the answer (every answer token is the argmax under
teacher forcing) before/after, ``Δ log p(gold)`` summed over the answer tokens, ``Δ log p`` of the
answer's final token, and ``KL(base ‖ edited)`` of the distribution over the answer's first token.
"""

from __future__ import annotations

import bisect

import pandas as pd
import torch

from ..errors import DataError, SteerlabError
from ..interventions import Patch
from ..models.tokens import check_texts
from ..sites import LAYER_KINDS, normalize_layers
from ._common import per_text, token_ids

MODES = ("zero", "mean", "step_mean", "add_noise", "noise", "mean_noise")
COLUMNS = ["text", "mode", "step", "start", "end", "correct_before", "correct_after", "logp_before", "logp_after",
           "dlogp_gold", "dlogp_final", "kl"]


def step_spans(model, prompts, sep: str = "\n", chat: bool = False) -> list[list[tuple[int, int]]]:
    """Token spans ``[start, end)`` of the steps of each prompt, split at ``sep`` (kept with its step).

    Uses the tokenizer's character offsets; empty steps are dropped.
    """
    prompts = check_texts(prompts, "prompts")
    if chat:
        raise SteerlabError("step_spans works on raw prompts (chat=False); give spans by hand for templated prompts")
    out = []
    for text in prompts:
        bounds, pos = [], 0
        while (found := text.find(sep, pos)) >= 0:
            pos = found + len(sep)
            bounds.append(pos)
        spans: list[list[int]] = []
        last_step = None
        offsets = model.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        for j, (begin, end) in enumerate(offsets):
            if end <= begin:  # special tokens (BOS) have no characters
                continue
            step = bisect.bisect_right(bounds, begin)
            if step == last_step:
                spans[-1][1] = j + 1
            else:
                spans.append([j, j + 1])
                last_step = step
        out.append([(a, b) for a, b in spans])
    return out


def _joint_ids(model, prompts, gold, chat) -> tuple[list[list[int]], list[int]]:
    """Token ids of prompt + gold and where the answer starts; the prompt's tokens must be a prefix."""
    full = token_ids(model, [p + g for p, g in zip(prompts, gold)], chat)
    alone = token_ids(model, prompts, chat)
    for i, (a, f) in enumerate(zip(alone, full)):
        if f[: len(a)] != a or len(f) == len(a):
            raise SteerlabError(f"gold[{i}]={gold[i]!r} does not tokenise as a continuation of prompt {i}; "
                                "start it with a space or end the prompt with one, so the prompt's tokens stay a prefix")
    return full, [len(a) for a in alone]


def _stats(acts, spans, layers, kind, prompt_len):
    """Per layer: global mean, per-step means, and σ = 0.5 · mean‖h‖ / √d over every step token."""
    n_steps = max(len(s) for s in spans)
    out = {}
    for layer in layers:
        states = acts[f"layers.{layer}.{kind}"]
        every = torch.cat([states[i][a:b].flatten(1) for i, row in enumerate(spans) for a, b in row])
        steps = []
        for t in range(n_steps):
            rows = [states[i][row[t][0]:row[t][1]].flatten(1) for i, row in enumerate(spans) if len(row) > t]
            steps.append(torch.cat(rows).mean(0))
        d = every.shape[-1]
        out[layer] = {"mean": every.mean(0), "steps": steps, "sigma": 0.5 * float(every.norm(dim=-1).mean()) / d ** 0.5}
    return out


def _value(mode, h, stats, step, gen):
    shape = h.shape
    noise = lambda: torch.randn(shape, generator=gen) * stats["sigma"]
    if mode == "zero":
        return torch.zeros(shape)
    if mode == "mean":
        return stats["mean"].expand(shape).clone()
    if mode == "step_mean":
        return stats["steps"][step].expand(shape).clone()
    if mode == "add_noise":
        return h + noise()
    if mode == "noise":
        return noise()
    return stats["mean"].expand(shape) + noise()


def step_interventions(model, prompts, gold, spans, modes=("zero", "mean", "step_mean", "add_noise"),
                       site: str = "resid_pre", layers=None, seed: int = 0, chat: bool = False, batch_size: int = 8,
                       progress: bool | None = None) -> pd.DataFrame:
    """Replace each step's states (``spans[i]``: token spans of prompt ``i``) in every ``mode`` and score ``gold``.

    ``site``/``layers``: where the step is replaced (default ``resid_pre`` at every layer, so later
    tokens see the step only through the replaced states). Returns one row per (text, mode, step);
    ``necessity_metrics`` summarises it.
    """
    prompts = check_texts(prompts, "prompts")
    gold = per_text(gold, len(prompts), "gold")
    if site not in LAYER_KINDS:
        raise SteerlabError(f"site={site!r} must be a per-layer kind: {', '.join(LAYER_KINDS)}")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise SteerlabError(f"modes={list(modes)!r} is not allowed; choose from {', '.join(MODES)}")
    if len(spans) != len(prompts):
        raise SteerlabError(f"spans has {len(spans)} entries but there are {len(prompts)} prompts; give one list per prompt")
    layer_list = normalize_layers(layers, model.n_layers)
    full_ids, prompt_len = _joint_ids(model, prompts, gold, chat)
    for i, row in enumerate(spans):
        if not row:
            raise DataError(f"spans[{i}] is empty; give at least one (start, end) token span")
        for a, b in row:
            if not 0 <= a < b <= prompt_len[i]:
                raise SteerlabError(f"spans[{i}] has ({a}, {b}); spans must lie in the prompt's tokens 0..{prompt_len[i]}")
    texts = [p + g for p, g in zip(prompts, gold)]
    base = model.capture(texts, sites=[f"layers.{l}.{site}" for l in layer_list] + ["logits"], positions="all",
                         chat=chat, batch_size=batch_size, progress=False)
    stats = _stats(base, spans, layer_list, site, prompt_len)
    gen = torch.Generator().manual_seed(seed)
    jobs, recipes = [], []
    for mode in modes:
        for i, row in enumerate(spans):
            for t, (a, b) in enumerate(row):
                value = {l: _value(mode, base[f"layers.{l}.{site}"][i][a:b].flatten(1), stats[l], t, gen)
                         for l in layer_list}
                recipes.append(Patch(value, layers=layer_list, site=site, positions=list(range(a, b))))
                jobs.append((i, mode, t, a, b))
    edited = model.capture([texts[j[0]] for j in jobs], sites="logits", positions="all", chat=chat,
                           batch_size=batch_size, steering=recipes, progress=progress)["logits"]
    rows = []
    for k, (i, mode, t, a, b) in enumerate(jobs):
        before = _answer_scores(base["logits"][i], full_ids[i], prompt_len[i])
        after = _answer_scores(edited[k], full_ids[i], prompt_len[i])
        first_b, first_a = before["first"], after["first"]
        rows.append({"text": i, "mode": mode, "step": t, "start": a, "end": b,
                     "correct_before": before["correct"], "correct_after": after["correct"],
                     "logp_before": before["logp"], "logp_after": after["logp"],
                     "dlogp_gold": after["logp"] - before["logp"], "dlogp_final": after["final"] - before["final"],
                     "kl": float((first_b.exp() * (first_b - first_a)).sum())})
    return pd.DataFrame(rows, columns=COLUMNS)


def _answer_scores(logits: torch.Tensor, ids: list[int], start: int) -> dict:
    """Teacher-forced scores of the answer tokens ``ids[start:]`` from per-position logits ``[T, vocab]``."""
    logp = logits[start - 1 : len(ids) - 1].float().log_softmax(-1)
    answer = torch.tensor(ids[start:])
    token_logp = logp.gather(1, answer[:, None])[:, 0]
    return {"correct": bool((logp.argmax(-1) == answer).all()), "logp": float(token_logp.sum()),
            "final": float(token_logp[-1]), "first": logp[0]}


def necessity_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """Per (mode, step): accuracy before and after the edit, flip rates (correct→wrong among the
    examples correct before; wrong→correct among those wrong before; NaN when there are none),
    mean ``Δ log p(gold)``, mean ``Δ log p`` of the final gold token and mean KL."""
    if table.empty:
        raise DataError("the do-intervention table is empty")
    before, after = table["correct_before"].astype(bool), table["correct_after"].astype(bool)
    t = table.assign(c2w=(before & ~after).astype(float).where(before),
                     w2c=(~before & after).astype(float).where(~before))
    out = t.groupby(["mode", "step"], sort=False).agg(
        accuracy_before=("correct_before", "mean"), accuracy=("correct_after", "mean"),
        flip_correct_to_wrong=("c2w", "mean"), flip_wrong_to_correct=("w2c", "mean"),
        dlogp_gold=("dlogp_gold", "mean"), dlogp_final=("dlogp_final", "mean"), kl=("kl", "mean"),
        n=("text", "size")).reset_index()
    return out
