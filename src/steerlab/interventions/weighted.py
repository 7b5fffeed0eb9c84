"""Weighted activation steering by a small controller (Guiding Giants, Hegazy et al., 2025).

At each forward pass a controller MLP reads the newest token's block outputs at ``input_layers``
(concatenated), and outputs a scalar logit ``s`` and one weight logit per steered layer; the
steered layers then get ``h_l <- h_l + s * scale * sigmoid(w_l) * r̂_l`` at the newest token only
(the last prompt token on the prompt pass, each generated token at its own step). ``s`` is the
raw, unsigmoided logit, so prompts the controller calls harmless are pushed the other way.

Causality: the controller runs inside the same forward pass, so every steered layer must come
after the last input layer (the paper's code reads the last four layers and steers all of them,
which one pass cannot do for the token being computed; here the inputs are earlier layers).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SteerlabError
from ..sites import Site, check_kind, normalize_layers
from .base import (
    Capabilities,
    Intervention,
    Layers,
    VectorLike,
    as_tensor,
    at_layer,
    check_width,
    describe_layers,
    per_layer,
    unit,
)
from .positions import StepContext

#: the controller's tensors and their roles: ``hidden = relu(w1 x + b1)``, ``out = w2 hidden + b2``
CONTROLLER = ("w1", "b1", "w2", "b2")


class Weighted(Intervention):
    """Add ``s * scale * w_l * r̂_l`` at the newest token of each steered layer, ``(s, w)`` from a controller.

    ``controller``: ``{"w1": [H, k*d], "b1": [H], "w2": [1 + n_steered, H], "b2": [1 + n_steered]}``
    (output 0 is ``s``, output ``1 + j`` the weight logit of the ``j``-th steered layer in order);
    ``direction``: a Direction or ``{layer: vector}`` (normalised per layer) or one vector ``[d]``.
    """

    kind = "weighted"
    sensor = True
    needs_context = True
    scalar_args = ("scale",)

    def __init__(self, controller: dict[str, Any], direction: VectorLike, input_layers: Layers, layers: Layers,
                 scale: float = 4.0, site: str = "resid_post", input_site: str = "resid_post"):
        super().__init__(layers=layers, site=site, positions="last")
        missing = [k for k in CONTROLLER if k not in controller]
        if missing:
            raise SteerlabError(f"Weighted controller lacks tensors {missing}; it needs {list(CONTROLLER)}")
        self.controller = {k: as_tensor(controller[k], f"Weighted controller {k}").float() for k in CONTROLLER}
        w1, b1, w2, b2 = (self.controller[k] for k in CONTROLLER)
        if w1.dim() != 2 or w2.dim() != 2 or b1.shape != (w1.shape[0],) or w2.shape[1] != w1.shape[0] \
                or b2.shape != (w2.shape[0],):
            raise SteerlabError(f"Weighted controller shapes do not chain: w1 {tuple(w1.shape)}, b1 {tuple(b1.shape)}, "
                                f"w2 {tuple(w2.shape)}, b2 {tuple(b2.shape)}")
        self.direction = self._tensor_arg(direction, "Weighted direction")
        self.input_layers = input_layers
        self.input_site = check_kind(input_site)
        self.scale = float(scale)

    def capabilities(self) -> Capabilities:
        """A sensor: how much it adds depends on each token's own hidden states, so nothing about it is affine."""
        return Capabilities(affine=False, sensor=True, context_free=False, flat=True)

    def default_layers(self) -> list[int] | None:
        return sorted(self.direction) if isinstance(self.direction, dict) else None

    def layout(self, n_layers: int) -> tuple[list[int], list[int]]:
        """``(input layers, steered layers)`` resolved for a model of ``n_layers``; checks causality and widths."""
        inputs = normalize_layers(self.input_layers, n_layers)
        steered = [s.layer for s in self.targets(n_layers)]
        assert all(layer is not None for layer in steered)
        out = [int(layer) for layer in steered if layer is not None]
        if min(out) <= max(inputs):
            raise SteerlabError(f"Weighted steers layers {out} but its controller reads layers {inputs}: every steered "
                                "layer must come after the last input layer (the controller runs inside the same "
                                "forward pass)")
        n_out = self.controller["w2"].shape[0]
        if n_out != 1 + len(out):
            raise SteerlabError(f"Weighted controller has {n_out} outputs but there are {len(out)} steered layers; "
                                f"it needs 1 + {len(out)}")
        return inputs, out

    # --- the ops the plan runs -------------------------------------------------------------------
    def ops(self, rows: torch.Tensor, n_layers: int, width: int,
            like: torch.Tensor) -> list[tuple[Site, Any]]:
        """``(site, op)`` pairs: a reader at each input layer (the last one runs the controller) and a
        writer at each steered layer; ``rows`` ``[B]`` marks the batch rows holding this intervention."""
        inputs, out = self.layout(n_layers)
        d = width
        w1 = self.controller["w1"]
        if w1.shape[1] != d * len(inputs):
            raise SteerlabError(f"Weighted controller reads {w1.shape[1]} numbers but {len(inputs)} input layers of "
                                f"width {d} give {d * len(inputs)}; was it trained for another model or other layers?")
        dev = like.device
        ctrl = {k: v.to(dev) for k, v in self.controller.items()}
        key = ("weighted", id(self))
        rows = rows.to(dev)
        found: list[tuple[Site, Any]] = []
        for i, layer in enumerate(inputs):
            found.append((Site(self.input_site, layer),
                          _Reader(key, i, len(inputs), ctrl if i == len(inputs) - 1 else None)))
        for j, layer in enumerate(out):
            site = Site(self.site, layer)
            r = unit(check_width(at_layer(self.direction, site, "Weighted direction").flatten(), d, site,
                                 "Weighted direction"), "Weighted direction").to(dev)
            found.append((site, _Writer(key, j, r, self.scale, rows)))
        return found

    def params(self, site: Site, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        raise SteerlabError("Weighted has no per-site parameters; it runs as its own ops in a Steering recipe")

    # --- saving -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        out = super().config()
        out.pop("positions")
        out["input_layers"] = describe_layers(self.input_layers)
        out["input_site"] = self.input_site
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"controller.{k}": v for k, v in self.controller.items()}
        if isinstance(self.direction, dict):
            out.update({f"direction.{layer}": t for layer, t in self.direction.items()})
        else:
            out["direction"] = self.direction
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Weighted:
        ctrl = {k[len("controller."):]: v for k, v in tensors.items() if k.startswith("controller.")}
        direction: Any = tensors.get("direction")
        if direction is None:
            direction = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("direction.")}
        return cls(ctrl, per_layer(direction, "Weighted direction"), **config)

    def __call__(self, x: torch.Tensor, site: Site | str | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        raise SteerlabError("a Weighted intervention needs a model forward pass (its controller reads other layers); "
                            "use it in a Steering recipe")


def newest(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's vector at its last masked column of ``x`` ``[B, T, D]``, and whether the row has one ``[B]``."""
    idx = torch.arange(mask.shape[1], device=x.device)
    last = (mask.long() * (idx + 1)).argmax(1)
    has = mask.any(1)
    return x[torch.arange(x.shape[0], device=x.device), last], has


def controller_forward(ctrl: dict[str, torch.Tensor], features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s [B], w [B, n])`` from ``features`` ``[B, k*d]``: raw scalar logit and sigmoid layer weights."""
    hidden = torch.relu(features.float() @ ctrl["w1"].T + ctrl["b1"])
    out = hidden @ ctrl["w2"].T + ctrl["b2"]
    return out[:, 0], torch.sigmoid(out[:, 1:])


class _Reader:
    """Keeps the newest token's state at one input layer for this pass; the last reader runs the controller."""

    def __init__(self, key: tuple[Any, ...], index: int, count: int, ctrl: dict[str, torch.Tensor] | None):
        self.key, self.index, self.count, self.ctrl = key, index, count, ctrl

    def __call__(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if x.shape[1] != ctx.width:
            ctx = ctx.tail(x.shape[1])
        mask = ctx.mask("last")
        assert mask is not None
        h, _ = newest(x, mask & ctx.real())   # "last" also covers right padding after a row's end
        ctx.memo[self.key + ("in", self.index)] = h
        if self.ctrl is not None:
            feats = torch.cat([ctx.memo.pop(self.key + ("in", i)) for i in range(self.count)], -1)
            s, w = controller_forward(self.ctrl, feats)
            ctx.memo[self.key + ("out",)] = (s, w)
        return x


class _Writer:
    """Adds ``s * scale * w_j * r̂`` at the newest token of the rows holding the intervention."""

    def __init__(self, key: tuple[Any, ...], j: int, r: torch.Tensor, scale: float, rows: torch.Tensor):
        self.key, self.j, self.r, self.scale, self.rows = key, j, r, scale, rows

    def __call__(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if x.shape[1] != ctx.width:
            ctx = ctx.tail(x.shape[1])
        out = ctx.memo.get(self.key + ("out",))
        if out is None:
            raise SteerlabError("the Weighted controller did not run before a steered layer in this forward pass; "
                                "its input layers must come before every steered layer")
        s, w = out
        mask = ctx.mask("last")
        assert mask is not None
        coeff = (s * w[:, self.j] * self.scale).to(x.dtype)                       # [B]
        gate = (mask & self.rows[:, None]).to(x.dtype)                           # [B, T]
        return x + (gate * coeff[:, None])[..., None] * self.r.to(x.dtype)
