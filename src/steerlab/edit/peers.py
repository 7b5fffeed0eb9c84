"""Bring vectors made with other libraries: repeng control vectors and steering-vectors objects.

- repeng: ``ControlVector.export_gguf`` writes a llama.cpp control vector whose layer ids are block
  indices counted from 0 (its ``hidden_states[i + 1]``), the same as steerlab's; ``from_repeng``
  reads one into a Direction at ``resid_post``.
- steering-vectors: a ``SteeringVector`` holds ``layer_activations: {layer: tensor}`` (decoder block
  indices from 0) and ``layer_type``; users save it with ``torch.save``. ``from_steering_vectors``
  reads such a file *without* running pickled code: it uses torch's weights-only unpickler and
  maps the class to a plain stand-in. Files holding a plain dict (``{layer: tensor}``, or
  ``{"layer_activations": ..., "layer_type": ...}``) load the same way, and so does the object itself.
  ``allow_pickle=True`` falls back to full unpickling, which runs code from the file: trusted files only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..directions.gguf import direction_from_gguf
from ..errors import DataError, SteerlabError

#: steering-vectors' layer types -> steerlab sites (module names as in Llama-like models)
LAYER_TYPES = {"decoder_block": "resid_post", "self_attn": "attn_out", "mlp": "mlp_out",
               "input_layernorm": "attn_in", "post_attention_layernorm": "mlp_in"}


def from_repeng(path: str | os.PathLike):
    """A Direction from a repeng ``ControlVector.export_gguf`` file (layer ids map one to one)."""
    direction = direction_from_gguf(path)
    direction.meta["method"] = "repeng"
    return direction


class _SteeringVectorStandIn:
    """Receives a pickled ``steering_vectors.SteeringVector``'s fields; never runs its code."""


_PICKLED_NAMES = ("steering_vectors.steering_vector.SteeringVector", "steering_vectors.SteeringVector")


def from_steering_vectors(source, allow_pickle: bool = False):
    """A Direction from a steering-vectors ``SteeringVector`` (the object or a ``torch.save`` file).

    The Direction's ``meta["site"]`` is the steerlab site of its ``layer_type`` (``decoder_block`` ->
    ``resid_post``), so ``sl.Add(d, site=d.meta["site"])`` applies it as steering-vectors would
    (with its default ``min_token_index=0``: every position).
    """
    from ..directions.direction import Direction

    origin = "object"
    if isinstance(source, (str, os.PathLike)):
        origin = str(source)
        source = _load_file(Path(source), allow_pickle)
    if isinstance(source, dict) and "layer_activations" not in source:
        acts, layer_type = source, "decoder_block"
    elif isinstance(source, dict):
        acts, layer_type = source["layer_activations"], source.get("layer_type", "decoder_block")
    elif hasattr(source, "layer_activations"):
        acts, layer_type = source.layer_activations, getattr(source, "layer_type", "decoder_block")
    else:
        raise DataError(f"{origin}: expected a SteeringVector or a dict of layer -> tensor, got {type(source).__name__}")
    if layer_type not in LAYER_TYPES:
        raise DataError(f"{origin}: layer_type {layer_type!r} is not one of {', '.join(LAYER_TYPES)}")
    try:
        vectors = {int(k): torch.as_tensor(v).detach().float().flatten() for k, v in dict(acts).items()}
    except (TypeError, ValueError):
        raise DataError(f"{origin}: layer_activations must map layer numbers to tensors") from None
    if not vectors:
        raise DataError(f"{origin}: the steering vector holds no layers")
    if any(k < 0 for k in vectors):
        raise DataError(f"{origin}: negative layer numbers {sorted(k for k in vectors if k < 0)} need the model's "
                        "depth; convert them to block indices from 0 first")
    meta = {"site": LAYER_TYPES[layer_type], "method": "steering-vectors", "layer_type": layer_type, "source": origin}
    return Direction(vectors, meta=meta)


def _load_file(path: Path, allow_pickle: bool):
    if not path.is_file():
        raise DataError(f"no file at {str(path)!r}")
    stand_ins: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (_SteeringVectorStandIn, name) for name in _PICKLED_NAMES]
    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch's safe loader refuses becomes one clear line
        if not allow_pickle:
            raise SteerlabError(
                f"{path} holds pickled objects steerlab will not load, since loading them could run code stored "
                f"in the file ({str(err).splitlines()[0][:160]}); save the vectors as plain tensors or "
                "safetensors where they were made"
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, _SteeringVectorStandIn):
        return {"layer_activations": obj.__dict__.get("layer_activations", {}),
                "layer_type": obj.__dict__.get("layer_type", "decoder_block")}
    return obj
