"""Activations held in memory: one tensor (or list of per-text tensors) per site."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import torch

from ..errors import SiteError, SteerlabError
from ..sites import Site, parse_site

POSITIONS = ("last", "mean", "all")
#: a capture's positions: a mode of ``POSITIONS``, one token index, or a list of them (negatives from the end)
CapturePositions: TypeAlias = str | int | Sequence[int]
#: one site's values: ``[n_texts, ...]`` (positions "last"/"mean") or one ``[n_tokens_i, ...]`` per text ("all")
SiteValue: TypeAlias = torch.Tensor | list[torch.Tensor]


class Activations:
    """Captured activations, indexed by site name.

    ``acts["layers.12.resid_post"]`` is ``[n_texts, ...]`` for ``positions="last"`` or ``"mean"``,
    and a list of ``[n_tokens_i, ...]`` tensors for ``"all"``. ``acts.stack("resid_post")`` gives
    ``[n_texts, n_layers, d]`` over the captured layers.
    """

    def __init__(self, data: Mapping[str, SiteValue], positions: CapturePositions,
                 meta: dict[str, Any] | None = None):
        self.data: Mapping[str, SiteValue] = data
        self.positions = check_positions(positions)
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def sites(self) -> list[str]:
        """The captured site names."""
        return list(self.data)

    def __len__(self) -> int:
        first = next(iter(self.data.values()), None)
        return 0 if first is None else len(first)

    def __contains__(self, site: object) -> bool:
        return _name(site) in self.data

    def __getitem__(self, site: Site | str) -> SiteValue:
        name = _name(site)
        if name not in self.data:
            raise SiteError(f"site {name!r} was not captured; captured: {', '.join(self.data) or 'nothing'}")
        return self.data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def tensor(self, site: Site | str) -> torch.Tensor:
        """One site's ``[n_texts, ...]`` tensor (captures with positions 'last' or 'mean')."""
        value = self[site]
        if not isinstance(value, torch.Tensor):
            raise SteerlabError(f"site {_name(site)!r} holds one tensor per text (positions='all'); index it per text")
        return value

    def layers(self, kind: str) -> list[int]:
        """Layers captured for a per-layer site kind, in order."""
        out: list[int] = []
        for name in self.data:
            site = parse_site(name)
            if site.kind == kind and site.layer is not None:
                out.append(site.layer)
        return sorted(out)

    def stack(self, kind: str = "resid_post") -> torch.Tensor:
        """``[n_texts, n_layers, ...]`` for one site kind over every captured layer (last/mean only)."""
        if self.positions == "all":
            raise SteerlabError("stack() needs positions='last' or 'mean'; with 'all' index sites one by one")
        layers = self.layers(kind)
        if not layers:
            raise SiteError(f"no {kind!r} sites were captured; captured: {', '.join(self.data)}")
        values = [self.data[Site(kind, layer).name] for layer in layers]
        return torch.stack([v for v in values if isinstance(v, torch.Tensor)], dim=1)

    def __repr__(self) -> str:
        return f"Activations({len(self)} texts, positions={self.positions!r}, sites={len(self.data)})"


def check_positions(positions: object) -> str | int | list[int]:
    """``positions`` in its JSON-friendly form: a mode name, an int, or a non-empty list of ints.

    Explicit indices count from each text's first token (``0``) or back from its end (``-1`` is the
    last token), as interventions' positions do.
    """
    if isinstance(positions, str):
        if positions in POSITIONS:
            return positions
    elif isinstance(positions, int) and not isinstance(positions, bool):
        return int(positions)
    elif isinstance(positions, (list, tuple, range)) and len(positions) > 0 and all(
            isinstance(p, int) and not isinstance(p, bool) for p in positions):
        return [int(p) for p in positions]
    raise SteerlabError(f"positions={positions!r} is not allowed; use one of {', '.join(POSITIONS)}, a token index "
                        "(negative from the end, e.g. -4) or a non-empty list of them")


def _name(site: object) -> str:
    return site.name if isinstance(site, Site) else str(site)
