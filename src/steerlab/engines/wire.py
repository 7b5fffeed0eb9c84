"""Recipes as plain JSON (tensors as base64 float32), for engines and servers that cannot take files.

The document is the one ``Steering.save`` writes (``format``, ``meta``, ``interventions``) with one
more key, ``tensors``: ``{"<i>.<name>": {"shape": [...], "data": "<base64 of little-endian float32>"}}``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import DataError
from ..interventions.base import intervention_class
from ..interventions.steering import FORMAT, Steering


def encode_tensor(t: torch.Tensor) -> dict[str, Any]:
    """``{"shape", "data"}``: the tensor as base64 of its little-endian float32 bytes."""
    array = t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4")
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_tensor(doc: Any, what: str) -> torch.Tensor:
    """The inverse of ``encode_tensor``; ``DataError`` naming ``what`` on a malformed entry."""
    try:
        raw = base64.b64decode(doc["data"], validate=True)
        shape = [int(s) for s in doc["shape"]]
        array = np.frombuffer(raw, dtype="<f4").reshape(shape)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{what} is not a base64 float32 tensor with a shape ({e})") from None
    return torch.from_numpy(array.astype(np.float32))


def to_json(steering: Steering) -> dict[str, Any]:
    """The recipe as one JSON-able dict (what ``from_json`` reads back)."""
    entries, tensors = [], {}
    for i, item in enumerate(steering.interventions):
        entries.append({"kind": item.kind, "config": item.config()})
        for name, t in item.tensors().items():
            tensors[f"{i}.{name}"] = encode_tensor(t)
    doc = {"format": FORMAT, "meta": steering.meta, "interventions": entries, "tensors": tensors}
    return dict(json.loads(io.dumps(doc, indent=None)))  # plain JSON types only (tensors in configs become lists)


def from_json(doc: Any) -> Steering:
    """A ``Steering`` from ``to_json``'s dict (or its JSON text); ``DataError`` on anything else."""
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as e:
            raise DataError(f"steering JSON does not parse: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("interventions"), list):
        raise DataError(f"steering must be a recipe document with format {FORMAT!r} and a list of interventions")
    raw = doc.get("tensors") or {}
    tensors = {k: decode_tensor(v, f"steering tensor {k!r}") for k, v in raw.items()}
    items = []
    for i, entry in enumerate(doc["interventions"]):
        if not isinstance(entry, dict) or "kind" not in entry:
            raise DataError(f"steering intervention {i} must be an object with a 'kind', got {entry!r}")
        prefix = f"{i}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        items.append(intervention_class(entry["kind"]).from_config(entry.get("config", {}), own))
    return Steering(items, doc.get("meta"))


def fingerprint(doc: Any) -> str:
    """A short content hash of a recipe document: equal recipes get equal fingerprints."""
    text = doc if isinstance(doc, str) else json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return io.short_hash([text.encode("utf-8")])
