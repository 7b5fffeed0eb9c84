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
from safetensors.torch import save_file

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

    def check_model(self, fingerprint: dict[str, Any], same_shape: bool = False) -> None:
        """Raise ``ShapeError`` if this recipe was made for a model of another shape.

        A checkpoint baked from the recipe's model counts as that model. ``same_shape=True`` accepts
        any model with the same number of layers and width (e.g. another family or a modified copy).
        """
        made_for = self.meta.get("model")
        if not made_for or not fingerprint:
            return
        if not fits(made_for, fingerprint, same_shape):
            raise ShapeError(
                f"this recipe was made for {made_for.get('name')!r} "
                f"({made_for.get('n_layers')} layers, d_model {made_for.get('d_model')}), "
                f"not for {fingerprint.get('name')!r} ({fingerprint.get('n_layers')} layers, "
                f"d_model {fingerprint.get('d_model')}); pass same_shape=True (--any-model) to apply it to a model "
                "of the same depth and width"
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
    def load(cls, path: str | os.PathLike[str], model: Model | None = None, same_shape: bool = False) -> Steering:
        """Read a recipe written by ``save``; with ``model``, refuse one made for another shape.

        The files are checked, not trusted: unknown, missing or mistyped keys, settings an
        intervention refuses, tensors that belong to no intervention, NaN/inf or values above 1e6
        each raise ``DataError`` naming the file.
        """
        folder = Path(path)
        if not (folder / MARKER).is_file():
            raise DataError(f"no steering recipe at {str(path)!r} (expected a folder with {MARKER})")
        doc = io.read_json(folder / MARKER, "steering recipe")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DataError(f"{folder} is not a steerlab recipe (format {_format_of(doc)!r})")
        where = folder / MARKER
        extra = sorted(set(doc) - {"format", "version", "saved", "meta", "interventions"})
        if extra:
            raise DataError(f"{where} has unknown keys {extra}; a recipe holds format, version, saved, meta "
                            "and interventions")
        entries, meta = doc.get("interventions"), doc.get("meta", {})
        if not isinstance(entries, list):
            raise DataError(f"{where}: 'interventions' must be a list, got {type(entries).__name__}")
        if meta is not None and not isinstance(meta, dict):
            raise DataError(f"{where}: 'meta' must be an object, got {type(meta).__name__}")
        file = folder / "tensors.safetensors"
        tensors = io.read_safetensors(file, f"recipe {str(folder)!r}") if file.exists() else {}
        for name, t in tensors.items():
            io.check_finite(t, f"{file}: tensor {name!r}")
        items = []
        claimed: set[str] = set()
        for i, entry in enumerate(entries):
            label = f"{where}: intervention {i}"
            if not isinstance(entry, dict) or set(entry) != {"kind", "config"}:
                raise DataError(f"{label} must be an object with exactly 'kind' and 'config', got {entry!r:.120}")
            kind, config = entry["kind"], entry["config"]
            if not isinstance(kind, str) or not isinstance(config, dict):
                raise DataError(f"{label}: 'kind' must be a name and 'config' an object")
            io.check_numbers(config, f"{label} ({kind})")
            kind_cls = intervention_class(kind)
            prefix = f"{i}."
            own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            claimed.update(prefix + k for k in own)
            try:
                items.append(kind_cls.from_config(config, own))
            except SteerlabError as err:
                raise DataError(f"{label} ({kind}): {err}") from None
            except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as err:
                raise DataError(f"{label} ({kind}) has settings it cannot take: {type(err).__name__}: "
                                f"{str(err)[:160]}") from None
        stray = sorted(set(tensors) - claimed)
        if stray:
            raise DataError(f"{file} holds tensors {stray[:5]} that belong to no intervention in {MARKER}")
        steering = cls(items, meta)
        if model is not None:
            steering.check_model(model.fingerprint, same_shape)
            if same_shape:  # adopted by this model: later checks (generate, capture) accept it
                steering.meta["model"] = {**model.fingerprint, "adapted_from": steering.meta.get("model")}
        return steering


def _format_of(doc: Any) -> Any:
    return doc.get("format") if isinstance(doc, dict) else None


def fits(made_for: Any, fingerprint: dict[str, Any], same_shape: bool = False) -> bool:
    """Whether something made for the model ``made_for`` (a fingerprint) may run on ``fingerprint``'s model:
    the same architecture shape, a checkpoint baked from it, or (``same_shape``) the same depth and width."""
    if not isinstance(made_for, dict):
        return True
    want = made_for.get("shape_hash")
    if want in (fingerprint.get("shape_hash"), fingerprint.get("baked_from")):
        return True
    return same_shape and all(made_for.get(k) == fingerprint.get(k) for k in ("n_layers", "d_model"))
