"""Compile recipes (one per batch row, or one for all) into ordered ops per site.

Rows are grouped so each decoding step runs one vectorised op per (site, slot, kind): a row's
``k``-th intervention at a site sits in slot ``k``; rows with different recipes at the same slot
and of the same kind share one op with stacked parameters; rows without one are masked out.
Conditional interventions add a *sensor* op at their condition site that sets a per-row flag.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from ..sites import Site
from .base import Intervention, compile_rows
from .conditional import Conditional
from .positions import StepContext
from .steering import Steering

SiteOp = Callable[[torch.Tensor, StepContext], torch.Tensor]


def rows_of(steering, batch: int) -> list[Steering | None]:
    """Normalise ``steering`` (None, one recipe or intervention, or one per row) to a per-row list."""
    from ..errors import SteerlabError

    if steering is None:
        return [None] * batch
    if isinstance(steering, Intervention):
        steering = Steering([steering])
    if isinstance(steering, Steering):
        return [steering] * batch
    rows = list(steering)
    if len(rows) != batch:
        raise SteerlabError(f"steering has {len(rows)} recipes but there are {batch} prompts; give one per prompt")
    out = []
    for r in rows:
        if r is None or isinstance(r, Steering):
            out.append(r)
        elif isinstance(r, Intervention):
            out.append(Steering([r]))
        else:
            raise SteerlabError(f"steering entries must be Steering, an intervention or None, got {type(r).__name__}")
    return out


class SensorOp:
    """Reads a condition site on the prompt pass and stores each row's flag in ``ctx.state``."""

    def __init__(self, items: list[Conditional | None], site: Site, shape, like: torch.Tensor, flag_key):
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
        score = Conditional.score(x, self.c, ctx.mask("prompt"), self.metric, self.aggregate)
        fire = self.sign * (score - self.threshold) > 0
        old = ctx.state.get(self.flag_key)
        if old is None:
            old = torch.zeros(ctx.batch, dtype=torch.bool, device=x.device)
        ctx.state[self.flag_key] = torch.where(self.rows, fire, old)
        return x


def _flag_reader(flag_key):
    def rows(ctx: StepContext) -> torch.Tensor:
        flag = ctx.state.get(flag_key)
        if flag is None:
            return torch.zeros(ctx.batch, dtype=torch.bool, device=ctx.device)
        return flag

    return rows


def build_plan(
    steering,
    batch: int,
    n_layers: int,
    shape_of: Callable[[Site], tuple[int, ...]],
    like: torch.Tensor,
) -> dict[Site, list[SiteOp]]:
    """Per-site ordered ops for ``steering`` over a batch of ``batch`` rows."""
    rows = rows_of(steering, batch)
    groups: dict[tuple, list] = defaultdict(lambda: [None] * batch)
    sensors: dict[tuple, list] = defaultdict(lambda: [None] * batch)
    for b, recipe in enumerate(rows):
        if recipe is None:
            continue
        slots: dict[Site, int] = defaultdict(int)
        conditionals = 0
        for item in recipe:
            flag_key, inner = None, item
            if isinstance(item, Conditional):
                flag_key = ("conditional", conditionals)
                conditionals += 1
                sensors[(item.condition_site(n_layers), flag_key, item.sensor_key())][b] = item
                inner = item.inner
            for site in inner.targets(n_layers):
                slot = slots[site]
                slots[site] += 1
                groups[(site, slot, inner.group_key(), flag_key)][b] = inner
    plan: dict[Site, list[SiteOp]] = defaultdict(list)
    for (site, flag_key, _), items in sensors.items():
        plan[site].append(SensorOp(items, site, shape_of(site), like, flag_key))
    for (site, _slot, _key, flag_key), items in sorted(groups.items(), key=lambda kv: kv[0][1]):
        extra = _flag_reader(flag_key) if flag_key is not None else None
        plan[site].append(compile_rows(items, site, shape_of(site), like, extra))
    return dict(plan)
