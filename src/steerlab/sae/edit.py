"""Feature interventions inside an SAE's basis: clamp or scale chosen features at the SAE's site.

With ``error=True`` (the default) the SAE's reconstruction error is added back, so the output is
``x + (f' - f) @ W_dec`` with ``f`` the features of ``x`` and ``f'`` the edited ones: untouched features,
and everything the SAE does not explain, stay exactly as they were. With ``error=False`` the activation is
replaced by the SAE's (edited) reconstruction; with no edits that is the splice used to measure how much
next-token loss an SAE costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ShapeError, SteerlabError
from ..interventions.base import Intervention, Layers, Params, Positions, Static, masked, numel
from ..sites import Site

if TYPE_CHECKING:
    from typing_extensions import Self

from .model import SAE


def _edits(values: Mapping[Any, Any] | None, what: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for k, v in (values or {}).items():
        try:
            out[int(k)] = float(v)
        except (TypeError, ValueError):
            raise SteerlabError(f"SAEEdit {what} must map feature indices to numbers, got {k!r}: {v!r}") from None
    return out


class SAEEdit(Intervention):
    """Clamp features to values (``clamp={feature: value}``) and/or scale them (``scale={feature: factor}``)
    in ``sae``'s basis at its site; ``error`` adds the reconstruction error back (see the module doc)."""

    kind = "sae_edit"

    def __init__(self, sae: SAE, clamp: Mapping[Any, float] | None = None, scale: Mapping[Any, float] | None = None,
                 error: bool = True, layers: Layers = None, site: str | None = None, positions: Positions = "all"):
        if not isinstance(sae, SAE):
            raise SteerlabError(f"SAEEdit takes an SAE (steerlab.sae.SAE), got {type(sae).__name__}")
        if layers is None:
            if sae.layer is None:
                raise SteerlabError("this SAE records no layer; pass layers=")
            layers = [sae.layer]
        super().__init__(layers=layers, site=site or sae.site_kind,
                         positions=positions)
        self.sae = sae
        self.clamp = _edits(clamp, "clamp")
        self.scale = _edits(scale, "scale")
        both = sorted(set(self.clamp) & set(self.scale))
        if both:
            raise SteerlabError(f"SAEEdit features {both} are both clamped and scaled; give each feature one edit")
        bad = [i for i in [*self.clamp, *self.scale] if not 0 <= i < sae.d_sae]
        if bad:
            raise SteerlabError(f"SAEEdit features {bad} are out of range; this SAE has {sae.d_sae} features (0-"
                                f"{sae.d_sae - 1})")
        self.error = bool(error)
        model = sae.meta.get("model")
        self.provenance = {"model": model, "method": "sae_edit"} if isinstance(model, dict) else None

    def params(self, site: Site, shape: tuple[int, ...]) -> Params:
        if numel(shape) != self.sae.d_in:
            raise ShapeError(f"SAEEdit's SAE reads width {self.sae.d_in} but site {site.name} has width "
                             f"{numel(shape)}; was it trained for another model or site?")
        index = sorted([*self.clamp, *self.scale])
        value = [self.clamp.get(i, float("nan")) for i in index]
        factor = [self.scale.get(i, 1.0) for i in index]
        p = dict(self.sae.tensors())
        p.setdefault("threshold", torch.zeros(self.sae.d_sae))
        p["index"] = torch.tensor(index, dtype=torch.long)
        p["value"] = torch.tensor(value, dtype=torch.float32)
        p["factor"] = torch.tensor(factor, dtype=torch.float32)
        return p

    def static(self) -> Static:
        s = self.sae
        return {"architecture": s.architecture, "k": s.k, "b_dec_in": s.apply_b_dec_to_input,
                "rescale": s.rescale_acts_by_decoder_norm, "error": self.error, "d_sae": s.d_sae,
                "n_edits": len(self.clamp) + len(self.scale)}

    @classmethod
    def apply(cls, x: torch.Tensor, p: Params, mask: torch.Tensor | None, architecture: str = "standard",
              k: int | None = None, b_dec_in: bool = True, rescale: bool = False, error: bool = True,
              d_sae: int = 0, n_edits: int = 0) -> torch.Tensor:
        w_enc, w_dec = p["W_enc"][:, 0], p["W_dec"][:, 0]  # [B|1, d_in, d_sae], [B|1, d_sae, d_in]
        b_enc, b_dec = p["b_enc"], p["b_dec"]  # [B|1, 1, d_sae], [B|1, 1, d_in]
        pre = torch.matmul(x - b_dec if b_dec_in else x, w_enc) + b_enc
        norms = w_dec.norm(dim=-1)[:, None] if rescale else None  # [B|1, 1, d_sae]
        if architecture == "topk":
            pre = pre * norms if norms is not None else pre
            values, top = pre.topk(int(k or 0), dim=-1)
            f = torch.zeros_like(pre).scatter(-1, top, values.relu())
        else:
            f = pre.relu()
            if architecture == "jumprelu":
                f = f * (pre > p["threshold"]).to(f.dtype)
        index = p["index"][:, 0].expand(x.shape[0], -1)  # [B, n]
        old = f.gather(-1, index[:, None].expand(-1, x.shape[1], -1))  # [B, T, n]
        value, factor = p["value"].to(x.dtype), p["factor"].to(x.dtype)  # [B|1, 1, n]
        new = torch.where(torch.isnan(value), old * factor, value.expand_as(old))
        if error:
            rows = w_dec.expand(x.shape[0], -1, -1).gather(1, index[..., None].expand(-1, -1, w_dec.shape[-1]))
            delta = new - old
            if norms is not None:
                delta = delta / norms.expand(x.shape[0], -1, -1).gather(-1, index[:, None])
            out = x + torch.matmul(delta, rows)
        else:
            f = f.scatter(-1, index[:, None].expand(-1, x.shape[1], -1), new)
            out = torch.matmul(f / norms if norms is not None else f, w_dec) + b_dec
        return masked(x, out, mask)

    # --- saving: the SAE's weights go to the recipe's safetensors, its settings to JSON -------------
    def config(self) -> dict[str, Any]:
        s = self.sae
        return {**super().config(), "clamp": {str(k): v for k, v in self.clamp.items()},
                "scale": {str(k): v for k, v in self.scale.items()}, "error": self.error,
                "sae": {"architecture": s.architecture, "site": s.site, "k": s.k,
                        "apply_b_dec_to_input": s.apply_b_dec_to_input,
                        "rescale_acts_by_decoder_norm": s.rescale_acts_by_decoder_norm}}

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.sae.tensors())

    @classmethod
    def from_config(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        cfg = dict(config)
        s = cfg.pop("sae")
        sae = SAE(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"], s["architecture"],
                  s.get("site"), s.get("k"), tensors.get("threshold"), bool(s.get("apply_b_dec_to_input", True)),
                  bool(s.get("rescale_acts_by_decoder_norm", False)))
        return cls(sae, **cfg)

    def __repr__(self) -> str:
        return (f"SAEEdit({self.sae!r}, clamp={self.clamp}, scale={self.scale}, error={self.error}, "
                f"layers={self.layers}, site={self.site!r})")
