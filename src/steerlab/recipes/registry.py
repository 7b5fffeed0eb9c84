"""The methods ``steerlab compare`` knows, by name: how each is fitted and its default strength grid.

Each entry fits from a ``FitContext`` (the training pairs and shared captures) and returns a
``Fitted`` that builds one recipe per strength. Defaults follow each method's paper; the strength grids
were set on the embedded model (SmolLM2-135M) so each spans "no visible effect" to "clearly
degraded", and can be overridden per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..data.contrastive import ContrastiveSet
from ..errors import SteerlabError
from ..models import Model
from .ablation import directional_ablation
from .angular import angular
from .base import Fitted
from .caa import activation_addition, caa
from .cast import cast
from .context import FitContext
from .refusal import refusal_addition
from .repe import repe
from .selective import selective


@dataclass(frozen=True)
class MethodSpec:
    """A method: its name, what its strength means, its default grid and how to fit it."""

    name: str
    param: str
    strengths: tuple[float, ...]
    summary: str
    fit: Callable[[FitContext, tuple[float, ...]], Fitted]


def _fit_add(ctx: FitContext, strengths: tuple[float, ...]) -> Fitted:
    layer = ctx.layers(1)[0]
    d = ctx.mean_diff
    return Fitted("add", "alpha", strengths, lambda a: caa(d, layer, a),
                  {"layers": [layer], "site": "resid_post", "positions": "last", "vector": "mean_diff (raw)",
                   "vector_norm": round(float(d[layer].norm()), 3)})


def _fit_add_multi(ctx: FitContext, strengths: tuple[float, ...]) -> Fitted:
    layers = ctx.layers(5)
    d = ctx.mean_diff
    return Fitted("add_multi", "alpha", strengths, lambda a: activation_addition(d, layers, a),
                  {"layers": layers, "site": "resid_post", "positions": "last", "vector": "mean_diff (raw)",
                   "vector_norms": {layer: round(float(d[layer].norm()), 3) for layer in layers}})


def _fit_pca(ctx: FitContext, strengths: tuple[float, ...]) -> Fitted:
    layers = ctx.layers(max(3, ctx.model.n_layers // 4))
    d = ctx.pca
    return Fitted("pca", "coeff", strengths, lambda c: repe(d, layers, c),
                  {"layers": layers, "site": "resid_post", "positions": "all", "vector": "pca_diff (unit)",
                   "explained": {layer: round(d.meta["scores"][layer], 3) for layer in layers}})


def _fit_ablate(ctx: FitContext, strengths: tuple[float, ...]) -> Fitted:
    if ctx.score is not None:
        sel = ctx.selection
        direction, source = sel.direction, f"refusal-direction selection (resid_pre, layer {sel.layer})"
    else:
        layer = ctx.layers(1)[0]
        direction, source = ctx.mean_diff.select([layer]), f"mean_diff at resid_post, layer {layer}"
    bad = [s for s in strengths if s not in (0, 1)]
    if bad:
        raise SteerlabError(f"ablate strengths must be 0 (off) or 1 (on), got {bad}")
    return Fitted("ablate", "applied", strengths, lambda s: directional_ablation(direction),
                  {"direction": source, "sites": "embed + every attn_out and mlp_out"})


def _fit_refusal(ctx: FitContext, strengths: tuple[float, ...]) -> Fitted:
    sel = ctx.selection
    info = {"layer": sel.layer, "site": "resid_pre", "positions": "all", "score": ctx.required_score().name,
            "relaxed_rules": sel.relaxed, "baseline_scores": sel.baseline,
            "candidates": sel.table.round(4).to_dict("records"), "val_pairs": len(ctx.split[1]),
            "fit_pairs": len(ctx.split[0])}
    return Fitted("refusal", "coeff", strengths, lambda c: refusal_addition(sel.direction, sel.layer, c), info)


def _plane_info(ctx: FitContext) -> dict:
    plane = ctx.plane
    consistency = None if plane.consistency is None else round(float(plane.consistency.max()), 4)
    return {"b1_source": plane.source, "b1_consistency": consistency,
            "b2": "first PC of the candidates, orthogonalised", "sites": "attn_in + mlp_in (pre-norm outputs)"}


def _fit_angular(ctx: FitContext, strengths: tuple[float, ...]) -> Fitted:
    plane = ctx.plane
    return Fitted("angular", "angle_deg", strengths, lambda t: angular(plane.b1, plane.b2, t, adaptive=True),
                  {**_plane_info(ctx), "layers": "all", "mode": "absolute", "adaptive": True, "threshold": 0.0},
                  identity=None)


def _fit_selective(ctx: FitContext, strengths: tuple[float, ...]) -> Fitted:
    plane = ctx.plane
    layers, table = ctx.discriminative
    if not layers:
        raise SteerlabError("Selective Steering found no discriminative layer (no layer where positives and "
                            "negatives project with opposite signs on b1)")
    return Fitted("selective", "angle_deg", strengths, lambda t: selective(plane.b1, plane.b2, t, layers),
                  {**_plane_info(ctx), "layers": layers, "mode": "relative",
                   "hook_points_opposite": int(table["opposite"].sum()), "hook_points": len(table)})


def _fit_cast(ctx: FitContext, strengths: tuple[float, ...]) -> Fitted:
    layers = ctx.layers(max(3, ctx.model.n_layers // 4))
    vectors = ctx.pca_center_pre
    cond = ctx.condition_fit
    return Fitted("cast", "alpha", strengths, lambda a: cast(vectors, layers, a, cond),
                  {"layers": layers, "site": "resid_pre", "vector": "pca_center (unit)",
                   "condition_layer": cond.layer, "condition_threshold": cond.threshold,
                   "condition_comparator": cond.comparator, "condition_f1_train": round(cond.f1, 4),
                   "condition_metric": cond.metric})


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("add", "alpha", (0.0, 1.0, 2.0, 3.0, 4.0),
               "CAA: mean difference added at one layer, after the instruction", _fit_add),
    MethodSpec("add_multi", "alpha", (0.0, 0.25, 0.5, 1.0, 1.5),
               "activation addition of the mean difference at 5 consecutive layers", _fit_add_multi),
    MethodSpec("pca", "coeff", (0.0, 2.0, 4.0, 8.0, 16.0),
               "RepE/repeng: unit PCA vectors added over a band of layers, all positions", _fit_pca),
    MethodSpec("ablate", "applied", (0.0, 1.0),
               "directional ablation of one direction at every writer of the residual stream", _fit_ablate),
    MethodSpec("refusal", "coeff", (0.0, 0.5, 1.0, 2.0, 3.0),
               "refusal-style addition at one layer's input, direction chosen by bypass/induce/KL", _fit_refusal),
    MethodSpec("angular", "angle_deg", (0.0, 30.0, 60.0, 90.0, 180.0),
               "Angular Steering: absolute angle in the (b1, b2) plane, adaptive mask, every layer", _fit_angular),
    MethodSpec("selective", "angle_deg", (0.0, 45.0, 90.0, 180.0, 270.0),
               "Selective Steering: relative norm-preserving rotation at the discriminative layers", _fit_selective),
    MethodSpec("cast", "alpha", (0.0, 2.0, 4.0, 8.0, 16.0),
               "CAST: PCA behaviour vectors added only when the prompt's condition fires", _fit_cast),
)}


def method_names() -> list[str]:
    """The names ``fit`` and ``steerlab compare --methods`` accept."""
    return list(METHODS)


def spec(name: str) -> MethodSpec:
    """The method called ``name``; a clear error for an unknown one."""
    if name not in METHODS:
        raise SteerlabError(f"method {name!r} is not known; choose from {', '.join(METHODS)}")
    return METHODS[name]


def fit(model: Model, method: str, pairs: ContrastiveSet | None = None, strengths: Iterable[float] | None = None,
        context: FitContext | None = None, **options: Any) -> Fitted:
    """Fit ``method`` on training ``pairs`` (or a shared ``context``) and return its ``Fitted``.

    ``options`` go to ``FitContext`` (``chat``, ``score``, ``condition``, ...) when no context is given.
    """
    entry = spec(method)
    if context is None:
        if pairs is None:
            raise SteerlabError("fit needs training pairs or a FitContext")
        context = FitContext(model, pairs, **options)
    grid = tuple(float(s) for s in (strengths if strengths is not None else entry.strengths))
    if not grid:
        raise SteerlabError(f"strengths for {method!r} is empty; give at least one value")
    return entry.fit(context, grid)
