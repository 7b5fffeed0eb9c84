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
from safetensors.torch import save_file

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
        for layer, v in self.vectors.items():
            if not bool(torch.isfinite(v).all()):
                raise SteerlabError(f"Direction vector of layer {layer} holds NaN or infinite values")
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

    def check_model(self, fingerprint: dict[str, Any], same_shape: bool = False) -> None:
        """Raise ``ShapeError`` if this direction was made for a model of another shape.

        A checkpoint baked from the direction's model counts as that model; ``same_shape=True``
        accepts any model with the same number of layers and width.
        """
        from ..interventions.steering import fits

        made_for = self.meta.get("model")
        if made_for and fingerprint and not fits(made_for, fingerprint, same_shape):
            raise ShapeError(
                f"this direction was made for {made_for.get('name')!r} (d_model {made_for.get('d_model')}), "
                f"not for {fingerprint.get('name')!r} (d_model {fingerprint.get('d_model')}); pass "
                "same_shape=True (--any-model) to use it on a model of the same depth and width"
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
    def load(cls, path: str | os.PathLike[str], model: Model | None = None, same_shape: bool = False) -> Direction:
        """Read a direction written by ``save``; with ``model``, refuse one made for another shape.

        The file is checked, not trusted: ``direction.json`` must hold exactly ``format``, ``layers``,
        ``d_model`` and ``meta`` with those types, the vectors must match them and be finite and
        below 1e6 in size; anything else raises ``DataError`` naming the file.
        """
        folder, doc = io.read_artifact(path, MARKER, FORMAT, "direction")
        where = folder / MARKER
        extra = sorted(set(doc) - {"format", "layers", "d_model", "meta"})
        if extra:
            raise DataError(f"{where} has unknown keys {extra}; a direction holds format, layers, d_model and meta")
        layers, width, meta = doc.get("layers"), doc.get("d_model"), doc.get("meta", {})
        if not (isinstance(layers, list) and layers and all(type(x) is int and x >= 0 for x in layers)
                and len(set(layers)) == len(layers)):
            raise DataError(f"{where}: 'layers' must be a non-empty list of distinct layer numbers, got {layers!r}")
        if type(width) is not int or width < 1:
            raise DataError(f"{where}: 'd_model' must be a positive integer, got {width!r}")
        if not isinstance(meta, dict):
            raise DataError(f"{where}: 'meta' must be an object, got {type(meta).__name__}")
        tensors = io.read_safetensors(folder / "vectors.safetensors", f"direction {str(folder)!r}")
        want = {f"layer.{k}" for k in layers}
        if set(tensors) != want:
            raise DataError(f"{folder / 'vectors.safetensors'} holds {sorted(tensors)}, but {MARKER} lists layers "
                            f"{layers}")
        vectors = {}
        for k in layers:
            v = tensors[f"layer.{k}"]
            if v.dim() != 1 or v.shape[0] != width or not v.is_floating_point():
                raise DataError(f"{folder}: the vector of layer {k} has shape {tuple(v.shape)} and dtype {v.dtype}; "
                                f"expected floats of shape ({width},)")
            vectors[k] = io.check_finite(v, f"{folder}: the vector of layer {k}")
        direction = cls(vectors, meta=_layer_keys(meta))
        if model is not None:
            direction.check_model(model.fingerprint, same_shape)
            if same_shape:  # adopted by this model: recipes built from it carry its fingerprint
                direction.meta["model"] = {**model.fingerprint, "adapted_from": direction.meta.get("model")}
        return direction

    # --- llama.cpp control vectors -------------------------------------------------------------
    def to_gguf(self, path: str | os.PathLike[str], layers: int | Iterable[int] | None = None, alpha: float = 1.0,
                model_hint: str | None = None, overwrite: bool = False) -> Path:
        """Write ``alpha * self[layer]`` for ``layers`` (default: all held but 0) as a llama.cpp control vector.

        ``direction.N`` in the file is added to the output of block N (steerlab's
        ``layers.N.resid_post``); llama.cpp never steers block 0. See ``steerlab.directions.gguf``.
        An existing ``path`` is replaced only with ``overwrite=True`` and only if it is a GGUF file.
        """
        from .gguf import direction_to_gguf

        io.check_owned(path, _is_gguf, overwrite, "GGUF file")

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


def _is_gguf(path: Path) -> bool:
    """Whether ``path`` is a file that starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as f:
            return path.is_file() and f.read(4) == b"GGUF"
    except OSError:
        return False


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
