"""llama.cpp control vectors: GGUF files with architecture ``controlvector``, one tensor per layer.

The format, as llama.cpp reads it (``common/common.cpp: common_control_vector_load_one``,
``src/llama-adapter.cpp: llama_adapter_cvec::apply``, and ``build_cvec(cur, il)`` at the end of each
layer's graph in ``src/llama-model.cpp`` / ``src/models/*.cpp``):

- ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the model type, a hint
  only) and ``controlvector.layer_count`` (how many tensors); repeng's exporter writes the same keys;
- one 1-D float32 tensor of width ``n_embd`` per layer, named ``direction.N``;
- ``direction.N`` (times the ``--control-vector-scaled`` strength) is added to the output of decoder
  block ``N`` counted from 0 (the graph's layer ``il == N``), at every token. That is steerlab's
  ``layers.N.resid_post``, HF's ``model.layers[N]`` output (``hidden_states[N + 1]``) and repeng's layer
  id ``N``: no shift is needed. llama.cpp never steers block 0's output (it refuses ``direction.0``:
  "invalid (zero) direction tensor layer index") and ignores ``N >= n_layer``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import DataError, SteerlabError
from .direction import Direction

ARCH = "controlvector"


@dataclass
class ControlVectorFile:
    """What a control-vector GGUF holds: ``{layer: vector}``, the model hint and the declared layer count."""

    vectors: dict[int, torch.Tensor]
    model_hint: str | None
    layer_count: int | None


def write_control_vector(path: str | os.PathLike[str], vectors: Mapping[int, torch.Tensor], model_hint: str) -> Path:
    """Write ``{layer: vector}`` as a llama.cpp control vector (float32, tensors in layer order)."""
    import gguf

    if not vectors:
        raise SteerlabError("a control vector needs at least one layer's vector")
    bad = [layer for layer in vectors if int(layer) < 1]
    if bad:
        raise SteerlabError(f"layers {bad} cannot go in a llama.cpp control vector: llama.cpp never steers "
                            "block 0's output and refuses direction.0; use layers >= 1")
    widths = {int(v.numel()) for v in vectors.values()}
    if len(widths) != 1:
        raise SteerlabError(f"control-vector tensors must have one width, got {sorted(widths)}")

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", str(model_hint))
        writer.add_uint32(f"{ARCH}.layer_count", len(vectors))
        for layer in sorted(vectors):
            writer.add_tensor(f"direction.{int(layer)}", vectors[layer].detach().float().cpu().flatten().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return io.atomic_write(path, write)


def read_control_vector(path: str | os.PathLike[str]) -> ControlVectorFile:
    """Read a control-vector GGUF (steerlab's, repeng's or llama.cpp's cvector-generator's)."""
    import gguf

    file = Path(path)
    if not file.is_file():
        raise DataError(f"no GGUF file at {str(path)!r}")
    try:
        reader = gguf.GGUFReader(str(file))
    except Exception as err:  # noqa: BLE001 - gguf raises assorted ValueError/struct/index errors on bad files
        raise DataError(f"{file} is not a readable GGUF file: {err}") from None
    arch = _string(reader, "general.architecture")
    if arch != ARCH:
        raise DataError(f"{file} is not a control vector: its architecture is {arch!r}, expected {ARCH!r}")
    vectors: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit():
            raise DataError(f"{file}: tensor {tensor.name!r} is not named direction.<layer>")
        data = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        vectors[int(index)] = torch.from_numpy(data.copy())
    if not vectors:
        raise DataError(f"{file} holds no direction tensors")
    count = _field(reader, f"{ARCH}.layer_count")
    return ControlVectorFile(dict(sorted(vectors.items())), _string(reader, f"{ARCH}.model_hint"),
                             None if count is None else int(count))


def _field(reader: Any, key: str) -> Any:
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    return field.parts[field.data[0]][0]


def _string(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def direction_to_gguf(direction: Direction, path: str | os.PathLike[str], layers: int | Iterable[int] | None = None,
                      alpha: float = 1.0, model_hint: str | None = None) -> Path:
    """Write ``alpha * direction[layer]`` for ``layers`` (default: every layer held except 0)."""
    from ..interventions.base import finite

    alpha = finite(alpha, "alpha")
    held = direction.layers
    if layers is None:
        chosen = [layer for layer in held if layer >= 1]
        if 0 in held:
            warnings.warn("layer 0 left out of the control vector: llama.cpp never steers block 0's output",
                          stacklevel=3)
        if not chosen:
            raise SteerlabError(f"the direction holds only layers {held}; a llama.cpp control vector needs layers >= 1")
    else:
        chosen = [layers] if isinstance(layers, int) else [int(x) for x in layers]
        missing = [layer for layer in chosen if layer not in held]
        if missing:
            raise SteerlabError(f"layers {missing} are not in this direction; it holds layers {held}")
    n_layers = (direction.meta.get("model") or {}).get("n_layers")
    if n_layers is not None and any(layer >= n_layers for layer in chosen):
        raise SteerlabError(f"layers {chosen} go past the model's {n_layers} layers")
    site = direction.meta.get("site")
    if site not in (None, "resid_post"):
        warnings.warn(f"this direction was taken at {site!r}; llama.cpp adds control vectors to each block's "
                      "output (resid_post)", stacklevel=3)
    hint = model_hint or direction.meta.get("model_hint") or (direction.meta.get("model") or {}).get("family") or "unknown"
    return write_control_vector(path, {layer: float(alpha) * direction[layer] for layer in chosen}, hint)


def direction_from_gguf(path: str | os.PathLike[str]) -> Direction:
    """A Direction (site ``resid_post``) from a llama.cpp / repeng control-vector GGUF."""
    read = read_control_vector(path)
    meta = {"site": "resid_post", "method": "gguf", "source": str(path), "model_hint": read.model_hint}
    return Direction(read.vectors, meta=meta)
