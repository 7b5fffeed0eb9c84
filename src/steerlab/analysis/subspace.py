"""Is a patched subspace real, or an interpretability illusion? (Makelov et al. 2023)

A 1-D subspace patch along unit ``v`` writes ``h_base + ((h_src − h_base)·v) v``. Split ``v`` into
its part in the row space of the weights that read the site (``v_row``, what downstream can see)
and its part in their null space (``v_null``, invisible downstream). The illusion: the source/base
difference lies mostly along ``v_null`` (causally disconnected) while ``v_row`` is dormant (barely
varies), yet the patch copies the large ``v_null`` difference onto ``v`` and so into ``v_row``,
changing the output although the model never uses that direction. A faithful direction keeps its
effect through the row-space part, and that part itself differs between source and base.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..errors import SteerlabError
from ..interventions import Patch
from ..sites import LAYER_KINDS, normalize_layers
from ._common import make_metric, pairs_of, resolve_position, token_ids
from .heads import o_proj_weight

if TYPE_CHECKING:
    from ..models.model import Model

PARTS = ("direction", "row_space", "null_space", "component")


def reader_weight(model: Model, site: str, layer: int) -> torch.Tensor:
    """The weights ``[out, width]`` that read a site: ``W_down`` for ``mlp.neurons``, ``W_O`` for ``attn.heads``."""
    if site == "mlp.neurons":
        bound = model.bound
        return bound.linear_weight(bound.projection(layer, "down_proj")).detach().float().cpu()
    if site == "attn.heads":
        return o_proj_weight(model, layer)
    raise SteerlabError(f"site={site!r} has no single reading matrix; pass reader=<tensor [out, width]> "
                        "(e.g. the stacked weights of every module that reads it)")


def split_direction(v: torch.Tensor, reader: torch.Tensor, tol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v_row, v_null)``: the parts of ``v`` in the row space and the null space of ``reader`` ``[out, width]``.

    Singular values below ``tol`` times the largest count as zero.
    """
    v = v.float().flatten()
    if reader.shape[-1] != v.numel():
        raise SteerlabError(f"direction has width {v.numel()} but the reader reads width {reader.shape[-1]}")
    _, s, vh = torch.linalg.svd(reader.float(), full_matrices=False)
    basis = vh[s > tol * s.max()]
    v_row = basis.T @ (basis @ v)
    return v_row, v - v_row


@dataclass
class SubspaceCheck:
    """The verdict (``illusion``), the ``reasons`` behind it, and the ``table`` (one row per part).

    Table columns: ``part`` (direction, row_space, null_space, component), ``norm`` (of the part of unit v),
    ``delta`` (mean source − base difference along the part's unit vector; for the component, the
    norm of the whole difference), ``effect`` (mean metric change) and ``normalized``
    (effect / (source − base metric)).
    """

    illusion: bool
    reasons: list[str]
    table: pd.DataFrame
    meta: dict = field(default_factory=dict)


def subspace_check(model, base, source, direction, layer: int, site: str = "mlp.neurons", answers=None, gold=None,
                   position: int = -1, reader: torch.Tensor | None = None, min_effect: float = 0.2,
                   chat: bool = False, batch_size: int = 16) -> SubspaceCheck:
    """Patch ``direction`` (and its row-space part, its null-space part, and the whole component) from
    ``source`` into ``base`` at ``layers.{layer}.{site}``, token ``position``, and flag the illusion pattern.

    ``direction``: a vector of the site's width, or a ``Direction`` (its vector at ``layer``).

    Flagged when the direction's patch has a real effect (|normalized| ≥ ``min_effect``) but its
    row-space part alone carries less than half of it, and the source/base difference along the
    row-space part is smaller than along the null-space part (the row part is dormant). A direction
    whose whole-component patch has much less effect is reported too (the "MLP-in-the-middle" flag).
    """
    base, source = pairs_of(base, source, ("base", "source"))
    if site not in LAYER_KINDS:
        raise SteerlabError(f"site={site!r} must be a per-layer kind: {', '.join(LAYER_KINDS)}")
    layer = normalize_layers([layer], model.n_layers)[0]
    width = 1
    for s in model.site_shape(f"layers.{layer}.{site}"):
        width *= s
    if hasattr(direction, "layers") and not isinstance(direction, torch.Tensor):  # a Direction
        direction = direction[layer]
    v = torch.as_tensor(direction, dtype=torch.float32).flatten()
    if v.numel() != width or float(v.norm()) == 0:
        raise SteerlabError(f"direction must be a non-zero vector of width {width} at {site}, got {tuple(v.shape)}")
    v = v / v.norm()
    w = reader if reader is not None else reader_weight(model, site, layer)
    v_row, v_null = split_direction(v, torch.as_tensor(w))
    n = len(base)
    metric = make_metric(model.tokenizer, n, answers, gold)
    name = f"layers.{layer}.{site}"
    acts_b = model.capture(base, sites=name, positions="all", chat=chat, progress=False)[name]
    acts_s = model.capture(source, sites=name, positions="all", chat=chat, progress=False)[name]
    ids_b, ids_s = token_ids(model, base, chat), token_ids(model, source, chat)
    pb = [resolve_position(position, len(x)) for x in ids_b]
    ps = [resolve_position(position, len(x)) for x in ids_s]
    h_b = torch.stack([acts_b[i][p].flatten() for i, p in enumerate(pb)])
    h_s = torch.stack([acts_s[i][p].flatten() for i, p in enumerate(ps)])
    logits0 = model.logits(base + source, chat=chat, batch_size=batch_size, progress=False)
    m_base, m_src = metric(logits0[:n], torch.arange(n)), metric(logits0[n:], torch.arange(n))
    parts = {"direction": v, "row_space": v_row, "null_space": v_null, "component": None}
    texts, recipes, jobs = [], [], []
    for part, vec in parts.items():
        if vec is not None and float(vec.norm()) < 1e-6:
            continue
        for i in range(n):
            kw = {} if vec is None else {"direction": vec / vec.norm()}
            recipes.append(Patch(h_s[i], layers=[layer], site=site, positions=[pb[i]], **kw))
            texts.append(base[i])
            jobs.append((part, i))
    values = metric(model.logits(texts, steering=recipes, chat=chat, batch_size=batch_size, progress=False),
                    torch.tensor([j[1] for j in jobs]))
    diff = h_s - h_b
    span = m_src - m_base
    rows = []
    for part, vec in parts.items():
        picked = [k for k, j in enumerate(jobs) if j[0] == part]
        effect = torch.stack([values[k] - m_base[jobs[k][1]] for k in picked]) if picked else torch.zeros(n)
        norm = None if vec is None else float(vec.norm())
        if vec is None or norm is None:
            delta = float(diff.norm(dim=-1).mean())
        else:
            delta = float((diff @ (vec / vec.norm())).mean()) if norm > 1e-6 else 0.0
        ratio = effect / torch.where(span.abs() > 1e-9, span, torch.full_like(span, float("nan")))
        rows.append({"part": part, "norm": norm, "delta": delta, "effect": float(effect.mean()),
                     "normalized": float(ratio.mean())})
    table = pd.DataFrame(rows)
    illusion, reasons = _verdict(table, min_effect)
    return SubspaceCheck(illusion, reasons, table, {"site": name, "position": position, "pairs": n})


def _verdict(table: pd.DataFrame, min_effect: float) -> tuple[bool, list[str]]:
    get = table.set_index("part")
    eff = {p: float(get.loc[p, "normalized"]) for p in PARTS}
    delta_row = abs(float(get.loc["row_space", "delta"])) * float(get.loc["row_space", "norm"])
    delta_null = abs(float(get.loc["null_space", "delta"])) * float(get.loc["null_space", "norm"])
    reasons = []
    if abs(eff["direction"]) < min_effect:
        reasons.append(f"the direction's patch moves the metric by {eff['direction']:.2f} of the source-base gap "
                       f"(< {min_effect}); nothing to explain")
        return False, reasons
    carried = eff["row_space"] / eff["direction"] if eff["direction"] else 0.0
    dormant = delta_row < delta_null
    reasons.append(f"row-space part carries {round(carried, 2) + 0.0:.0%} of the direction's effect")
    reasons.append(f"source-base difference along v: {delta_row:.3g} through the row-space part, "
                   f"{delta_null:.3g} through the null-space part" + (" (row part dormant)" if dormant else ""))
    if abs(eff["component"]) < 0.5 * abs(eff["direction"]):
        reasons.append(f"patching the whole component moves the metric less ({eff['component']:.2f}) than the "
                       f"1-D patch ({eff['direction']:.2f}): the MLP-in-the-middle red flag")
    illusion = carried < 0.5 and dormant
    reasons.insert(0, "illusion pattern: the effect comes from copying a null-space difference into a dormant "
                      "row-space direction" if illusion else "no illusion pattern: the row-space part carries the effect")
    return illusion, reasons
