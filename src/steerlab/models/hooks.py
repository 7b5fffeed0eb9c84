"""Attach one hook per touched module for the duration of a call; always removed, even on error.

Each site maps to a module and a side (its input or its output). A hook runs the ops of every
site that lives there, in forward order. Two sites need care:

- ``resid_mid`` (``resid_pre + attn_out``) is the input of the MLP's pre-norm in sequential blocks;
  a write there changes what the MLP reads and the same difference is added to the block's output,
  so the residual stream carries it. In parallel-residual blocks (GPT-NeoX) it is the virtual sum
  ``resid_pre + attn_out``, read at the attention output; a write adds its difference to the block output.
- ``attn.heads`` is the input of the attention output projection, viewed as ``[B, T, n_heads, d_head]``.

A top-level pre-hook asks the call's tracker (``models/forward.py``) for the ``StepContext`` of each
forward pass (how many tokens are already in the KV cache, where each row's prompt starts and ends),
from the pass's public inputs only.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import SteerlabError
from ..interventions.positions import StepContext
from ..sites import Site
from .adapters import Bound

if TYPE_CHECKING:
    from typing_extensions import Self

    from .forward import Tracker

SiteOp = Callable[[torch.Tensor, StepContext], torch.Tensor]


class StopForward(Exception):
    """Raised by a hook after the deepest site a capture needs, to skip the rest of the model."""


def shape_of(bound: Bound, site: Site) -> tuple[int, ...]:
    """Trailing shape of the activation at ``site`` (everything after ``[batch, tokens]``)."""
    if site.kind == "attn.heads":
        return (bound.n_heads, bound.d_head)
    if site.kind == "mlp.neurons":
        return (bound.d_mlp,)
    if site.kind == "logits":
        return (bound.vocab,)
    return (bound.d_model,)


def _chain(fns: list[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    for fn in fns:
        x = fn(x)
    return x


def _run(ops: list[SiteOp], x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    for op in ops:
        x = op(x, ctx)
    return x


class HookSession:
    """Context manager holding the hooks of one call.

    ``ops`` maps sites to ordered ops (writes, then reads). ``stop_after`` makes the forward pass
    raise ``StopForward`` once that site has run.
    """

    def __init__(self, bound: Bound, ops: dict[Site, list[SiteOp]], tracker: Tracker, stop_after: Site | None = None,
                 outside_compile: bool = False):
        self.bound = bound
        self.ops = {site: list(v) for site, v in ops.items() if v}
        self.tracker = tracker
        self.stop_after = stop_after
        self.ctx: StepContext  # set by each forward pass's pre-hook before any site runs
        self.handles: list = []
        #: run the hooks eagerly inside a ``torch.compile``d model (a graph break at each hooked
        #: module), so a compiled forward is reused across calls whatever the recipe
        self.outside_compile = outside_compile

    # --- context ------------------------------------------------------------------------------
    def _begin_forward(self, module, args, kwargs):
        # only the forward's public inputs; where the pass sits is the tracker's own count
        ids = kwargs.get("input_ids")
        if ids is None:
            ids = args[0] if args else kwargs.get("inputs_embeds")
        if ids is None:
            raise SteerlabError("a steered forward pass needs input_ids or inputs_embeds")
        self.ctx = self.tracker.begin(int(ids.shape[0]), int(ids.shape[1]), kwargs.get("attention_mask"),
                                      kwargs.get("position_ids"))

    # --- attaching ----------------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            self._attach()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _attach(self) -> None:
        b = self.bound
        points: dict[tuple[nn.Module, str], list[Callable]] = defaultdict(list)
        stop_point = None

        def add(module, side, stage, site: Site | None = None):
            points[(module, side)].append(stage)
            return (module, side)

        def site_stage(site: Site):
            ops = self.ops[site]
            # context-free ops run as bare functions of x (no context, no dispatch)
            directs = [op.direct(shape_of(b, site)) for op in ops if hasattr(op, "direct")]
            directs = [fn for fn in directs if fn is not None]
            if len(directs) == len(ops):
                return directs[0] if len(directs) == 1 else functools.partial(_chain, directs)
            if len(ops) == 1:
                (op,) = ops
                return lambda x: op(x, self.ctx)
            return lambda x: _run(ops, x, self.ctx)

        # where each site lives comes from the adapter's table (module, side, multiplier)
        for site in sorted(self.ops, key=lambda s: s.depth(b.n_layers)):
            at_module, at_side, scale = b.locate(site)
            if site.kind == "resid_mid" and site.layer is not None:  # a per-layer kind always has a layer
                layer = site.layer
                block = b.blocks[layer]
                if b.parallel:  # the virtual sum needs resid_pre as the block received it
                    add(block, "in", self._stash_stage(layer))
                point = self._add_mid(add, site)
                add(block, "out", self._mid_delta_stage(layer))
            else:
                stage = self._heads_stage(site) if site.kind == "attn.heads" else site_stage(site)
                point = add(at_module, at_side, stage if scale == 1.0 else _scaled(stage, scale))
            if site == self.stop_after:
                stop_point = point
        if stop_point is not None:
            points[stop_point].append(_raise_stop)

        begin = torch._dynamo.disable(self._begin_forward) if self.outside_compile else self._begin_forward
        self.handles.append(b.model.register_forward_pre_hook(begin, with_kwargs=True))
        for (module, side), stages in points.items():
            self.handles.append(_register(module, side, stages, self.outside_compile))

    def _heads_stage(self, site: Site):
        ops = self.ops[site]
        heads, d_head = self.bound.n_heads, self.bound.d_head

        def stage(x):
            y = _run(ops, x.view(*x.shape[:-1], heads, d_head), self.ctx)
            return y.reshape(x.shape)

        return stage

    def _add_mid(self, add, site: Site):
        ops, layer = self.ops[site], site.layer
        key = ("mid_delta", layer)

        if self.bound.parallel:
            attn_module, side, scale = self.bound.locate(Site("attn_out", layer))

            def parallel_stage(attn):
                mid = self.ctx.memo[("resid_pre", layer)] + (attn if scale == 1.0 else attn * scale)
                new = _run(ops, mid, self.ctx)
                if new is not mid:
                    self.ctx.memo[key] = new - mid
                return attn

            return add(attn_module, side, parallel_stage)

        def stage(mid):
            new = _run(ops, mid, self.ctx)
            if new is not mid:
                self.ctx.memo[key] = new - mid
            return new

        module, side, _ = self.bound.locate(site)
        return add(module, side, stage)

    def _mid_delta_stage(self, layer: int):
        key = ("mid_delta", layer)

        def stage(out):
            delta = self.ctx.memo.pop(key, None)
            return out if delta is None else out + delta

        return stage

    def _stash_stage(self, layer: int):
        def stage(x):
            self.ctx.memo[("resid_pre", layer)] = x
            return x

        return stage


def _scaled(stage: Callable, scale: float) -> Callable:
    """Run ``stage`` on ``scale * x`` (what the residual stream receives from a module whose output the
    family multiplies, e.g. Granite's ``residual_multiplier``); a change is written back divided by ``scale``."""
    def run(x):
        seen = x * scale
        y = stage(seen)
        return x if y is seen else x + (y - seen) / scale

    return run


def _raise_stop(x):
    raise StopForward


def _register(module: nn.Module, side: str, stages: list[Callable], outside_compile: bool = False):
    if len(stages) == 1:
        (run,) = stages
    else:
        def run(x):
            for stage in stages:
                x = stage(x)
            return x
    if outside_compile:
        run = torch._dynamo.disable(run)

    if side == "in":
        def pre_hook(mod, args, kwargs):
            if args:
                x = args[0]
                y = run(x)
                return None if y is x else ((y, *args[1:]), kwargs)
            name = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            x = kwargs[name]
            y = run(x)
            return None if y is x else (args, {**kwargs, name: y})

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    if side == "logits":
        def logits_hook(mod, args, output):
            x = output.logits
            y = run(x)
            if y is not x:
                output.logits = y
            return output

        return module.register_forward_hook(logits_hook)

    def hook(mod, args, output):
        if isinstance(output, tuple):
            x = output[0]
            y = run(x)
            return None if y is x else (y, *output[1:])
        y = run(output)
        return None if y is output else y

    return module.register_forward_hook(hook)
