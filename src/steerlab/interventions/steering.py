"""Steering: an ordered recipe of interventions, saved as JSON (human-readable) + safetensors.

A saved recipe is a folder ``name.steer/`` holding ``recipe.json`` and ``tensors.safetensors``.
It records the model it was made for (name and a hash of its shape); loading it for a model of
another shape raises ``ShapeError``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from .. import io
from ..errors import DataError, ShapeError, SteerlabError
from .base import Intervention, intervention_class

if TYPE_CHECKING:
    from ..models.model import Model

FORMAT = "steerlab.steering/1"
MARKER = "recipe.json"


class Steering:
    """An ordered list of interventions applied together, plus metadata (provenance).

    ``meta["model"]``, when present, is the fingerprint of the model the recipe was made for
    (``{"name", "shape_hash", "n_layers", "d_model"}``); a Direction's metadata fills it in.
    """

    def __init__(self, interventions: Intervention | Iterable[Intervention] = (), meta: dict[str, Any] | None = None):
        items = [interventions] if isinstance(interventions, Intervention) else list(interventions)
        for item in items:
            if not isinstance(item, Intervention):
                raise SteerlabError(f"Steering takes interventions (Add, Ablate, ...), got {type(item).__name__}")
        self.interventions: list[Intervention] = items
        self.meta: dict[str, Any] = dict(meta or {})
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

    def check_model(self, fingerprint: dict[str, Any]) -> None:
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

    def digest(self) -> str:
        """A short hash of what this recipe computes: each intervention's kind, settings and tensors."""
        parts = []
        for item in self.interventions:
            parts.append(io.dumps({"kind": item.kind, "config": item.config()}, indent=None).encode())
            parts.append(io.tensor_hash(item.tensors()).encode())
        return io.short_hash(parts)

    # --- saving -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write ``path/recipe.json`` and ``path/tensors.safetensors``, built beside ``path`` and renamed into place.

        An existing ``path`` is refused unless ``overwrite=True``, and even then it is replaced only if
        it is a saved recipe (other folders and files are never removed).
        """
        from .. import __version__

        entries, tensors = [], {}
        for i, item in enumerate(self.interventions):
            entries.append({"kind": item.kind, "config": item.config()})
            for name, t in item.tensors().items():
                tensors[f"{i}.{name}"] = t.detach().to("cpu", torch.float32).contiguous().clone()  # shared tensors are fine
        doc = {"format": FORMAT, "version": __version__, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "meta": self.meta, "interventions": entries}
        text = io.dumps(doc)  # before touching the disk: unsaveable settings raise here

        def fill(tmp: Path) -> None:
            (tmp / MARKER).write_text(text, encoding="utf-8")
            save_file(tensors, str(tmp / "tensors.safetensors"))

        return io.save_folder(path, fill, marker=MARKER, format=FORMAT, overwrite=overwrite, what="steering recipe")

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Model | None = None) -> Steering:
        """Read a recipe written by ``save``; with ``model``, refuse one made for another shape."""
        folder = Path(path)
        if not (folder / MARKER).is_file():
            raise DataError(f"no steering recipe at {str(path)!r} (expected a folder with {MARKER})")
        doc = io.read_json(folder / MARKER, "steering recipe")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DataError(f"{folder} is not a steerlab recipe (format {_format_of(doc)!r})")
        file = folder / "tensors.safetensors"
        tensors = load_file(str(file)) if file.exists() else {}
        items = []
        for i, entry in enumerate(doc["interventions"]):
            kind_cls = intervention_class(entry["kind"])
            prefix = f"{i}."
            own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            items.append(kind_cls.from_config(entry["config"], own))
        steering = cls(items, doc.get("meta"))
        if model is not None:
            steering.check_model(model.fingerprint)
        return steering


def _format_of(doc: Any) -> Any:
    return doc.get("format") if isinstance(doc, dict) else None
