"""Generation over a pool of Ray actors: the rows of a sweep or comparison, each with its own recipe.

``RayGenerator`` has the shape of ``model.generate`` that ``generate_grid`` (and so ``sweep`` and
``compare``) accepts as ``generate=``: it cuts the rows into ``batch_size`` chunks, sends each chunk
with its recipes (in steerlab's JSON wire form) to an actor that loaded the model once, and returns
the texts and tokens in row order. With the same chunks a local run uses, the result is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...errors import SteerlabError
from ...interventions.steering import Steering
from ...models.generate import GenerationResult
from .. import wire
from .capture import Loader, as_loader


class _Generator:
    """A Ray actor: one model, generating whole chunks of rows."""

    def __init__(self, load: Loader, threads: int | None):
        if threads:
            torch.set_num_threads(threads)
        self.model = load()

    def run(self, prompts: list[str], recipes: list[dict | None], max_new_tokens: int,
            options: dict[str, Any]) -> tuple[list[str], list[list[int]]]:
        steering = [wire.from_json(r) if r is not None else None for r in recipes]
        out = self.model.generate(prompts, steering=steering, max_new_tokens=max_new_tokens, **options)
        return list(out.texts), [list(t) for t in out.tokens]


class RayGenerator:
    """``generate(prompts, steering=..., max_new_tokens=...)`` on ``actors`` Ray actors.

    ``load``: a model name or a picklable zero-argument callable returning a ``Model``.
    ``batch_size``: rows per chunk (one ``model.generate`` call on one actor). ``num_cpus``: what each
    actor reserves; ``threads``: its torch threads. Connect with ``ray.init(address=...)`` first for a
    cluster; otherwise a local one is started. ``close()`` ends the actors.
    """

    def __init__(self, load: Loader | str, actors: int = 2, batch_size: int = 16, num_cpus: float = 1.0,
                 threads: int | None = None):
        import ray

        load = as_loader(load)
        for name, value in (("actors", actors), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise SteerlabError(f"{name} must be a positive integer, got {value!r}")
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        remote = ray.remote(num_cpus=num_cpus)(_Generator)
        self.batch_size = batch_size
        self._pool = ray.util.ActorPool([remote.remote(load, threads) for _ in range(actors)])

    def __call__(self, prompts: Sequence[str], steering: Steering | Sequence[Steering | None] | None = None,
                 max_new_tokens: int = 40, **options: Any) -> GenerationResult:
        prompts = list(prompts)
        rows: list[Steering | None] = (list(steering) if isinstance(steering, (list, tuple))
                                       else [steering] * len(prompts))  # type: ignore[list-item]
        if len(rows) != len(prompts):
            raise SteerlabError(f"steering has {len(rows)} recipes for {len(prompts)} prompts")
        docs = [wire.to_json(r) if r is not None else None for r in rows]
        chunks = [(prompts[i:i + self.batch_size], docs[i:i + self.batch_size])
                  for i in range(0, len(prompts), self.batch_size)]
        texts: list[str] = []
        tokens: list[list[int]] = []
        for got_texts, got_tokens in self._pool.map(
                lambda actor, chunk: actor.run.remote(chunk[0], chunk[1], max_new_tokens, options), chunks):
            texts.extend(got_texts)
            tokens.extend(got_tokens)
        return GenerationResult(texts, tokens, prompts)

    def close(self) -> None:
        """End the actors (the Ray cluster stays up)."""
        import ray

        while self._pool.has_free():
            ray.kill(self._pool.pop_idle())
