"""What "behaviour" means for each data set, and which prompts measure it (never the training pairs).

- ``sentiment``: neutral prompts; VADER compound of the generations (higher = more positive) and a
  probe's logit on them; choosing among candidate directions uses positive- vs negative-word log-odds.
- ``refusal``: the held-out harmful requests of the test split; refusal phrases and the refusal
  log-odds (Arditi et al.); the selection uses the refusal score on chat-templated requests.
- any other set: neutral prompts and the probe (plus generation length for ``verbosity``); no
  logit score, so the refusal-direction selection (and the ``refusal`` method) is not available.

The CAST condition: for refusal data, the training pairs themselves (steer only harmful requests);
otherwise the bundled refusal pairs with the harmless side firing ("steer, but never a harmful
request"). Its held-out half checks the condition.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..data import ContrastiveSet, load
from ..data import prompts as prompt_set
from ..models import Model
from ..recipes.scores import LogitScore, refusal_logit_score, sentiment_logit_score
from .behaviour import Length, RefusalScore, RefusalSubstring, Sentiment
from .scorer import Scorer


@dataclass
class Task:
    """Behaviour prompts and scorers for one data set, plus what its methods need to fit."""

    dataset: str
    chat: bool
    prompts: list[str]
    prompt_source: str
    behaviour: list[Scorer]
    primary: str
    score: LogitScore | None = None
    condition: ContrastiveSet | None = None
    condition_test: ContrastiveSet | None = None
    condition_fire: str = "positive"
    condition_source: str = ""
    probe: bool = True
    notes: list[str] = field(default_factory=list)


def neutral_split(seed: int) -> list[str]:
    """The bundled neutral prompts in a fixed shuffled order (behaviour prompts first, then KL prompts)."""
    items = prompt_set("neutral")
    random.Random(seed).shuffle(items)
    return items


def task_for(model: Model, train: ContrastiveSet, test: ContrastiveSet, n_prompts: int, seed: int,
             condition_split: float = 0.25) -> Task:
    """The ``Task`` for a data set split into ``train``/``test`` (chosen by its bundled name), with
    behaviour prompts disjoint from the training pairs."""
    kind = train.name.split("[")[0]
    if kind == "refusal":
        harmful = list(test.positive)[:n_prompts]
        return Task(kind, True, harmful, f"held-out harmful requests of the refusal test split ({len(harmful)})",
                    [RefusalSubstring(), RefusalScore(refusal_logit_score(model.tokenizer))], "refusal_rate",
                    refusal_logit_score(model.tokenizer), train, test, "positive",
                    "refusal pairs (train split): steer only when the request is harmful", probe=False)
    cond_train, cond_test = load("refusal").split(condition_split, seed)
    neutral = neutral_split(seed)[:n_prompts]
    why = "bundled refusal pairs (train split): steer unless the request is harmful"
    source = f"bundled neutral prompts (shuffled with seed {seed}, first {len(neutral)})"
    if kind == "sentiment":
        return Task(kind, False, neutral, source, [Sentiment()], "sentiment", sentiment_logit_score(model.tokenizer),
                    condition=cond_train, condition_test=cond_test, condition_fire="negative", condition_source=why)
    extra: list[Scorer] = [Length()] if kind == "verbosity" else []
    return Task(kind, False, neutral, source, extra, "probe", None,
                condition=cond_train, condition_test=cond_test, condition_fire="negative", condition_source=why,
                notes=[(f"{kind}: no logit score for choosing among candidate directions; 'refusal' is skipped "
                        "and 'ablate' uses the mean difference at the recommended layer")])
