"""Utility metrics: what steering costs the model elsewhere.

- ``Perplexity``: ``exp(mean NLL)`` of a fixed reference text (the bundled one by default), read as
  the assistant's reply to a fixed prompt, under the steered model.
- ``KL``: mean ``KL(unsteered ‖ steered)`` of the next-token distributions on neutral prompts, at the
  last prompt position and along the unsteered model's own greedy continuation.
- ``Fluency``: repetition rate (share of repeated n-grams within a generation) and distinct-1/2
  (unique n-grams over all n-grams of all generations of one recipe; Li et al. 2016).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from ..data import reference_text
from ..interventions import Steering
from ..models import Model
from ..models.tokens import context_length, encode
from .forward import continuation_logprobs
from .scorer import Generations, Scorer, mean, model_key


def ngrams(tokens: list, n: int) -> list[tuple]:
    """The n-grams of a token list, in order."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(token_lists: list[list], n: int) -> float:
    """Unique n-grams / all n-grams, pooled over ``token_lists`` (NaN when there are none)."""
    grams = [g for toks in token_lists for g in ngrams(list(toks), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repetition_rate(tokens: list, n: int = 3) -> float:
    """Share of a text's n-grams that already occurred earlier in it (NaN when it has none)."""
    grams = ngrams(list(tokens), n)
    if not grams:
        return float("nan")
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


class Fluency(Scorer):
    """Repetition rate (lower is better) and distinct-1/2 (higher is better) of the generations."""

    kind = "utility"
    columns: ClassVar[dict[str, bool | None]] = {"repetition": False, "distinct_1": True, "distinct_2": True}

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.n = n

    def score(self, model: Model, recipes: Sequence[Steering | None],
              generations: Generations) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {c: [] for c in self.columns}
        for toks in generations.tokens:
            out["repetition"].append(mean([repetition_rate(t, self.n) for t in toks]))
            out["distinct_1"].append(distinct_n(toks, 1))
            out["distinct_2"].append(distinct_n(toks, 2))
        return out


def _prompt_ids(model: Model, prompt: str) -> list[int]:
    chat = bool(getattr(model.tokenizer, "chat_template", None))
    return encode(model.tokenizer, [prompt], chat)[0]


class Perplexity(Scorer):
    """Perplexity of ``text`` (default: the bundled reference text) as the reply to ``prompt``.

    ``max_tokens`` keeps the first tokens of the text only (None: all of it); the text is also cut to
    fit the model's context after the prompt.
    """

    kind = "utility"
    columns: ClassVar[dict[str, bool | None]] = {"perplexity": False}

    def __init__(self, text: str | None = None, prompt: str = "Tell me about bread.", max_tokens: int | None = 256,
                 batch_size: int = 2) -> None:
        super().__init__()
        self.text = text
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.batch_size = batch_size

    def _ids(self, model: Model) -> tuple[list[int], list[int]]:
        def make() -> tuple[list[int], list[int]]:
            text = self.text if self.text is not None else reference_text()
            ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
            prompt = _prompt_ids(model, self.prompt)
            keep = self.max_tokens or len(ids)
            context = context_length(model)
            if context is not None:  # the reference text is ours to cut: it never overruns the model's context
                keep = min(keep, max(1, context - len(prompt)))
            return prompt, ids[:keep]
        return self.cached(("ids", model_key(model)), make)

    def _run(self, model: Model, recipes: Sequence[Steering | None]) -> list[float]:
        prompt, cont = self._ids(model)
        target = torch.tensor(cont)
        out = [float("nan")] * len(recipes)
        for row, logprobs in continuation_logprobs(model, [prompt] * len(recipes), [cont] * len(recipes), recipes,
                                                   self.batch_size):
            nll = -logprobs.gather(1, target[:, None]).mean()
            out[row] = float(nll.exp())
        return out

    def score(self, model: Model, recipes: Sequence[Steering | None],
              generations: Generations | None = None) -> dict[str, list[float]]:
        base = self.cached(("base", model_key(model)), lambda: self._run(model, [None])[0])
        steered = [r for r in recipes if r is not None]
        values = iter(self._run(model, steered) if steered else [])
        return {"perplexity": [base if r is None else next(values) for r in recipes]}


class KL(Scorer):
    """Mean ``KL(unsteered ‖ steered)`` over ``prompts`` and their unsteered greedy continuation
    (``continuation_tokens`` long, plus the last prompt position)."""

    kind = "utility"
    columns: ClassVar[dict[str, bool | None]] = {"kl": False}

    def __init__(self, prompts: list[str], continuation_tokens: int = 24, batch_size: int = 8) -> None:
        super().__init__()
        self.prompts = list(prompts)
        self.continuation_tokens = continuation_tokens
        self.batch_size = batch_size

    def _reference(self, model: Model) -> tuple[list[list[int]], list[list[int]], list[torch.Tensor]]:
        """The prompts' ids, their unsteered greedy continuations and the unsteered log-probs along them."""
        def make() -> tuple[list[list[int]], list[list[int]], list[torch.Tensor]]:
            gen = model.generate(self.prompts, max_new_tokens=self.continuation_tokens)
            eos = model.tokenizer.eos_token_id
            conts = [t if t else [eos if eos is not None else 0] for t in gen.tokens]
            prompts = [_prompt_ids(model, p) for p in self.prompts]
            by_row = dict(continuation_logprobs(model, prompts, conts, None, self.batch_size))
            return prompts, conts, [by_row[row] for row in range(len(prompts))]
        return self.cached(("ref", model_key(model)), make)

    def score(self, model: Model, recipes: Sequence[Steering | None],
              generations: Generations | None = None) -> dict[str, list[float]]:
        prompts, conts, base = self._reference(model)
        steered = [r for r in recipes if r is not None]
        n = len(prompts)
        rows = [r for r in steered for _ in range(n)]
        kls = [float("nan")] * len(rows)
        if rows:
            for row, lp in continuation_logprobs(model, prompts * len(steered), conts * len(steered), rows,
                                                 self.batch_size):
                ref = base[row % n]
                kls[row] = float((ref.exp() * (ref - lp)).sum(-1).mean())
        values = iter([mean(kls[i * n:(i + 1) * n]) for i in range(len(steered))])
        return {"kl": [0.0 if r is None else next(values) for r in recipes]}
