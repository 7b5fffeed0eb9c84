"""What a server may use: recipes and directions registered at start, and a request's ``steering``.

A request names registered recipes (with a strength scale each) or gives an inline recipe in the
JSON form ``Steering.save`` writes, its tensors as base64 float32 or by registered direction name.
A request never names a file: only the server's command line reads files.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..directions.direction import Direction
from ..errors import SteerlabError
from ..interventions.base import intervention_class
from ..interventions.steering import Steering
from ..sites import Site
from .engine import ReadOut

if TYPE_CHECKING:
    from ..models.model import Model

#: the scalar that "strength" means for each kind whose strength can be scaled
STRENGTH = {"add": "alpha", "rotate": "angle"}
#: the most interventions one inline recipe may hold, and the most entries in a steering list
MAX_ITEMS = 64


def _bad(message: str) -> SteerlabError:
    return SteerlabError(message)


def tensor_b64(t: torch.Tensor) -> str:
    """A tensor as base64 of its float32 little-endian bytes (the inline recipe's tensor form)."""
    return base64.b64encode(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()).decode()


def recipe_json(steering: Steering) -> dict[str, Any]:
    """``steering`` as an inline recipe: ``Steering.save``'s JSON plus ``tensors`` as base64 float32."""
    entries, tensors = [], {}
    for i, item in enumerate(steering):
        entries.append({"kind": item.kind, "config": item.config()})
        tensors.update({f"{i}.{name}": tensor_b64(t) for name, t in item.tensors().items()})
    return {"format": "steerlab.steering/1", "meta": {}, "interventions": entries, "tensors": tensors}


def readout_of(name: str, direction: Direction) -> ReadOut:
    """How a registered direction is read per token.

    A fitted probe (``meta["method"] == "probe"``) gives its probability ``sigmoid(w·h + b)`` at the
    layer it was fit on; any other direction the projection of ``h`` on its unit vector at
    ``meta["layer"]``, else its best-scoring layer (``meta["scores"]``), else its middle layer.
    """
    meta = direction.meta
    layers = direction.layers
    layer = meta.get("layer")
    scores = meta.get("scores")
    if layer is None and isinstance(scores, dict) and scores:
        held = {int(k): float(v) for k, v in scores.items() if int(k) in direction}
        layer = max(held, key=lambda k: held[k]) if held else None
    layer = int(layer) if layer is not None and int(layer) in direction else layers[len(layers) // 2]
    site = Site(str(meta.get("site", "resid_post")), layer)
    if meta.get("method") == "probe":
        from ..directions.probe import as_probe

        w, b = as_probe(direction, layer).at(layer)
        return ReadOut(name, site, w.float(), float(b), probability=True)
    v = direction[layer].float()
    return ReadOut(name, site, v / v.norm().clamp_min(1e-12))


@dataclass
class Registry:
    """Named recipes and directions a server offers, with where each came from (``provenance``)."""

    model: Model
    recipes: dict[str, Steering] = field(default_factory=dict)
    directions: dict[str, Direction] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        recipes, directions = self.recipes, self.directions
        self.recipes, self.directions = {}, {}
        for name, steering in recipes.items():
            self.add_recipe(name, steering, self.sources.get(name, "python"))
        for name, direction in directions.items():
            self.add_direction(name, direction, self.sources.get(name, "python"))

    @classmethod
    def from_files(cls, model: Model, recipes: Mapping[str, str | os.PathLike[str]] | None = None,
                   directions: Mapping[str, str | os.PathLike[str]] | None = None) -> Registry:
        """Load ``name -> path`` recipes and directions (each checked against ``model``)."""
        reg = cls(model)
        for name, path in (recipes or {}).items():
            reg.add_recipe(name, Steering.load(path, model), str(Path(path)))
        for name, path in (directions or {}).items():
            reg.add_direction(name, Direction.load(path, model), str(Path(path)))
        return reg

    def _name(self, name: str) -> str:
        if not isinstance(name, str) or not name or not name.replace("-", "_").replace(".", "_").isidentifier():
            raise _bad(f"name {name!r} is not allowed; use letters, digits, '-', '_' and '.'")
        if name in self.recipes or name in self.directions:
            raise _bad(f"name {name!r} is registered twice; give each recipe and direction its own name")
        return name

    def add_recipe(self, name: str, steering: Steering, source: str = "python") -> None:
        steering.check_model(self.model.fingerprint)
        self.recipes[self._name(name)] = steering
        self.sources[name] = source

    def add_direction(self, name: str, direction: Direction, source: str = "python") -> None:
        direction.check_model(self.model.fingerprint)
        if direction.d_model != self.model.d_model:
            raise _bad(f"direction {name!r} has width {direction.d_model}, the model's d_model is {self.model.d_model}")
        self.directions[self._name(name)] = direction
        self.sources[name] = source

    def readouts(self) -> dict[str, ReadOut]:
        """Every registered direction as a read-out."""
        return {name: readout_of(name, d) for name, d in self.directions.items()}

    def describe(self) -> dict[str, Any]:
        """``GET /v1/steering``: each recipe and direction with its provenance."""
        recipes = []
        for name, s in self.recipes.items():
            recipes.append({"name": name, "source": self.sources.get(name), "meta": _plain(s.meta),
                            "interventions": [{"kind": i.kind, **_plain(i.config())} for i in s],
                            "scalable": all(_scalable(i.kind, i.config()) for i in s)})
        directions = []
        for name, d in self.directions.items():
            r = readout_of(name, d)
            meta = {k: v for k, v in d.meta.items() if k not in ("scores", "intercept")}
            directions.append({"name": name, "source": self.sources.get(name), "layers": d.layers,
                               "read_at": r.site.name, "read_as": "probability" if r.probability else "projection",
                               "meta": _plain(meta)})
        return {"object": "list", "recipes": recipes, "directions": directions}

    # --- a request's steering -----------------------------------------------------------------
    def resolve(self, value: Any) -> Steering | None:
        """A request's ``steering`` field as one recipe (None: unsteered); ``SteerlabError`` on bad input."""
        if value is None:
            return None
        entries = value if isinstance(value, list) else [value]
        if len(entries) > MAX_ITEMS:
            raise _bad(f"steering has {len(entries)} entries; at most {MAX_ITEMS}")
        items = []
        for entry in entries:
            items.extend(self._entry(entry))
        if not items:
            return None
        steering = Steering(items)
        steering.check_model(self.model.fingerprint)
        return steering

    def _entry(self, entry: Any) -> list:
        if isinstance(entry, str):
            return list(self._named(entry))
        if not isinstance(entry, dict):
            raise _bad(f"steering entries are a recipe name, {{'recipe': name, 'scale': x}} or {{'inline': recipe}}; "
                       f"got {type(entry).__name__}")
        unknown = set(entry) - {"recipe", "scale", "inline"}
        if unknown:
            raise _bad(f"steering entry has unknown key {min(unknown)!r}; allowed: recipe, scale, inline")
        if ("recipe" in entry) == ("inline" in entry):
            raise _bad("a steering entry needs exactly one of 'recipe' (a registered name) and 'inline' (a recipe)")
        scale = entry.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise _bad(f"steering scale={scale!r} must be a finite number")
        items = list(self._named(entry["recipe"])) if "recipe" in entry else self._inline(entry["inline"])
        return [_scaled(i, float(scale)) for i in items] if scale != 1.0 else list(items)

    def _named(self, name: Any) -> Steering:
        if not isinstance(name, str) or name not in self.recipes:
            known = ", ".join(sorted(self.recipes)) or "none"
            hint = " (a request cannot name a file; register recipes with --recipe NAME=PATH)" if isinstance(
                name, str) and ("/" in name or "." in name) else ""
            raise _bad(f"steering recipe {name!r} is not registered{hint}; registered: {known}")
        return self.recipes[name]

    def _inline(self, doc: Any) -> list:
        if not isinstance(doc, dict):
            raise _bad(f"steering inline must be a recipe object (Steering.save's JSON), got {type(doc).__name__}")
        entries = doc.get("interventions")
        if not isinstance(entries, list) or not entries:
            raise _bad("steering inline needs a non-empty 'interventions' list")
        if len(entries) > MAX_ITEMS:
            raise _bad(f"steering inline has {len(entries)} interventions; at most {MAX_ITEMS}")
        raw = doc.get("tensors", {})
        if not isinstance(raw, dict):
            raise _bad("steering inline 'tensors' must map names like '0.vector' to base64 float32 or a direction name")
        tensors: dict[str, torch.Tensor] = {}
        for key, value in raw.items():
            tensors.update(self._tensor(str(key), value))
        items = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
                raise _bad(f"steering inline intervention {i} needs a 'kind' and a 'config'")
            cls = intervention_class(entry["kind"])
            config = entry.get("config", {})
            if not isinstance(config, dict):
                raise _bad(f"steering inline intervention {i} 'config' must be an object")
            own = {k[len(f"{i}."):]: v for k, v in tensors.items() if k.startswith(f"{i}.")}
            try:
                items.append(cls.from_config(config, own))
            except SteerlabError:
                raise
            except (TypeError, ValueError, KeyError) as exc:
                raise _bad(f"steering inline intervention {i} ({entry['kind']}) is malformed: {exc}") from None
        return items

    def _tensor(self, key: str, value: Any) -> dict[str, torch.Tensor]:
        if isinstance(value, str) and value in self.directions:
            d = self.directions[value]
            return {f"{key}.{layer}": d[layer] for layer in d.layers}
        if not isinstance(value, str):
            raise _bad(f"steering inline tensor {key!r} must be base64 float32 or a registered direction name")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            known = ", ".join(sorted(self.directions)) or "none"
            raise _bad(f"steering inline tensor {key!r} is neither base64 float32 nor a registered direction "
                       f"(registered: {known})") from None
        if not data or len(data) % 4:
            raise _bad(f"steering inline tensor {key!r} has {len(data)} bytes; float32 needs a multiple of 4")
        t = torch.from_numpy(np.frombuffer(data, dtype="<f4").copy())
        if not bool(torch.isfinite(t).all()):
            raise _bad(f"steering inline tensor {key!r} holds NaN or infinite values")
        d = self.model.d_model
        widths = {d, getattr(self.model, "d_mlp", None) or d}
        if t.numel() in widths:
            return {key: t}
        if t.numel() % d == 0:
            return {key: t.view(-1, d)}
        raise _bad(f"steering inline tensor {key!r} has {t.numel()} floats; expected d_model={d} (or a multiple: "
                   "several directions)")


def _scalable(kind: str, config: dict[str, Any]) -> bool:
    if kind == "conditional":
        inner = config.get("intervention", {})
        return _scalable(inner.get("kind", ""), inner.get("config", {}))
    return kind in STRENGTH


def _scaled(item: Any, scale: float) -> Any:
    """``item`` with its strength (``alpha``, ``angle``) times ``scale``; other kinds refuse a scale."""
    config = item.config()
    target = config["intervention"]["config"] if item.kind == "conditional" else config
    kind = config["intervention"]["kind"] if item.kind == "conditional" else item.kind
    if kind not in STRENGTH:
        raise _bad(f"steering scale={scale} cannot apply to {kind!r}, which has no strength; allowed for "
                   f"{', '.join(sorted(STRENGTH))} (give scale 1 or leave it out)")
    target[STRENGTH[kind]] = float(target[STRENGTH[kind]]) * scale
    return type(item).from_config(config, item.tensors())


def _plain(value: Any) -> Any:
    """JSON-friendly copy (tensors and other objects become strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    return str(value)
