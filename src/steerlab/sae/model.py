"""A sparse autoencoder over one site's activations: encode, decode, features as Directions.

The math and tensor names follow SAELens (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``,
``b_dec``, ``threshold`` for JumpReLU), so its folders load and save unchanged (``format.py``).
Architectures: ``standard`` (ReLU), ``topk`` (the k largest pre-activations, ReLU'd) and ``jumprelu``
(ReLU, zero at or below a per-feature threshold).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ShapeError, SteerlabError
from ..sites import Site, parse_site

if TYPE_CHECKING:
    from ..directions.direction import Direction

ARCHITECTURES = ("standard", "topk", "jumprelu")


@dataclass
class SAE:
    """Weights and settings of one SAE; ``site`` is the steerlab site it reads (``"layers.15.resid_post"``).

    ``apply_b_dec_to_input``: subtract ``b_dec`` from the input before encoding (SAELens's default);
    ``rescale_acts_by_decoder_norm`` (TopK only): rank and scale activations as if decoder rows were unit.
    """

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    architecture: str = "standard"
    site: str | None = None
    k: int | None = None
    threshold: torch.Tensor | None = None
    apply_b_dec_to_input: bool = True
    rescale_acts_by_decoder_norm: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise SteerlabError(f"SAE architecture {self.architecture!r} is not supported; "
                                f"steerlab reads {', '.join(ARCHITECTURES)}")
        d_in, d_sae = self.W_enc.shape
        want = {"W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
        if self.architecture == "jumprelu":
            if self.threshold is None:
                raise SteerlabError("a jumprelu SAE needs threshold= (one value per feature)")
            want["threshold"] = (d_sae,)
        for name, shape in want.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape:
                raise ShapeError(f"SAE {name} has shape {tuple(t.shape)}; with W_enc {tuple(self.W_enc.shape)} "
                                 f"it must be {shape}")
        if self.architecture == "topk" and (self.k is None or not 0 < self.k <= d_sae):
            raise SteerlabError(f"a topk SAE needs k between 1 and d_sae={d_sae}, got {self.k!r}")
        if self.site is not None:
            self.site = parse_site(self.site).name

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def layer(self) -> int | None:
        """The layer of the site this SAE reads, if it has one."""
        return None if self.site is None else parse_site(self.site).layer

    @property
    def site_kind(self) -> str:
        return "resid_post" if self.site is None else parse_site(self.site).kind

    # --- the math --------------------------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations ``(x - b_dec?) @ W_enc + b_enc`` (``[..., d_sae]``)."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Feature activations from pre-activations, by architecture."""
        if self.architecture == "topk":
            if self.rescale_acts_by_decoder_norm:
                pre = pre * self.W_dec.norm(dim=-1)
            values, index = pre.topk(int(self.k or 0), dim=-1)
            return torch.zeros_like(pre).scatter(-1, index, values.relu())
        acts = pre.relu()
        if self.architecture == "jumprelu":
            assert self.threshold is not None
            acts = acts * (pre > self.threshold).to(acts.dtype)
        return acts

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` of activations ``x`` ``[..., d_in]``."""
        return self.activate(self.pre_acts(x))

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``acts @ W_dec + b_dec`` (``[..., d_in]``)."""
        acts = acts.to(self.W_dec.dtype)
        if self.architecture == "topk" and self.rescale_acts_by_decoder_norm:
            acts = acts / self.W_dec.norm(dim=-1)
        return acts @ self.W_dec + self.b_dec

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- features as directions -------------------------------------------------------------------
    def feature(self, index: int, layer: int | None = None) -> Direction:
        """Feature ``index``'s decoder row as a unit ``Direction`` at this SAE's layer (or ``layer``), so
        ``Add``, ``Clamp``, ``Ablate``, ``Conditional`` and ``bake`` take it like any other direction."""
        from ..directions.direction import Direction

        if not -self.d_sae <= index < self.d_sae:
            raise SteerlabError(f"feature {index} is out of range; this SAE has {self.d_sae} features")
        at = layer if layer is not None else self.layer
        if at is None:
            raise SteerlabError("this SAE records no layer (site); pass layer=")
        row = self.W_dec[index].detach().float().cpu()
        meta: dict[str, Any] = {"method": "sae_feature", "feature": int(index) % self.d_sae, "site": self.site_kind,
                                "decoder_norm": float(row.norm())}
        if isinstance(self.meta.get("model"), dict):  # a model fingerprint: recipes built on it check the model
            meta["model"] = self.meta["model"]
        return Direction({int(at): row / row.norm().clamp_min(1e-12)}, meta=meta)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SAE:
        """A copy on ``device`` / in ``dtype``."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return SAE(move(self.W_enc), move(self.b_enc), move(self.W_dec), move(self.b_dec),  # type: ignore[arg-type]
                   self.architecture, self.site, self.k, move(self.threshold), self.apply_b_dec_to_input,
                   self.rescale_acts_by_decoder_norm, dict(self.meta))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights by their SAELens names."""
        out = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out

    def site_of(self, model_layers: int) -> Site:
        """This SAE's site, checked against a model's depth."""
        if self.site is None:
            raise SteerlabError("this SAE records no site; give its layer and site kind")
        return parse_site(self.site, model_layers)

    # --- files ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``); see ``format.save``."""
        from .format import save

        return save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SAE:
        """Read a SAELens folder (written by SAELens or by ``save``); see ``format.load``."""
        from .format import load

        return load(path)

    def __repr__(self) -> str:
        extra = f", k={self.k}" if self.architecture == "topk" else ""
        return f"SAE({self.architecture}, d_in={self.d_in}, d_sae={self.d_sae}{extra}, site={self.site!r})"
