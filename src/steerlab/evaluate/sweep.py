"""Strength sweeps: evaluate one method at every strength, in batches, into a tidy table.

All strengths of a method are generated together: each (strength, prompt) is one row of a single
``model.generate`` call with its own recipe (per-row steering), so one decoding loop serves the
whole grid. The unsteered baseline is generated once per model and prompt set (kept in ``cache``)
and reused by every method; scorers keep their own baselines the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..data.contrastive import ContrastiveSet
from ..errors import SteerlabError
from ..interventions import Steering
from ..models import Model
from ..models.tokens import check_texts
from .scorer import Generations, Scorer, model_key

if TYPE_CHECKING:
    from ..models.generate import GenerationResult
    from ..recipes import Fitted

#: what generates a grid's rows: ``model.generate`` or anything called like it
Generate = Callable[..., "GenerationResult"]


def default_scorers() -> list[Scorer]:
    """Sentiment (VADER), fluency and reference-text perplexity."""
    from .behaviour import Sentiment
    from .utility import Fluency, Perplexity

    return [Sentiment(), Fluency(), Perplexity()]


def generate_grid(model: Model, recipes: Sequence[Steering | None], prompts: list[str], max_new_tokens: int,
                  cache: dict | None = None, batch_size: int | None = None,
                  progress: Callable[[int], object] | None = None, generate: Generate | None = None) -> Generations:
    """Generations for every recipe x prompt: steered rows in one batch (or ``batch_size`` rows at a
    time), the unsteered rows taken from ``cache`` when there (and stored there).

    ``generate``: what runs the rows, called like ``model.generate`` (default); e.g. a
    ``steerlab.engines.ray.RayGenerator`` spreads them over Ray actors.
    """
    cache = {} if cache is None else cache
    key = ("baseline_generations", model_key(model), tuple(prompts), max_new_tokens)
    need_base = any(r is None for r in recipes) and key not in cache
    rows = [(i, p) for i, r in enumerate(recipes) if r is not None for p in prompts]
    steering = [recipes[i] for i, _ in rows]
    if need_base:
        rows += [(-1, p) for p in prompts]
        steering += [None] * len(prompts)
    texts: list[str] = []
    tokens: list[list[int]] = []
    size = batch_size or max(1, len(rows))
    for begin in range(0, len(rows), size):
        part = rows[begin:begin + size]
        out = (generate or model.generate)([p for _, p in part], steering=steering[begin:begin + size],
                                           max_new_tokens=max_new_tokens)
        texts.extend(out.texts)
        tokens.extend(out.tokens)
        if progress:
            progress(len(part))
    if need_base:
        n = len(prompts)
        cache[key] = (texts[-n:], tokens[-n:])
        texts, tokens = texts[:-n], tokens[:-n]
    by_recipe_t: list[list[str]] = []
    by_recipe_k: list[list[list[int]]] = []
    cursor = 0
    for r in recipes:
        if r is None:
            base_t, base_k = cache[key]
            by_recipe_t.append(list(base_t))
            by_recipe_k.append(list(base_k))
        else:
            by_recipe_t.append(texts[cursor:cursor + len(prompts)])
            by_recipe_k.append(tokens[cursor:cursor + len(prompts)])
            cursor += len(prompts)
    return Generations(list(prompts), by_recipe_t, by_recipe_k)


def sweep(model: Model, method: Fitted | str, pairs: ContrastiveSet | None = None,
          strengths: Iterable[float] | None = None, prompts: Sequence[str] | None = None,
          scorers: Iterable[Scorer] | None = None, max_new_tokens: int = 40, batch_size: int | None = None,
          cache: dict | None = None, progress: Callable[[int], object] | None = None,
          generate: Generate | None = None, **fit_options: Any) -> pd.DataFrame:
    """Evaluate ``method`` at each of ``strengths`` on ``prompts`` with ``scorers``; one row per strength.

    ``method``: a ``Fitted`` (from ``sl.recipes.fit``) or a method name, fitted on ``pairs`` (the
    training pairs; never the evaluation prompts). ``strengths``: default the method's grid.
    ``prompts``: default the first 10 bundled neutral prompts. ``scorers``: default
    ``default_scorers()``. ``cache``: a dict shared across sweeps to reuse the unsteered baseline.
    ``generate``: what runs the generations (``generate_grid``); scorers run on ``model``.

    Columns: ``method``, ``param`` (what strength means), ``strength``, a column named after the
    parameter (same values), every scorer column, and ``seconds`` (the sweep's wall time).
    ``table.attrs["samples"]`` holds the generations as records (method, strength, prompt, text).
    """
    from ..recipes import Fitted, fit

    fitted = method if isinstance(method, Fitted) else fit(model, method, pairs, strengths, **fit_options)
    grid = [float(s) for s in (strengths if strengths is not None else fitted.strengths)]
    if not grid:
        raise SteerlabError(f"strengths for {fitted.method!r} is empty; give at least one value")
    if prompts is None:
        from ..data import prompts as prompt_set

        prompts = prompt_set("neutral")[:10]
    prompts = check_texts(prompts, "prompts")
    scorers = default_scorers() if scorers is None else list(scorers)
    recipes = [fitted.recipe(s) for s in grid]
    started = time.perf_counter()
    generations = generate_grid(model, recipes, prompts, max_new_tokens, cache, batch_size, progress, generate)
    table = pd.DataFrame({"method": fitted.method, "param": fitted.param, "strength": grid})
    if fitted.param not in ("none", "strength"):
        table[fitted.param] = grid
    for scorer in scorers:
        for column, values in scorer.score(model, recipes, generations).items():
            table[column] = values
    table["seconds"] = round(time.perf_counter() - started, 2)
    table.attrs["samples"] = [{"method": fitted.method, "strength": s, "prompt": p, "text": t}
                              for s, texts in zip(grid, generations.texts) for p, t in zip(prompts, texts)]
    return table
