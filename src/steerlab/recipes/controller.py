"""Train the Guiding Giants controller on captured activations, and build its ``Weighted`` recipe.

Training follows the authors' code: the controller reads the last prompt token's block outputs at
``input_layers`` (chat-templated prompts, as generation sees them), concatenated; BCE-with-logits on
the scalar output (harmful = 1, harmless = 0) plus, on harmful rows, ``reg * (mean|w - 0.5| +
0.01 * mean w)`` on the sigmoid layer weights; AdamW (lr 5e-5), gradient clipping at 1.0, batches
of 8, 10 epochs, the epoch with the lowest training loss kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import DataError
from ..interventions import Steering, Weighted
from ..models import Model
from ..sites import normalize_layers
from .base import Layers, Vectors, stamp


@dataclass
class ControllerFit:
    """A trained controller: ``tensors`` (``w1, b1, w2, b2``), the layers it reads and steers, and the
    training curve (``history``: mean loss and accuracy per epoch)."""

    tensors: dict[str, torch.Tensor]
    input_layers: list[int]
    layers: list[int]
    history: list[dict] = field(default_factory=list)
    site: str = "resid_post"

    def scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, w)`` for concatenated input features ``[n, k*d]`` (see ``controller_forward``)."""
        from ..interventions.weighted import controller_forward

        return controller_forward(self.tensors, features)


def controller_features(model: Model, texts: Sequence[str], input_layers: Sequence[int], site: str = "resid_post",
                        chat: bool = True, batch_size: int = 16) -> torch.Tensor:
    """The controller's input for ``texts``: last-token states at ``input_layers``, concatenated ``[n, k*d]``."""
    acts = model.capture(list(texts), sites=site, layers=list(input_layers), positions="last", chat=chat,
                         batch_size=batch_size, progress=False)
    return torch.cat([acts.tensor(f"layers.{layer}.{site}").float() for layer in input_layers], -1)


def fit_controller(features: torch.Tensor, labels: torch.Tensor, n_layers_out: int, hidden: int = 1024,
                   epochs: int = 10, lr: float = 5e-5, batch_size: int = 8, reg: float = 0.1,
                   seed: int = 0) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Train the MLP ``k*d -> hidden (ReLU) -> 1 + n_layers_out`` on ``features`` ``[n, k*d]`` and 0/1 ``labels``."""
    if features.dim() != 2 or len(features) != len(labels) or not len(features):
        raise DataError(f"fit_controller needs features [n, k*d] and n labels, got {tuple(features.shape)} and "
                        f"{len(labels)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(features.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 1 + n_layers_out))
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    x, y = features.float(), labels.float()
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total, correct = 0.0, 0
        for begin in range(0, len(x), batch_size):
            idx = order[begin:begin + batch_size]
            out = net(x[idx])
            s, w = out[:, 0], torch.sigmoid(out[:, 1:])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(s, y[idx])
            harmful = y[idx] > 0.5
            if bool(harmful.any()):
                wh = w[harmful]
                loss = loss + reg * ((wh - 0.5).abs().mean() + 0.01 * wh.mean())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int(((s > 0) == harmful).sum())
        row = {"epoch": epoch + 1, "loss": total / len(x), "accuracy": correct / len(x)}
        history.append(row)
        if best is None or row["loss"] < best[0]:
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best = (row["loss"], state)
    assert best is not None
    st = best[1]
    return {"w1": st["0.weight"], "b1": st["0.bias"], "w2": st["2.weight"], "b2": st["2.bias"]}, history


def train_controller(model: Model, harmful: Sequence[str], harmless: Sequence[str], input_layers: Layers,
                     layers: Layers | None = None, site: str = "resid_post", hidden: int = 1024, epochs: int = 10,
                     lr: float = 5e-5, batch_size: int = 8, reg: float = 0.1, seed: int = 0) -> ControllerFit:
    """Capture ``harmful`` and ``harmless`` prompts and train a controller reading ``input_layers`` that
    weights ``layers`` (default: every layer after the last input layer)."""
    if not harmful or not harmless:
        raise DataError("train_controller needs harmful and harmless prompts (both sides non-empty)")
    inputs = normalize_layers(input_layers, model.n_layers)
    steered = list(range(max(inputs) + 1, model.n_layers)) if layers is None else normalize_layers(layers,
                                                                                                   model.n_layers)
    if not steered:
        raise DataError(f"no layer comes after input layers {inputs}; read earlier layers")
    feats = controller_features(model, list(harmful) + list(harmless), inputs, site)
    labels = torch.cat([torch.ones(len(harmful)), torch.zeros(len(harmless))])
    tensors, history = fit_controller(feats, labels, len(steered), hidden, epochs, lr, batch_size, reg, seed)
    return ControllerFit(tensors, inputs, steered, history, site)


def weighted(fit: ControllerFit, direction: Vectors, scale: float = 4.0) -> Steering:
    """The recipe of a trained controller: ``s * scale * w_l * r̂_l`` at the newest token of each steered layer."""
    if hasattr(direction, "layers"):
        vectors: Vectors = {layer: direction[layer] for layer in fit.layers}
    else:
        vectors = direction
    item = Weighted(fit.tensors, vectors, input_layers=fit.input_layers, layers=fit.layers, scale=scale,
                    site=fit.site, input_site=fit.site)
    return stamp(Steering([item]), "weighted", direction, scale=float(scale), layers=fit.layers,
                 input_layers=fit.input_layers)
