"""Hooks on vLLM's decoder layers that hand each pass's residual stream to the ``Steerer``.

vLLM's Llama-style layers take ``(positions, hidden_states, residual)`` and return
``(hidden_states, residual)``, the residual stream being their *sum*. A site's value is that sum;
an edit writes the new stream back as ``(new, zeros)``, which the next layer's fused add-norm (or
the final norm) turns into exactly ``new``. ``resid_pre`` is read before a layer, ``resid_post``
after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...errors import SteerlabError
from ...sites import Site
from .steps import Steerer


def _stream(hidden: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    return hidden if residual is None else hidden + residual


def install(model: nn.Module, steerer: Steerer, begin: Callable[[torch.Tensor | None], None]) -> list[Any]:
    """Attach the hooks to ``model`` (vLLM's ``...ForCausalLM``, layers ``start_layer:end_layer`` of its
    stack on this pipeline stage); ``begin(positions)`` runs before each pass. Returns the handles. ``SteerlabError`` for a model whose layers are not of the supported shape."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if inner is None or layers is None:
        raise SteerlabError(f"the steerlab vLLM plugin supports decoder stacks at model.model.layers; "
                            f"{type(model).__name__} has none")
    handles = []
    first = getattr(inner, "start_layer", 0)
    end = getattr(inner, "end_layer", len(layers))

    # the decoder stack's own forward is called bypassing module hooks (vLLM's compile wrapper), so a
    # pass begins at its first layer, before that layer's own hooks
    def start(module: nn.Module, args: tuple, kwargs: dict) -> None:
        begin(kwargs.get("positions", args[0] if args else None))

    handles.append(layers[first].register_forward_pre_hook(start, with_kwargs=True))
    for number in range(first, end):
        layer = layers[number]
        handles.append(layer.register_forward_pre_hook(_pre(steerer, Site("resid_pre", number)), with_kwargs=True))
        handles.append(layer.register_forward_hook(_post(steerer, Site("resid_post", number))))
    return handles


def _pre(steerer: Steerer, site: Site) -> Callable:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if steerer.current is None:
            return None
        names = ("positions", "hidden_states", "residual")
        values = {**dict(zip(names, args)), **kwargs}
        hidden, residual = values["hidden_states"], values.get("residual")
        new = steerer.at(site, _stream(hidden, residual))
        if new is None:
            return None
        values["hidden_states"] = new
        if residual is not None:
            values["residual"] = torch.zeros_like(residual)
        return (), values

    return hook


def _post(steerer: Steerer, site: Site) -> Callable:
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        if steerer.current is None:
            return None
        if not (isinstance(output, tuple) and len(output) == 2):
            raise SteerlabError(f"the steerlab vLLM plugin expects decoder layers returning (hidden, residual); "
                                f"{type(module).__name__} returned {type(output).__name__}")
        hidden, residual = output
        new = steerer.at(site, _stream(hidden, residual))
        if new is None:
            return None
        return new, torch.zeros_like(residual)

    return hook
