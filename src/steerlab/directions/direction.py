"""Direction: one vector per layer (raw or unit) with provenance, saved as JSON + safetensors.

A saved direction is a folder ``name.direction/`` holding ``direction.json`` (metadata) and
``vectors.safetensors`` (one tensor per layer, named ``layer.<i>``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from .. import io
from ..errors import DataError, ShapeError, SteerlabError

if TYPE_CHECKING:
    from ..models.model import Model
    from .probe import Probe

FORMAT = "steerlab.direction/1"
MARKER = "direction.json"


class Direction:
    """Per-layer vectors ``{layer: [d]}`` plus metadata.

    ``direction[layer]`` is the vector at that layer; ``direction.layers`` the layers held.
    ``meta`` records where it came from: ``model`` (the model's fingerprint), ``site``,
    ``method``, ``dataset`` (name and hash), per-layer ``scores``, ``created`` and ``version``.
    """

    def __init__(self, vectors: Mapping[int, torch.Tensor] | torch.Tensor, layers: Iterable[int] | None = None,
                 meta: dict[str, Any] | None = None):
        if isinstance(vectors, torch.Tensor):
            if vectors.dim() == 1:
                vectors = vectors[None]
            if vectors.dim() != 2:
                raise ShapeError(f"Direction needs vectors [n_layers, d] or a dict of [d], got shape {tuple(vectors.shape)}")
            layers = list(range(vectors.shape[0])) if layers is None else [int(x) for x in layers]
            if len(layers) != vectors.shape[0]:
                raise ShapeError(f"Direction got {vectors.shape[0]} vectors for {len(layers)} layers")
            vectors = {layer: vectors[i] for i, layer in enumerate(layers)}
        if not vectors:
            raise DataError("Direction needs at least one layer's vector")
        widths = {v.shape[-1] for v in vectors.values()}
        if len(widths) != 1:
            raise ShapeError(f"Direction vectors have different widths {sorted(widths)}")
        self.vectors: dict[int, torch.Tensor] = {int(k): v.detach().float().cpu().flatten() for k, v in
                                                 sorted(vectors.items())}
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        from .. import __version__

        self.meta.setdefault("version", __version__)

    @property
    def layers(self) -> list[int]:
        return list(self.vectors)

    @property
    def d_model(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self.vectors:
            raise SteerlabError(f"this direction has no vector for layer {layer}; it holds layers {self.layers}")
        return self.vectors[layer]

    def __contains__(self, layer: int) -> bool:
        return layer in self.vectors

    def __len__(self) -> int:
        return len(self.vectors)

    def as_tensor(self) -> torch.Tensor:
        """``[n_layers_held, d]`` in ``layers`` order."""
        return torch.stack(list(self.vectors.values()))

    def unit(self) -> Direction:
        """Each layer's vector scaled to norm 1 (same metadata, ``normalized=True``)."""
        return Direction({k: v / v.norm().clamp_min(1e-12) for k, v in self.vectors.items()},
                         meta={**self.meta, "normalized": True})

    def norms(self) -> dict[int, float]:
        """Each layer's vector norm."""
        return {k: float(v.norm()) for k, v in self.vectors.items()}

    def select(self, layers: int | Iterable[int]) -> Direction:
        """A direction holding only ``layers``."""
        layers = [layers] if isinstance(layers, int) else list(layers)
        return Direction({layer: self[layer] for layer in layers}, meta=dict(self.meta))

    def __mul__(self, factor: float) -> Direction:
        return Direction({k: v * float(factor) for k, v in self.vectors.items()}, meta=dict(self.meta))

    __rmul__ = __mul__

    def __neg__(self) -> Direction:
        return self * -1.0

    def check_model(self, fingerprint: dict[str, Any]) -> None:
        """Raise ``ShapeError`` if this direction was made for a model of another shape."""
        made_for = self.meta.get("model")
        if made_for and fingerprint and made_for.get("shape_hash") != fingerprint.get("shape_hash"):
            raise ShapeError(
                f"this direction was made for {made_for.get('name')!r} (d_model {made_for.get('d_model')}), "
                f"not for {fingerprint.get('name')!r} (d_model {fingerprint.get('d_model')})"
            )

    # --- saving -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write ``path/direction.json`` and ``path/vectors.safetensors``, built beside ``path`` and renamed into place.

        An existing ``path`` is refused unless ``overwrite=True``, and even then it is replaced only if
        it is a saved direction (other folders and files are never removed).
        """
        doc = {"format": FORMAT, "layers": self.layers, "d_model": self.d_model, "meta": self.meta}
        text = io.dumps(doc)  # before touching the disk: unsaveable metadata raises here

        def fill(tmp: Path) -> None:
            (tmp / MARKER).write_text(text, encoding="utf-8")
            save_file({f"layer.{k}": v.contiguous() for k, v in self.vectors.items()}, str(tmp / "vectors.safetensors"))

        return io.save_folder(path, fill, marker=MARKER, format=FORMAT, overwrite=overwrite, what="direction")

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Model | None = None) -> Direction:
        """Read a direction written by ``save``; with ``model``, refuse one made for another shape."""
        folder = Path(path)
        if not (folder / MARKER).is_file():
            raise DataError(f"no direction at {str(path)!r} (expected a folder with {MARKER})")
        doc = io.read_json(folder / MARKER, "direction")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else None
            raise DataError(f"{folder} is not a steerlab direction (format {found!r})")
        tensors = load_file(str(folder / "vectors.safetensors"))
        vectors = {int(k.split(".", 1)[1]): v for k, v in tensors.items()}
        direction = cls(vectors, meta=_layer_keys(doc.get("meta") or {}))
        if model is not None:
            direction.check_model(model.fingerprint)
        return direction

    # --- llama.cpp control vectors -------------------------------------------------------------
    def to_gguf(self, path: str | os.PathLike[str], layers: int | Iterable[int] | None = None, alpha: float = 1.0,
                model_hint: str | None = None) -> Path:
        """Write ``alpha * self[layer]`` for ``layers`` (default: all held but 0) as a llama.cpp control vector.

        ``direction.N`` in the file is added to the output of block N (steerlab's
        ``layers.N.resid_post``); llama.cpp never steers block 0. See ``steerlab.directions.gguf``.
        """
        from .gguf import direction_to_gguf

        return direction_to_gguf(self, path, layers=layers, alpha=alpha, model_hint=model_hint)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Direction:
        """Read a llama.cpp (or repeng) control vector; its ``direction.N`` becomes layer N (resid_post)."""
        from .gguf import direction_from_gguf

        return direction_from_gguf(path)

    def as_probe(self, layer: int | None = None) -> Probe:
        """This direction read as a linear probe (weights per layer, bias from ``meta["intercept"]``)."""
        from .probe import as_probe

        return as_probe(self, layer)

    def __repr__(self) -> str:
        method = self.meta.get("method", "?")
        return f"Direction(method={method!r}, layers={_span(self.layers)}, d={self.d_model})"


def _span(layers: list[int]) -> str:
    if len(layers) > 4 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return str(layers)


def _layer_keys(meta: dict[str, Any]) -> dict[str, Any]:
    """JSON turns per-layer dicts' int keys (``scores``, ``intercept``, ...) into strings; turn them back."""
    out = {}
    for key, value in meta.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) and k.lstrip("-").isdigit() for k in value):
            value = {int(k): v for k, v in value.items()}
        out[key] = value
    return out
