"""Steering: an ordered recipe of interventions, saved as JSON (human-readable) + safetensors.

A saved recipe is a folder ``name.steer/`` holding ``recipe.json`` and ``tensors.safetensors``.
It records the model it was made for (name and a hash of its shape); loading it for a model of
another shape raises ``ShapeError``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import DataError, ShapeError, SteerlabError
from .base import REGISTRY, Intervention

FORMAT = "steerlab.steering/1"


class Steering:
    """An ordered list of interventions applied together, plus metadata (provenance).

    ``meta["model"]``, when present, is the fingerprint of the model the recipe was made for
    (``{"name", "shape_hash", "n_layers", "d_model"}``); a Direction's metadata fills it in.
    """

    def __init__(self, interventions: Intervention | Iterable[Intervention] = (), meta: dict | None = None):
        items = [interventions] if isinstance(interventions, Intervention) else list(interventions)
        for item in items:
            if not isinstance(item, Intervention):
                raise SteerlabError(f"Steering takes interventions (Add, Ablate, ...), got {type(item).__name__}")
        self.interventions: list[Intervention] = items
        self.meta: dict = dict(meta or {})
        if "model" not in self.meta:
            for item in items:
                model = (item.provenance or {}).get("model")
                if model:
                    self.meta["model"] = model
                    break

    def __iter__(self) -> Iterator[Intervention]:
        return iter(self.interventions)

    def __len__(self) -> int:
        return len(self.interventions)

    def __add__(self, other: Steering | Intervention) -> Steering:
        extra = [other] if isinstance(other, Intervention) else list(other)
        return Steering(self.interventions + extra, {**self.meta})

    def __repr__(self) -> str:
        inner = ", ".join(repr(i) for i in self.interventions)
        return f"Steering([{inner}])"

    def check_model(self, fingerprint: dict) -> None:
        """Raise ``ShapeError`` if this recipe was made for a model of another shape."""
        made_for = self.meta.get("model")
        if not made_for or not fingerprint:
            return
        if made_for.get("shape_hash") != fingerprint.get("shape_hash"):
            raise ShapeError(
                f"this recipe was made for {made_for.get('name')!r} "
                f"({made_for.get('n_layers')} layers, d_model {made_for.get('d_model')}), "
                f"not for {fingerprint.get('name')!r} ({fingerprint.get('n_layers')} layers, "
                f"d_model {fingerprint.get('d_model')})"
            )

    # --- saving -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/recipe.json`` and ``path/tensors.safetensors`` (atomically, folder by folder)."""
        from .. import __version__

        folder = Path(path)
        entries, tensors = [], {}
        for i, item in enumerate(self.interventions):
            entries.append({"kind": item.kind, "config": item.config()})
            for name, t in item.tensors().items():
                tensors[f"{i}.{name}"] = t.detach().to("cpu", torch.float32).contiguous().clone()  # shared tensors are fine
        doc = {"format": FORMAT, "version": __version__, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "meta": self.meta, "interventions": entries}
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "recipe.json").write_text(json.dumps(doc, indent=2, default=_jsonable))
        save_file(tensors, str(tmp / "tensors.safetensors"))
        if folder.exists():
            _remove(folder)
        os.replace(tmp, folder)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, model=None) -> Steering:
        """Read a recipe written by ``save``; with ``model``, refuse one made for another shape."""
        folder = Path(path)
        if not (folder / "recipe.json").is_file():
            raise DataError(f"no steering recipe at {str(path)!r} (expected a folder with recipe.json)")
        try:
            doc = json.loads((folder / "recipe.json").read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{folder / 'recipe.json'} is not valid JSON: {err}") from None
        if doc.get("format") != FORMAT:
            raise DataError(f"{folder} is not a steerlab recipe (format {doc.get('format')!r})")
        file = folder / "tensors.safetensors"
        tensors = load_file(str(file)) if file.exists() else {}
        items = []
        for i, entry in enumerate(doc["interventions"]):
            kind = entry["kind"]
            if kind not in REGISTRY:
                raise DataError(f"{folder}: unknown intervention kind {kind!r}")
            prefix = f"{i}."
            own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            items.append(REGISTRY[kind].from_config(entry["config"], own))
        steering = cls(items, doc.get("meta"))
        if model is not None:
            steering.check_model(model.fingerprint)
        return steering


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (set, tuple, range)):
        return list(value)
    raise TypeError(f"cannot save {type(value).__name__} in a recipe")


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
