"""Step-wise cached decoding whose rows can join and leave between steps (for servers).

``model.generate`` runs one fixed batch to the end. A server needs more: requests that arrive while
a batch decodes join it at the next step, and finished (or abandoned) rows leave it. ``DecodeBatch``
does that over a plain KV cache, always through ``steered()``:

- ``prefill`` runs new rows' prompts as one left-padded batch (its own steered call);
- ``merge`` joins two batches: their caches are left-padded to one width and concatenated;
- ``select`` keeps some rows (and drops cache columns that became padding for every row);
- ``step`` feeds one token per row and returns the next-token logits.

Each structural change opens a new ``steered()`` call with the batch's new ``Layout`` and its
tracker resumed at the cache's width, so every recipe (one per row) keeps touching exactly the
tokens it would in ``model.generate``. Conditional recipes keep their per-row flags across changes.
Only full-attention caches are merged (``DynamicLayer``); sliding-window caches would need cropping.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING

import torch

from ..errors import SteerlabError
from ..interventions.steering import Steering
from ..sites import Site
from .forward import Layout, steered
from .hooks import SiteOp
from .tokens import pad, pad_id

if TYPE_CHECKING:
    from typing_extensions import Self

    from .model import Model


def _cache_arg() -> str:
    """The forward's KV-cache keyword: ``cache`` in newer transformers, ``past_key_values`` before."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


_CACHE_ARG = _cache_arg()


class DecodeBatch:
    """Rows decoding together on one KV cache, each with its own recipe (or None).

    ``mask`` ``[B, W]`` marks real tokens; ``start``/``prompt_end`` ``[B]`` are each row's first real
    token and one past its prompt in padded coordinates. Close with ``close()`` (or use ``with``).
    """

    def __init__(self, model: Model, recipes: list[Steering | None], cache: object, mask: torch.Tensor,
                 start: torch.Tensor, prompt_end: torch.Tensor, reads: dict[Site, list[SiteOp]] | None = None,
                 state: dict | None = None):
        self.model = model
        self.recipes = recipes
        self.cache = cache
        self.mask = mask
        self.start = start
        self.prompt_end = prompt_end
        self.reads = reads or {}
        self._stack = ExitStack()
        layout = Layout(start=start, prompt_end=prompt_end, generating=True)
        self.session = self._stack.enter_context(steered(model, recipes, layout, "cached", reads=self.reads))
        tracker = self.session.tracker
        tracker.resume(int(mask.shape[1]))  # the cache already holds these tokens
        if state:
            tracker.state.update(state)

    @property
    def batch(self) -> int:
        return len(self.recipes)

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def flags(self) -> dict:
        """Per-row flags of conditional recipes (``[B]`` bool tensors), to carry across changes."""
        return {k: v for k, v in self.session.tracker.state.items()
                if isinstance(k, tuple) and k and k[0] == "conditional" and isinstance(v, torch.Tensor)}

    def close(self) -> None:
        """Remove the hooks; the cache and the conditional flags are kept for ``merge``/``select``."""
        self._stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- running ----------------------------------------------------------------------------------
    @classmethod
    def prefill(cls, model: Model, prompts: Sequence[Sequence[int]], recipes: Sequence[Steering | None],
                reads: dict[Site, list[SiteOp]] | None = None) -> tuple[DecodeBatch, torch.Tensor]:
        """Run ``prompts`` (token ids) as a new batch; returns it and the next-token logits ``[B, V]``.

        Hooks are global to the model: ``close()`` a running batch before prefilling another (``merge``
        and ``select`` reopen it)."""
        from transformers import DynamicCache

        if len(prompts) != len(recipes) or not prompts:
            raise SteerlabError(f"prefill needs one recipe (or None) per prompt, got {len(recipes)} for "
                                f"{len(prompts)} prompts")
        b = pad([list(p) for p in prompts], pad_id(model.tokenizer), "left", model.device)
        empty = torch.zeros(len(prompts), 0, dtype=torch.long, device=model.device)
        batch = cls(model, list(recipes), DynamicCache(), empty, b.start, b.end, reads)
        try:
            with torch.inference_mode():
                out = model.hf_model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                     position_ids=b.position_ids(), **{_CACHE_ARG: batch.cache}, use_cache=True,
                                     logits_to_keep=1)
        except BaseException:
            batch.close()
            raise
        batch.mask = b.attention_mask
        return batch, out.logits[:, -1].float()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (``[B]``); returns the next-token logits ``[B, V]``."""
        tokens = tokens.to(self.model.device).view(-1, 1)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        position = (self.width - 1 - self.start).view(-1, 1)
        with torch.inference_mode():
            out = self.model.hf_model(input_ids=tokens, attention_mask=self.mask, position_ids=position,
                                      **{_CACHE_ARG: self.cache}, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()

    # --- changing the rows ------------------------------------------------------------------------
    def _kv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        layers = getattr(self.cache, "layers", None)
        if layers is None:
            raise SteerlabError("this model's KV cache has no per-layer tensors; rows cannot join a running batch")
        out = []
        for layer in layers:
            if type(layer).__name__ != "DynamicLayer":
                raise SteerlabError(f"rows cannot join a running batch with a {type(layer).__name__} cache "
                                    "(only full-attention caches are merged)")
            out.append((layer.keys, layer.values))
        return out

    def select(self, rows: Sequence[int], reads: dict[Site, list[SiteOp]] | None = None) -> DecodeBatch:
        """A new batch of ``rows`` of this one (this one is closed), trimmed of all-padding columns."""
        from transformers import DynamicCache

        index = torch.tensor(list(rows), dtype=torch.long, device=self.mask.device)
        mask = self.mask[index]
        real = mask.any(0).nonzero()
        first = int(real[0]) if len(real) else mask.shape[1]
        flags = {k: v[index] for k, v in self.flags().items()}
        kv = [(k[index, :, first:], v[index, :, first:]) for k, v in self._kv()]
        self.close()
        return DecodeBatch(self.model, [self.recipes[i] for i in rows], DynamicCache(ddp_cache_data=kv),
                           mask[:, first:], self.start[index] - first, self.prompt_end[index] - first,
                           reads, flags)

    def merge(self, other: DecodeBatch, reads: dict[Site, list[SiteOp]] | None = None) -> DecodeBatch:
        """This batch's rows then ``other``'s, on one cache (both are closed)."""
        from transformers import DynamicCache

        width = max(self.width, other.width)
        parts = [self, other]

        def left(t: torch.Tensor, part: DecodeBatch, dim: int) -> torch.Tensor:
            extra = width - part.width
            if not extra:
                return t
            shape = list(t.shape)
            shape[dim] = extra
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        mask = torch.cat([left(p.mask, p, 1) for p in parts])
        start = torch.cat([p.start + (width - p.width) for p in parts])
        end = torch.cat([p.prompt_end + (width - p.width) for p in parts])
        kvs = [p._kv() for p in parts]
        kv = [(torch.cat([left(a[0], self, 2), left(b[0], other, 2)]), torch.cat([left(a[1], self, 2),
                                                                                 left(b[1], other, 2)]))
              for a, b in zip(*kvs)]
        flags = {}
        for key in {**self.flags(), **other.flags()}:
            flags[key] = torch.cat([p.flags().get(key, torch.zeros(p.batch, dtype=torch.bool, device=mask.device))
                                    for p in parts])
        recipes = self.recipes + other.recipes
        self.close()
        other.close()
        return DecodeBatch(self.model, recipes, DynamicCache(ddp_cache_data=kv), mask, start, end, reads, flags)
