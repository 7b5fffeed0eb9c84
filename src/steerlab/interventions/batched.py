"""Batched execution: one group's per-row parameters stacked once per call into one op per site.

Batches may mix recipes: rows are grouped by ``group_key`` and each group's per-row parameters
are stacked once per call, so a decoding step runs one tensor op per group, never a loop over rows.
What stays the same between decoding steps (the stacked parameters, a constant row mask, whether
the op needs a context at all) is worked out here, once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from ..sites import Site
from .base import Intervention, Params, Static, run
from .conditional import Conditional
from .positions import PositionSpec, StepContext

#: a per-call row selector: ``ctx -> [B]`` bool (e.g. a conditional's flag), or None for every row
RowSelector = Callable[[StepContext], torch.Tensor]


class Op:
    """One group's compiled op at one site: stacked per-row parameters and position specs.

    Built once per call; ``__call__`` runs every decoding step. Whatever does not change between
    steps is worked out here, once: an op touching every position of every row runs the math with
    no mask and never reads the context; an op touching every position of *some* rows keeps one
    constant ``[B, 1]`` row mask instead of building a ``[B, T]`` mask each step.
    """

    def __init__(self, cls: type[Intervention], static: Static, params: Params, specs: Sequence[PositionSpec | None],
                 extra_rows: RowSelector | None = None, device: torch.device | None = None):
        self.cls = cls
        self.static = static
        self.params = cls.prepare(params, static)
        self.specs = list(specs)
        self.shared_spec = specs[0] if len(set(specs)) == 1 else None
        self.extra_rows = extra_rows
        self.rows: torch.Tensor | None = None  # [B, 1] bool: rows touched at every position
        if self.shared_spec is None and set(specs) == {"all", None}:
            self.rows = torch.tensor([s is not None for s in specs], device=device)[:, None]
        #: no mask and no context needed: the same math at every step
        self.context_free = self.shared_spec == "all" and extra_rows is None and not cls.needs_context

    def mask(self, ctx: StepContext) -> torch.Tensor | None:
        """``[B, T]`` or ``[B, 1]`` bool mask of what this op touches in this forward pass (None: everything)."""
        mask: torch.Tensor | None
        if self.rows is not None:
            mask = self.rows
        elif self.shared_spec is not None:
            mask = ctx.mask(self.shared_spec)
        else:
            mask = ctx.row_mask(self.specs)
        if self.extra_rows is not None:
            rows = self.extra_rows(ctx)[:, None]
            mask = rows if mask is None else mask & rows
        return mask

    def direct(self, shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For a context-free op on a flat site (trailing ``shape`` of one dimension): ``x -> new x``
        calling the math straight away, so a hook needs no context and no dispatch. None otherwise."""
        if not self.context_free or (self.cls.flat and len(shape) != 1):
            return None
        return functools.partial(self.cls.apply, p=self.params, mask=None, **self.static)

    def __call__(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if self.context_free:
            return run(self.cls, x, self.params, None, self.static)
        if x.shape[1] != ctx.width:
            ctx = ctx.tail(x.shape[1])
        return run(self.cls, x, self.params, self.mask(ctx), self.static, ctx)


def compile_rows(
    items: Sequence[Intervention | None],
    site: Site,
    shape: tuple[int, ...],
    like: torch.Tensor,
    extra_rows: RowSelector | None = None,
) -> Op:
    """Stack the parameters of one group (one entry per batch row, None for untouched rows) into an Op.

    When every row holds the same intervention the parameters keep a leading dimension of 1.
    """
    present = [it for it in items if it is not None]
    first = present[0]
    cls = type(first)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=like.device, dtype=like.dtype if t.is_floating_point() else t.dtype)

    if all(it is first for it in items):
        params = {k: cast(v)[None, None] for k, v in first.params(site, shape).items()}
        specs: list[PositionSpec | None] = [first.positions] * len(items)
        return Op(cls, first.static(), params, specs, extra_rows, like.device)
    cache: dict[int, Params] = {}
    for it in present:
        if id(it) not in cache:
            cache[id(it)] = it.params(site, shape)
    neutral = cls.neutral(cache[id(first)], first.static())
    # Rows without the intervention: neutral parameters at the present rows' positions (no row
    # mask needed) when the class has them and those positions agree, else a row mask.
    spec_of_absent: PositionSpec | None = None
    if neutral is not None and len({it.positions for it in present}) == 1:
        spec_of_absent = first.positions
    else:
        neutral = cache[id(first)]
    rows = [cache[id(it)] if it is not None else neutral for it in items]
    params = {k: cast(torch.stack([r[k] for r in rows]))[:, None] for k in rows[0]}
    specs = [it.positions if it is not None else spec_of_absent for it in items]
    return Op(cls, first.static(), params, specs, extra_rows, like.device)


class SensorOp:
    """Reads a condition site on the prompt pass and stores each row's flag in ``ctx.state[flag_key]``."""

    def __init__(self, items: Sequence[Conditional | None], site: Site, shape: tuple[int, ...], like: torch.Tensor,
                 flag_key: object):
        first = next(it for it in items if it is not None)
        self.metric, self.aggregate = first.metric, first.aggregate
        params = [(it or first).sensor_params(site, shape) for it in items]
        self.c = torch.stack([p["c"] for p in params]).to(like.device)
        self.threshold = torch.cat([p["threshold"] for p in params]).to(like.device)
        self.sign = torch.cat([p["sign"] for p in params]).to(like.device)
        self.rows = torch.tensor([it is not None for it in items], device=like.device)
        self.flag_key = flag_key

    def __call__(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if not ctx.is_prefill:
            return x
        prompt = ctx.mask("prompt")
        assert prompt is not None  # "prompt" always selects a subset
        score = Conditional.score(x, self.c, prompt, self.metric, self.aggregate)
        fire = self.sign * (score - self.threshold) > 0
        old = ctx.state.get(self.flag_key)
        if old is None:
            old = torch.zeros(ctx.batch, dtype=torch.bool, device=x.device)
        ctx.state[self.flag_key] = torch.where(self.rows & ctx.prefilling(), fire, old)
        return x


def flag_reader(flag_key: object) -> RowSelector:
    """The row selector of ops gated by a sensor: the rows whose flag is set (none before the sensor ran)."""
    def rows(ctx: StepContext) -> torch.Tensor:
        flag = ctx.state.get(flag_key)
        if flag is None:
            return torch.zeros(ctx.batch, dtype=torch.bool, device=ctx.device)
        return flag

    return rows
