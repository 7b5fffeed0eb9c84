"""Efficiency steering: a direction that shortens reasoning, built from the model's own concise and verbose
answers to the same training questions (difference of their mean activations over each answer's own
tokens after the first), then added while the model reasons. ``sl.evaluate.efficiency_sweep`` measures it.

The answers are read back alone (no prompt, no chat template), so the direction contrasts the style
of the two traces rather than the two instructions that produced them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import SteerlabError
from .tasks import load_task

#: the instructions that produce the two kinds of traces (the task's own question comes first)
CONCISE = "Give only the final answer, as briefly as possible."
VERBOSE = "Think step by step in detail, explaining every step, then finish with 'Answer: ' and the final answer."
#: default strengths of the sweep (multiples of the raw mean-difference vector)
STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0)


@dataclass
class ContrastTraces:
    """Greedy answers to the same questions under ``CONCISE`` and ``VERBOSE``, with their token counts."""

    questions: list[str]
    concise: list[str]
    verbose: list[str]
    concise_tokens: list[int]
    verbose_tokens: list[int]


def contrast_traces(model, task: str = "basic_arithmetic", questions: int = 32, first: int = 0, seed: int = 0,
                    max_new_tokens: int = 128) -> ContrastTraces:
    """Generate the concise and the verbose answer (greedy) to questions ``first .. first + questions``
    of ``task``; pairs where either answer is empty are dropped."""
    from ..models.generate import generate

    if not isinstance(questions, int) or questions < 1:
        raise SteerlabError(f"questions must be a positive integer, got {questions!r}")
    data = load_task(task, first + questions, seed)
    qs = data.questions[first:]
    prompts = [f"{q}\n{CONCISE}" for q in qs] + [f"{q}\n{VERBOSE}" for q in qs]
    out = generate(model, prompts, max_new_tokens=max_new_tokens)
    n = len(qs)
    keep = [i for i in range(n) if out.texts[i].strip() and out.texts[n + i].strip()]
    if not keep:
        raise SteerlabError("every concise or verbose answer was empty; no traces to contrast")
    return ContrastTraces([qs[i] for i in keep], [out.texts[i] for i in keep], [out.texts[n + i] for i in keep],
                          [len(out.tokens[i]) for i in keep], [len(out.tokens[n + i]) for i in keep])


def efficiency_direction(model, traces: ContrastTraces, layers: Sequence[int] | int | None = None):
    """``mean(concise) - mean(verbose)`` per layer of ``resid_post``, each answer's activations averaged
    over its tokens *after the first*; adding it with a positive strength pushes towards the concise style.

    The first token of any text holds the attention sink's outsized activations (thousands in norm in
    SmolLM2); a plain mean would weight it by 1/length, so the short concise answers would carry it far
    more than the verbose ones and the direction would be mostly that artefact (measured: norm 2,516 at
    layer 15 of SmolLM2 with it). Answers of one token are left out.
    """
    from ..directions import Direction
    from ..directions.estimators import mean_diff_from

    n_layers = model.bound.n_layers
    if layers is None:
        chosen = list(range(n_layers))
    else:
        chosen = [int(x) % n_layers for x in ([layers] if isinstance(layers, int) else layers)]
    keep = [i for i in range(len(traces.questions))
            if min(len(model.tokenizer(t)["input_ids"]) for t in (traces.concise[i], traces.verbose[i])) >= 2]
    if not keep:
        raise SteerlabError("every concise or verbose answer is a single token; nothing to average after the first")
    texts = [traces.concise[i] for i in keep] + [traces.verbose[i] for i in keep]
    acts = model.capture(texts, "resid_post", layers=chosen, positions="all", chat=False, progress=False)
    means = []
    for layer in chosen:
        rows = acts[f"layers.{layer}.resid_post"]
        means.append(torch.stack([r[1:].double().mean(0) for r in rows]))  # [texts, d]
    stacked = torch.stack(means, 1)  # [texts, L, d]
    n = len(keep)
    vectors = mean_diff_from(stacked[:n], stacked[n:])
    return Direction(vectors.float(), chosen, meta={
        "method": "efficiency (concise - verbose answers, mean over tokens after the first)", "site": "resid_post",
        "pairs": n, "concise_tokens": [traces.concise_tokens[i] for i in keep],
        "verbose_tokens": [traces.verbose_tokens[i] for i in keep]})


def efficiency_method(direction, layer: int, strengths: Sequence[float] = STRENGTHS):
    """The direction as a method for ``sl.evaluate.sweep``: ``Add(direction, alpha=s)`` at ``layer``
    (strength 0: the unsteered model)."""
    from ..interventions import Add, Steering
    from ..recipes import Fitted

    if layer not in direction.layers:
        raise SteerlabError(f"layer {layer} is not in the direction (it has {direction.layers})")

    def build(strength: float) -> Steering | None:
        return Steering([Add(direction, alpha=strength, layers=[layer])])

    return Fitted("efficiency", "alpha", tuple(float(s) for s in strengths), build,
                  {"layer": layer, "source": "concise - verbose answers, mean over tokens"})


__all__ = ["CONCISE", "STRENGTHS", "VERBOSE", "ContrastTraces", "contrast_traces", "efficiency_direction",
           "efficiency_method"]
