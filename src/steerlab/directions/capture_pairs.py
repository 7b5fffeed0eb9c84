"""One capture of a contrastive set's positives and negatives, shared by every direction method.

Every estimator (mean difference, PCA, probe, the layer sweep) needs the same thing: the
activation of each positive and each negative text at each layer. ``capture_pairs`` runs the
model once over both sides and returns them as ``[n, n_layers, d]`` tensors, so a user who
wants several methods (or a sweep and then a direction) pays for one forward pass, and the
math can run on activations captured elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch

from ..activations.memory import check_positions as check_capture_positions
from ..data.contrastive import ContrastiveSet
from ..errors import DataError, ShapeError, SiteError, SteerlabError
from ..io import short_hash
from ..sites import LAYER_KINDS, normalize_layers

if TYPE_CHECKING:
    from ..interventions.base import Layers
    from ..models.model import Model

#: Site kinds a direction can be found at: one flat vector per token (heads are [n_heads, d_head]).
DIRECTION_SITES = tuple(k for k in LAYER_KINDS if k != "attn.heads")
#: How a text's tokens are reduced to one vector: the last token, or the mean over tokens (or explicit
#: token indices: one, or the mean over several).
DIRECTION_POSITIONS = ("last", "mean")
#: Where a direction is read: ``"last"``, ``"mean"``, a token index (negative from the end) or a list of them.
DirectionPositions: TypeAlias = str | int | Sequence[int]
#: Paired texts (a ContrastiveSet), or two lists of texts of any sizes ``(positive, negative)``.
Sides: TypeAlias = "ContrastiveSet | tuple[Sequence[str], Sequence[str]]"


@dataclass
class PairActivations:
    """Activations of paired texts: ``positive`` and ``negative`` are ``[n, n_layers, d]``.

    ``layers[j]`` is the model layer of column ``j``. ``model`` (the model's fingerprint) and
    ``dataset`` (``pairs.describe()``) are kept for the provenance of what is computed from them.
    Build one from your own tensors to use the direction methods without a model.
    """

    positive: torch.Tensor
    negative: torch.Tensor
    layers: list[int] | None = None
    site: str = "resid_post"
    positions: str | int | list[int] = "last"
    chat: bool = False
    model: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    n_layers: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positive = _as_3d(self.positive, "positive")
        self.negative = _as_3d(self.negative, "negative")
        if self.positive.shape[1:] != self.negative.shape[1:]:
            raise ShapeError(f"positive activations are {tuple(self.positive.shape[1:])} per text but negative "
                             f"ones {tuple(self.negative.shape[1:])}; they must match")
        width = self.positive.shape[1]
        self.layers = list(range(width)) if self.layers is None else [int(x) for x in self.layers]
        if len(self.layers) != width or len(set(self.layers)) != width:
            raise ShapeError(f"layers={self.layers} must name {width} distinct layers, one per activation column")
        if self.n_layers is None:
            self.n_layers = max(self.layers) + 1

    @property
    def held(self) -> list[int]:
        """The layers held, in column order."""
        assert self.layers is not None  # filled in by __post_init__
        return self.layers

    @property
    def paired(self) -> bool:
        """True when row ``i`` of ``positive`` and of ``negative`` form a pair (same counts)."""
        return self.positive.shape[0] == self.negative.shape[0]

    def column(self, layer: int) -> int:
        """Index of ``layer`` along the layer axis."""
        if layer not in self.held:
            raise SiteError(f"layer {layer} was not captured; these activations hold layers {self.held}")
        return self.held.index(layer)

    def at(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positive [n, d], negative [n, d])`` at one layer."""
        j = self.column(layer)
        return self.positive[:, j], self.negative[:, j]

    def select(self, layers: Layers) -> PairActivations:
        """The same activations restricted to ``layers`` (None or ``"all"``: all held)."""
        if layers is None or (isinstance(layers, str) and layers == "all"):
            return self
        wanted = normalize_layers(layers, self.n_layers or max(self.held) + 1)
        cols = [self.column(layer) for layer in wanted]
        return PairActivations(self.positive[:, cols], self.negative[:, cols], wanted, self.site, self.positions,
                               self.chat, self.model, self.dataset, self.n_layers, dict(self.meta))


def capture_pairs(model: Model, pairs: Sides, layers: Layers = None, site: str = "resid_post",
                  positions: DirectionPositions = "last",
                  chat: bool = False, batch_size: int = 16, progress: bool | None = None) -> PairActivations:
    """Capture the positive and negative texts at ``site`` over ``layers`` in one pass.

    ``pairs``: a ContrastiveSet, or ``(positive_texts, negative_texts)`` of any sizes (mean
    differences and probes accept unequal sides; PCA needs pairs). ``positions``: ``"last"`` (the
    last token of each text), ``"mean"`` (mean over its tokens), a token index (``-4``: the 4th
    from the end) or a list of indices (their mean). Texts are used as given unless ``chat=True``.
    """
    positive, negative, described = sides_of(pairs)
    check_site(site)
    positions = check_positions(positions)
    layer_list = normalize_layers(layers, model.n_layers)
    texts = positive + negative
    acts = model.capture(texts, sites=site, layers=layer_list, positions=positions, chat=chat,
                         batch_size=batch_size, progress=progress)
    values = [acts.tensor(f"layers.{layer}.{site}") for layer in layer_list]
    stacked = torch.stack([v.mean(1) if isinstance(positions, list) else v for v in values], dim=1)
    stacked = stacked.reshape(*stacked.shape[:2], -1)
    n = len(positive)
    return PairActivations(stacked[:n], stacked[n:], layer_list, site, positions, chat, dict(model.fingerprint),
                           described, model.n_layers)


def sides_of(pairs: object) -> tuple[list[str], list[str], dict[str, Any]]:
    """``(positive texts, negative texts, description)`` of a ContrastiveSet or a ``(positive, negative)`` tuple."""
    if isinstance(pairs, tuple) and len(pairs) == 2 and not isinstance(pairs, ContrastiveSet):
        sides = []
        for what, texts in zip(("positive", "negative"), pairs):
            if isinstance(texts, str) or not all(isinstance(t, str) and t.strip() for t in texts) or not texts:
                raise DataError(f"pairs=(positive, negative): the {what} side must be a non-empty list of "
                                "non-empty strings")
            sides.append(list(texts))
        digest = short_hash([t.encode() + b"\0" for t in sides[0]] + [b"\1"] + [t.encode() + b"\0" for t in sides[1]])
        return sides[0], sides[1], {"name": "custom", "positive": len(sides[0]), "negative": len(sides[1]),
                                    "hash": digest}
    checked = check_pairs(pairs)
    return list(checked.positive), list(checked.negative), checked.describe()


def resolve(model: Model | None, pairs: Sides | None, layers: Layers, site: str, positions: DirectionPositions,
            chat: bool, batch_size: int, acts: PairActivations | None) -> PairActivations:
    """Capture (or reuse ``acts``, checking it matches the request) for the method wrappers."""
    if acts is None:
        if model is None or pairs is None:
            raise SteerlabError("give a model and pairs, or precomputed activations with acts=")
        return capture_pairs(model, pairs, layers, site, positions, chat, batch_size)
    if not isinstance(acts, PairActivations):
        raise SteerlabError(f"acts must be PairActivations (from capture_pairs), got {type(acts).__name__}")
    if site != acts.site:
        raise SteerlabError(f"site={site!r} but acts were captured at {acts.site!r}; pass site={acts.site!r}")
    if check_positions(positions) != check_positions(acts.positions):
        raise SteerlabError(f"positions={positions!r} but acts were captured with positions={acts.positions!r}")
    if model is not None and acts.model and acts.model.get("shape_hash") != model.fingerprint.get("shape_hash"):
        raise ShapeError(f"acts were captured on {acts.model.get('name')!r}, not on {model.name!r}")
    if pairs is not None and acts.dataset and acts.dataset.get("hash") != sides_of(pairs)[2]["hash"]:
        raise DataError(f"acts were captured on data set {acts.dataset.get('name')!r}, not on these pairs")
    return acts.select(layers)


def provenance(method: str, acts: PairActivations, **extra: Any) -> dict[str, Any]:
    """The metadata every Direction carries: where, how and from what it was made."""
    return {"model": acts.model, "site": acts.site, "method": method, "positions": acts.positions,
            "chat": acts.chat, "dataset": acts.dataset, **extra}


def check_pairs(pairs: object) -> ContrastiveSet:
    """Raise ``DataError`` unless ``pairs`` is a non-empty ContrastiveSet."""
    if not isinstance(pairs, ContrastiveSet):
        raise DataError(f"pairs must be a ContrastiveSet(positive=[...], negative=[...]), got {type(pairs).__name__}")
    if len(pairs) == 0:
        raise DataError("pairs is empty; give at least one positive/negative pair")
    return pairs


def check_site(site: object) -> str:
    """Raise ``SiteError`` unless ``site`` is a per-layer kind with one flat vector per token."""
    if site not in DIRECTION_SITES:
        hint = " (give the layers with layers=)" if isinstance(site, str) and site.startswith("layers.") else ""
        raise SiteError(f"site={site!r} is not a site a direction can be found at{hint}; "
                        f"use one of {', '.join(DIRECTION_SITES)}")
    return str(site)


def check_positions(positions: object) -> str | int | list[int]:
    """Raise unless ``positions`` reduces each text to one vector: ``"last"``, ``"mean"``, a token
    index or a list of indices (averaged)."""
    if positions == "all":
        raise SteerlabError(f"positions={positions!r} is not allowed for directions; use one of "
                            f"{', '.join(DIRECTION_POSITIONS)}, a token index (e.g. -4) or a list of them")
    return check_capture_positions(positions)


def _as_3d(x: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 2:
        x = x[:, None]
    if x.dim() != 3:
        raise ShapeError(f"{what} activations must be [n, d] or [n, n_layers, d], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{what} activations are empty (0 rows)")
    if not x.is_floating_point():
        x = x.float()
    return x
