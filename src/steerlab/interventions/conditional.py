"""Conditional steering: apply an intervention only to rows whose prompt activates a condition direction.

CAST (Lee et al., 2024, "Programming Refusal with Conditional Activation Steering").

On the forward pass that holds the prompt, a *sensor* at ``layers.{layer}.{site}`` aggregates each
row's prompt tokens (``mean`` or ``last``) into ``h̄`` and scores it against the condition vector
``c``; the row fires when ``score > threshold`` (``comparator=">"``) or ``score < threshold``
(``"<"``). The flag then holds for the whole generation. Scores (``metric``):

- ``"cast"``: ``cos(h̄, tanh(P_c h̄))`` with ``P_c = ĉ ĉᵀ``, as in IBM's activation-steering code;
- ``"cosine"``: ``cos(h̄, c)``;
- ``"projection"``: ``h̄·ĉ``.

Prompt tokens are only steered at layers after the condition layer (the flag is not known before);
generated tokens are steered everywhere once the flag is set.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SteerlabError
from ..sites import Site, check_kind, normalize_layers
from .base import (
    MAX_VALUE,
    Capabilities,
    Intervention,
    Params,
    VectorLike,
    at_layer,
    check_width,
    finite,
    intervention_class,
    numel,
    unit,
)

METRICS = ("cast", "cosine", "projection")
AGGREGATES = ("mean", "last")


class Conditional(Intervention):
    """Wrap ``intervention`` so it fires per row when the condition at ``layer`` passes ``threshold``."""

    kind = "conditional"
    sensor = True

    def __init__(self, intervention: Intervention, condition: VectorLike, layer: int, threshold: float,
                 site: str = "resid_post", comparator: str = ">", metric: str = "cast", aggregate: str = "mean"):
        if not isinstance(intervention, Intervention) or isinstance(intervention, Conditional):
            raise SteerlabError("Conditional wraps one non-conditional intervention, e.g. Conditional(Add(v), ...)")
        if comparator not in (">", "<"):
            raise SteerlabError(f"comparator={comparator!r} is not allowed; use '>' or '<'")
        if metric not in METRICS:
            raise SteerlabError(f"metric={metric!r} is not allowed; use one of {', '.join(METRICS)}")
        if aggregate not in AGGREGATES:
            raise SteerlabError(f"aggregate={aggregate!r} is not allowed; use one of {', '.join(AGGREGATES)}")
        self.inner = intervention
        self.provenance = intervention.provenance
        self.site = intervention.site
        self.layers = intervention.layers
        self.positions = intervention.positions
        self.condition = self._tensor_arg(condition, "Conditional condition")
        self.condition_layer = int(layer)
        self.condition_kind = check_kind(site)
        self.threshold = finite(threshold, "Conditional threshold", MAX_VALUE)
        self.comparator = comparator
        self.metric = metric
        self.aggregate = aggregate

    def capabilities(self) -> Capabilities:
        """A sensor: whether it acts on a row depends on that row's prompt, so it is neither affine nor context-free."""
        return Capabilities(affine=False, sensor=True, context_free=False, flat=self.inner.flat)

    def targets(self, n_layers: int) -> list[Site]:
        return self.inner.targets(n_layers)

    def condition_site(self, n_layers: int) -> Site:
        (layer,) = normalize_layers([self.condition_layer], n_layers)
        return Site(self.condition_kind, layer)

    # --- the sensor ---------------------------------------------------------------------------
    def sensor_params(self, site: Site, shape: tuple[int, ...]) -> Params:
        c = at_layer(self.condition, site, "Conditional condition").flatten()
        c = unit(check_width(c, numel(shape), site, "Conditional condition"), "Conditional condition")
        sign = 1.0 if self.comparator == ">" else -1.0
        return {"c": c, "threshold": torch.tensor([self.threshold]), "sign": torch.tensor([sign])}

    def sensor_key(self) -> tuple[str, str]:
        return (self.metric, self.aggregate)

    @staticmethod
    def score(x: torch.Tensor, c: torch.Tensor, prompt: torch.Tensor, metric: str, aggregate: str) -> torch.Tensor:
        """Per-row condition score from ``x`` ``[B, T, D]``, unit ``c`` ``[B|1, D]`` and the prompt mask ``[B, T]``."""
        x = x.flatten(2).float()
        if aggregate == "last":
            last = (prompt.cumsum(1) == prompt.sum(1, keepdim=True)) & prompt
            h = (x * last[..., None]).sum(1)
        else:
            h = (x * prompt[..., None]).sum(1) / prompt.sum(1, keepdim=True).clamp_min(1)
        c = c.float()
        proj = (h * c).sum(-1, keepdim=True)
        if metric == "projection":
            return proj[:, 0]
        target = c.expand_as(h) if metric == "cosine" else torch.tanh(proj * c)
        return torch.nn.functional.cosine_similarity(h, target, dim=-1)

    # --- saving -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "intervention": {"kind": self.inner.kind, "config": self.inner.config()},
            "layer": self.condition_layer, "threshold": self.threshold, "site": self.condition_kind,
            "comparator": self.comparator, "metric": self.metric, "aggregate": self.aggregate,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"inner.{k}": v for k, v in self.inner.tensors().items()}
        if isinstance(self.condition, dict):
            out.update({f"condition.{layer}": t for layer, t in self.condition.items()})
        else:
            out["condition"] = self.condition
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Conditional:
        cfg = dict(config)
        spec = cfg.pop("intervention")
        inner_cls = intervention_class(spec["kind"])
        inner = inner_cls.from_config(spec["config"], {k[6:]: v for k, v in tensors.items() if k.startswith("inner.")})
        condition: torch.Tensor | dict[int, torch.Tensor]
        if "condition" in tensors:
            condition = tensors["condition"]
        else:
            condition = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("condition.")}
        return cls(inner, condition, **cfg)

    def __call__(self, x: torch.Tensor, site: Site | str | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        raise SteerlabError("a Conditional needs a model forward pass (its condition is read at another site); "
                            "use it in a Steering recipe")
