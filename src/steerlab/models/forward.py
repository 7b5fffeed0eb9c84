"""The steered forward: every call that runs the model with a recipe goes through ``steered()``.

It owns the four things every steered call needs, in one place:

1. recipe checks (one recipe or one per row; each checked against the model's fingerprint);
2. the plan (per-site ops with per-row parameters stacked once per call);
3. the hook session (hooks attached for the call, always removed);
4. the position handshake: where each forward pass's tokens sit in the padded batch.

The handshake is steerlab's own bookkeeping, never transformers' private keyword arguments: the
caller declares how the model will be driven (one pass, cached decoding or uncached decoding) and
``Tracker`` counts the tokens it has seen. Public forward inputs (``attention_mask`` when it is 2-D,
``position_ids``) are only used to *check* that count; if they disagree, the call raises
``SteerlabError`` instead of steering the wrong tokens.

The "where and when" (``Layout``, ``Tracker``, ``StepContext``) is kept apart from the intervention
math, so another engine can produce the same context for the same interventions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from ..errors import SteerlabError
from ..interventions.plan import SteeringArg, build_plan, rows_of
from ..interventions.positions import StepContext, check_reach
from ..interventions.steering import Steering
from ..sites import Site
from .hooks import HookSession, SiteOp, shape_of

if TYPE_CHECKING:
    from .model import Model

#: ``"single"``: one forward pass over the whole batch (capture, logits);
#: ``"cached"``: a prefill then continuation passes on the KV cache (generation, teacher forcing);
#: ``"uncached"``: generation without a cache, every pass re-reads the whole sequence from token 0.
Decoding = Literal["single", "cached", "uncached"]


@dataclass
class Layout:
    """Where each row's tokens are in the padded batch: ``start`` (first real token) and
    ``prompt_end`` (one past the last prompt token), both ``[B]``; ``generating`` marks that tokens
    after ``prompt_end`` are generated (real) rather than right padding."""

    start: torch.Tensor
    prompt_end: torch.Tensor
    generating: bool = False

    @property
    def batch(self) -> int:
        return int(self.start.shape[0])


class Tracker:
    """Counts the tokens of one call to know each forward pass's offset in the padded batch.

    ``begin`` is called once per forward pass of the top-level model with the pass's public inputs;
    it returns the pass's ``StepContext`` or raises ``SteerlabError`` when the inputs contradict the
    count (a cache that was cropped or reused, a batch of another size, an unexpected extra pass).
    """

    def __init__(self, layout: Layout, decoding: Decoding):
        if decoding not in ("single", "cached", "uncached"):
            raise SteerlabError(f"decoding={decoding!r} is not one of single, cached, uncached")
        self.layout = layout
        self.decoding = decoding
        self.seen = 0  # tokens in the KV cache (cached) or the width of the last pass (uncached)
        self.passes = 0
        self.state: dict = {"generating": layout.generating}

    def resume(self, cached: int) -> None:
        """Continue a cached decoding whose KV cache already holds ``cached`` tokens per row (a batch
        rebuilt mid-generation, e.g. when a server admits or drops rows)."""
        if self.decoding != "cached" or self.passes:
            raise SteerlabError("resume() is for a cached-decoding call before its first pass")
        self.seen, self.passes = int(cached), 1 if cached else 0

    def begin(self, batch: int, width: int, attention_mask: object = None,
              position_ids: object = None) -> StepContext:
        if batch != self.layout.batch:
            raise SteerlabError(f"steerlab lost track of the batch: a forward pass has {batch} rows, the call has "
                                f"{self.layout.batch} (beam search and num_return_sequences are not supported)")
        if self.decoding == "single":
            if self.passes:
                raise SteerlabError("steerlab expected one forward pass in this call and saw a second; "
                                    "it cannot tell where that pass's tokens are")
            offset = 0
        elif self.decoding == "cached":
            offset = self.seen
        else:
            if self.passes and width != self.seen + 1:
                raise SteerlabError(f"uncached decoding should re-read {self.seen + 1} tokens, the forward pass "
                                    f"has {width}; steerlab cannot tell where its tokens are")
            offset = 0
        self._check(offset, width, attention_mask, position_ids)
        self.passes += 1
        self.seen = offset + width
        return StepContext(batch, width, offset, self.layout.start, self.layout.prompt_end, self.state)

    def _check(self, offset: int, width: int, attention_mask: object, position_ids: object) -> None:
        """Cross-check the count with the public inputs that carry the same information."""
        mask = attention_mask if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2 else None
        if mask is not None and mask.shape[1] != offset + width:
            raise SteerlabError(
                f"steerlab lost track of the tokens: its count puts this pass at tokens {offset}-{offset + width} "
                f"but the attention mask covers {mask.shape[1]}; refusing to steer the wrong tokens")
        if not (isinstance(position_ids, torch.Tensor) and position_ids.dim() == 2
                and position_ids.shape[0] == self.layout.batch):
            return
        # a row whose newest column is a real token has that token's padded index minus its left padding
        # as position id
        start = self.layout.start.to(position_ids.device)
        real = mask[:, -1].bool() if mask is not None else torch.ones_like(start, dtype=torch.bool)
        expected = offset + width - 1 - start
        if not torch.equal(position_ids[:, -1][real], expected[real]):
            raise SteerlabError(
                "steerlab lost track of the tokens: the position ids of this pass do not match its count "
                f"(expected {expected[real].tolist()}, got {position_ids[:, -1][real].tolist()})")


def recipes_for(model: Model, steering: SteeringArg, n: int,
                lengths: Sequence[int] | None = None) -> list[Steering | None]:
    """``steering`` (None, one recipe or intervention, or one per row) as one entry per row, each
    distinct recipe checked against ``model``; with the prompts' token counts ``lengths``, explicit
    positions that reach none of the prompts their recipe steers are refused (``check_reach``)."""
    recipes = rows_of(steering, n)
    for recipe in {id(r): r for r in recipes if r is not None}.values():
        recipe.check_model(model.fingerprint)
    if lengths is not None:
        check_reach(recipes, lengths)
    return recipes


@contextmanager
def steered(model: Model, recipes: Sequence[Steering | None] | None, layout: Layout, decoding: Decoding,
            reads: dict[Site, list[SiteOp]] | None = None, stop_after: Site | None = None,
            outside_compile: bool = False) -> Iterator[HookSession]:
    """Run the model inside this block with ``recipes`` (one per row of the batch, already checked by
    ``recipes_for``) applied and ``reads`` recorded after them at their sites.

    ``decoding`` says how the caller drives the model (see ``Decoding``); ``stop_after`` makes the
    forward pass raise ``StopForward`` after that site; ``outside_compile`` keeps the hooks eager
    inside a compiled model.
    """
    ops: dict[Site, list[SiteOp]] = {}
    if recipes is not None and any(r is not None for r in recipes):
        if len(recipes) != layout.batch:
            raise SteerlabError(f"{len(recipes)} recipes for a batch of {layout.batch} rows")
        like = next(model.hf_model.parameters())
        bound = model.bound
        ops = build_plan(list(recipes), layout.batch, bound.n_layers, lambda s: shape_of(bound, s), like)
    merged = {site: list(v) for site, v in ops.items()}
    for site, site_reads in (reads or {}).items():
        merged.setdefault(site, []).extend(site_reads)
    tracker = Tracker(layout, decoding)
    with HookSession(model.bound, merged, tracker, stop_after=stop_after, outside_compile=outside_compile) as session:
        yield session
