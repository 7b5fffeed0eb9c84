"""The plugin's state in one vLLM worker: per-pass plans from each request's ask, applied by hooks.

``Steerer.begin`` runs once per forward pass (a pre-hook on the decoder stack): it maps each
scheduled request to its ask, builds (or reuses, while the batch's recipes stay the same) the plan
with steerlab's own ``build_plan``, and describes the pass with ``FlatBatch``. The layer hooks then
run the plan's ops on the padded ``[R, T, D]`` view with the pass's ``StepContext`` and record the
read-outs. Conditional flags live per request between passes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import SteerlabError
from ...interventions.plan import SiteOp, build_plan
from ...interventions.steering import Steering
from ...sites import Site
from .layout import FlatBatch, flat_batch
from .request import Ask, Reads, parse

#: read-out results kept until fetched, at most this many requests (oldest dropped first)
MAX_KEPT = 4096


@dataclass
class Pass:
    """One forward pass: its layout, context, plan and the rows that read."""

    batch: FlatBatch
    ctx: Any
    plan: dict[Site, list[SiteOp]]
    readers: list[tuple[int, Reads]]
    rids: list[str]
    flag_rows: list[int] = field(default_factory=list)


@dataclass
class ReadOut:
    """Bounded per-request results: per-probe token scores, per-layer running sums, last prompt states."""

    scores: dict[str, list[float]] = field(default_factory=dict)
    sums: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    counts: dict[tuple[int, str], int] = field(default_factory=dict)
    last: dict[int, torch.Tensor] = field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        means: dict[str, dict[str, list[float]]] = {}
        for (layer, seg), total in self.sums.items():
            means.setdefault(str(layer), {})[seg] = (total / max(self.counts[(layer, seg)], 1)).tolist()
        return {"scores": self.scores, "means": means,
                "counts": {f"{layer}.{seg}": n for (layer, seg), n in self.counts.items()},
                "last": {str(layer): x.tolist() for layer, x in self.last.items()}}


class Steerer:
    """Plans and read-outs for one worker; ``n_layers``/``d_model`` describe the model it serves."""

    def __init__(self, n_layers: int, d_model: int, like: torch.Tensor):
        self.n_layers, self.d_model, self.like = n_layers, d_model, like
        #: rid -> (the request's extra_args object, its decoded ask)
        self.asks: dict[str, tuple[object, Ask | None]] = {}
        self.plan_key: tuple | None = None
        self.plan: dict[Site, list[SiteOp]] = {}
        self.flags: dict[str, dict] = {}
        self.kept: OrderedDict[str, ReadOut] = OrderedDict()
        self.current: Pass | None = None

    # --- per pass ------------------------------------------------------------------------------
    def ask_of(self, rid: str, extra_args: dict | None) -> Ask | None:
        """The request's decoded ask, decoded once per request (a new request that reuses an id has new
        ``extra_args`` and is decoded again: a stale recipe is never applied)."""
        held = self.asks.get(rid)
        if held is None or held[0] is not extra_args:
            held = (extra_args, parse(extra_args))
            self.asks[rid] = held
        return held[1]

    def begin(self, rids: Sequence[str], extras: Callable[[str], dict | None], prompt_lens: Callable[[str], int],
              query_start_loc: torch.Tensor, positions: torch.Tensor) -> None:
        """Prepare the pass over requests ``rids`` (in batch order); a no-op pass when none asks anything."""
        asks = [self.ask_of(rid, extras(rid)) for rid in rids]
        if all(a is None for a in asks):
            self.current = None
            return
        device = self.like.device
        fb = flat_batch(query_start_loc[: len(rids) + 1].to(device), positions.to(device),
                        torch.tensor([prompt_lens(r) for r in rids], device=device))
        recipes = [a.steering if a is not None else None for a in asks]
        key = tuple(a.fingerprint if a is not None else None for a in asks)
        if key != self.plan_key:
            self.plan = self._build(recipes) if any(r is not None for r in recipes) else {}
            self.plan_key = key
        state: dict = {}
        flag_rows = [i for i, r in enumerate(recipes) if r is not None and _conditional(r)]
        if flag_rows:
            partial = (fb.first_pos == 0) & (fb.lengths < fb.prompt_len)
            if bool(partial[flag_rows].any()):
                raise SteerlabError("a conditional recipe needs its whole prompt in one pass; run vLLM with "
                                    "max_num_batched_tokens >= max_model_len (no chunked prefill of such prompts)")
        for flag_key in {k for i in flag_rows for k in self.flags.get(rids[i], {})}:
            values = [bool(self.flags.get(rid, {}).get(flag_key, False)) for rid in rids]
            state[flag_key] = torch.tensor(values, device=device)
        ctx = fb.context(state)
        readers = [(i, a.reads) for i, a in enumerate(asks) if a is not None and a.reads is not None]
        self.current = Pass(fb, ctx, self.plan, readers, list(rids), flag_rows)

    def _build(self, recipes: list[Steering | None]) -> dict[Site, list[SiteOp]]:
        width = self.d_model

        def shape_of(site: Site) -> tuple[int, ...]:
            return (width,)

        try:
            return build_plan(recipes, len(recipes), self.n_layers, shape_of, self.like)
        except SteerlabError as e:
            raise SteerlabError(f"a steered request cannot be applied by the vLLM plugin: {e}") from e

    def end(self) -> None:
        """After a pass: keep conditional flags of the requests that were prefilled in it."""
        p = self.current
        if p is None or not p.flag_rows:
            return
        prefilled = (p.batch.first_pos == 0).tolist()
        for key, flags in p.ctx.state.items():
            if isinstance(key, tuple) and key and key[0] == "conditional":
                for i in p.flag_rows:
                    if prefilled[i]:
                        self.flags.setdefault(p.rids[i], {})[key] = bool(flags[i])

    # --- per site --------------------------------------------------------------------------------
    def at(self, site: Site, flat: torch.Tensor) -> torch.Tensor | None:
        """Run the pass's ops and reads at ``site`` on ``flat`` (``[N, D]``); the new tensor, or None
        when nothing changed it."""
        p = self.current
        if p is None:
            return None
        ops = p.plan.get(site)
        reading = p.readers and site.kind == "resid_post"
        if not ops and not reading:
            return None
        x = p.batch.to_rows(flat)
        if ops:
            for op in ops:
                x = op(x, p.ctx)
        if reading:
            self._read(site, x)
        return p.batch.to_flat(x, flat) if ops else None

    def _read(self, site: Site, x: torch.Tensor) -> None:
        p = self.current
        assert p is not None and site.layer is not None
        fb = p.batch
        lengths = fb.lengths.tolist()
        first = fb.first_pos.tolist()
        prompt = fb.prompt_len.tolist()
        for i, reads in p.readers:
            probes = {n: pr for n, pr in reads.probes.items() if pr.layer == site.layer}
            if not probes and site.layer not in reads.means and site.layer not in reads.last:
                continue
            out = self.kept.setdefault(reads.id, ReadOut())
            self.kept.move_to_end(reads.id)
            tokens = x[i, : lengths[i]].float()
            for name, pr in probes.items():
                scores = tokens @ pr.vector.to(tokens.device) + pr.bias
                out.scores.setdefault(name, []).extend(scores.tolist())
            if site.layer in reads.means:
                split = min(max(prompt[i] - first[i], 0), lengths[i])
                for seg, part in (("prompt", tokens[:split]), ("generated", tokens[split:])):
                    if part.shape[0]:
                        k = (site.layer, seg)
                        out.sums[k] = out.sums.get(k, 0) + part.sum(0).cpu()
                        out.counts[k] = out.counts.get(k, 0) + part.shape[0]
            at = prompt[i] - 1 - first[i]  # the last prompt token, if this pass holds it
            if site.layer in reads.last and 0 <= at < lengths[i]:
                out.last[site.layer] = tokens[at].cpu().clone()
        while len(self.kept) > MAX_KEPT:
            self.kept.popitem(last=False)

    # --- housekeeping ----------------------------------------------------------------------------
    def forget(self, live: set[str]) -> None:
        """Drop decoded asks and flags of requests that are gone."""
        for rid in [r for r in self.asks if r not in live]:
            self.asks.pop(rid, None)
            self.flags.pop(rid, None)

    def pop_reads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Hand over (and forget) the read-outs of ``ids``; an id never seen maps to an empty result."""
        return {i: (self.kept.pop(i).result() if i in self.kept else ReadOut().result()) for i in ids}


def _conditional(recipe: Steering) -> bool:
    from ...interventions.conditional import Conditional

    return any(isinstance(it, Conditional) for it in recipe)
