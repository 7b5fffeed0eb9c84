"""Build the plan: recipes (one per batch row, or one for all) into ordered ops per site.

Rows are grouped so each decoding step runs one vectorised op per (site, slot, kind): a row's
``k``-th intervention at a site sits in slot ``k``; rows with different recipes at the same slot
and of the same kind share one op with stacked parameters; rows without one are masked out.
Conditional interventions add a *sensor* op at their condition site that sets a per-row flag.
The ops themselves (stacking, masks, sensors) live in ``batched.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import torch

from ..errors import SteerlabError
from ..sites import Site
from .base import Intervention
from .batched import SensorOp, compile_rows, flag_reader
from .conditional import Conditional
from .positions import StepContext
from .steering import Steering
from .weighted import Weighted

SiteOp = Callable[[torch.Tensor, StepContext], torch.Tensor]
#: what a forward pass accepts as ``steering``: nothing, one recipe or intervention, or one per row
SteeringArg: TypeAlias = Steering | Intervention | Iterable[Steering | Intervention | None] | None


def rows_of(steering: SteeringArg, batch: int) -> list[Steering | None]:
    """Normalise ``steering`` (None, one recipe or intervention, or one per row) to a per-row list."""
    if steering is None:
        return [None] * batch
    if isinstance(steering, Intervention):
        steering = Steering([steering])
    if isinstance(steering, Steering):
        return [steering] * batch
    rows = list(steering)
    if len(rows) != batch:
        raise SteerlabError(f"steering has {len(rows)} recipes but there are {batch} prompts; give one per prompt")
    out: list[Steering | None] = []
    for r in rows:
        if r is None or isinstance(r, Steering):
            out.append(r)
        elif isinstance(r, Intervention):
            out.append(Steering([r]))
        else:
            raise SteerlabError(f"steering entries must be Steering, an intervention or None, got {type(r).__name__}")
    return out


def build_plan(
    steering: SteeringArg,
    batch: int,
    n_layers: int,
    shape_of: Callable[[Site], tuple[int, ...]],
    like: torch.Tensor,
) -> dict[Site, list[SiteOp]]:
    """Per-site ordered ops for ``steering`` over a batch of ``batch`` rows."""
    rows = rows_of(steering, batch)
    groups: defaultdict[tuple[Any, ...], list[Intervention | None]] = defaultdict(lambda: [None] * batch)
    sensors: defaultdict[tuple[Any, ...], list[Conditional | None]] = defaultdict(lambda: [None] * batch)
    weighted: dict[int, tuple[Weighted, torch.Tensor]] = {}
    for b, recipe in enumerate(rows):
        if recipe is None:
            continue
        slots: dict[Site, int] = defaultdict(int)
        conditionals = 0
        for item in recipe:
            if isinstance(item, Weighted):  # its own reader and writer ops, one set per distinct controller
                weighted.setdefault(id(item), (item, torch.zeros(batch, dtype=torch.bool)))[1][b] = True
                continue
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
    for (site, flag_key, _), sensed in sensors.items():
        plan[site].append(SensorOp(sensed, site, shape_of(site), like, flag_key))
    for (site, _slot, _key, flag_key), items in sorted(groups.items(), key=lambda kv: kv[0][1]):
        extra = flag_reader(flag_key) if flag_key is not None else None
        plan[site].append(compile_rows(items, site, shape_of(site), like, extra))
    for item, held in weighted.values():
        for site, op in item.ops(held, n_layers, shape_of(site_of(item, n_layers))[-1], like):
            plan[site].append(op)
    return dict(plan)


def site_of(item: Intervention, n_layers: int) -> Site:
    """The first site ``item`` acts on (to read the model's width there)."""
    return item.targets(n_layers)[0]
