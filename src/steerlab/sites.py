"""Site names, uniform over every supported family, and their parsing.

A *site* is a named place in the forward pass that steerlab can read or write:

- ``embed``: the residual stream entering the first block (token embeddings, scaled as the family
  scales them, plus learned position embeddings where the family has them).
- ``layers.{i}.resid_pre``: the input of block ``i``.
- ``layers.{i}.attn_in`` / ``layers.{i}.mlp_in``: what attention / the MLP reads (after its pre-norm).
- ``layers.{i}.attn_out`` / ``layers.{i}.mlp_out``: exactly what the sub-layer adds to the residual
  stream (after the extra post-norm in Gemma 2/3).
- ``layers.{i}.resid_mid``: ``resid_pre + attn_out``.
- ``layers.{i}.resid_post``: the output of block ``i`` (before the final norm for the last block).
- ``layers.{i}.attn.heads``: each head's output before the output projection, ``[..., n_heads, d_head]``.
- ``layers.{i}.mlp.neurons``: the input of the MLP's down projection, ``[..., d_mlp]``.
- ``final``: after the final norm; ``logits``: the model's output logits.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SiteError

LAYER_KINDS = (
    "resid_pre",
    "attn_in",
    "attn.heads",
    "attn_out",
    "resid_mid",
    "mlp_in",
    "mlp.neurons",
    "mlp_out",
    "resid_post",
)
GLOBAL_KINDS = ("embed", "final", "logits")
KINDS = ("embed", *LAYER_KINDS, "final", "logits")

# Where a site sits in the forward pass, for ordering and for stopping early.
_ORDER = {kind: i for i, kind in enumerate(LAYER_KINDS)}


@dataclass(frozen=True, order=False)
class Site:
    """A parsed site: its kind and, for per-layer kinds, its layer."""

    kind: str
    layer: int | None = None

    @property
    def name(self) -> str:
        return self.kind if self.layer is None else f"layers.{self.layer}.{self.kind}"

    def depth(self, n_layers: int) -> tuple[int, int]:
        """A sort key in forward order: (block index, position within the block)."""
        if self.kind == "embed":
            return (-1, 0)
        if self.kind == "final":
            return (n_layers, 0)
        if self.kind == "logits":
            return (n_layers, 1)
        if self.layer is None:
            raise SiteError(f"site kind {self.kind!r} needs a layer")
        return (self.layer, _ORDER[self.kind])

    def __str__(self) -> str:
        return self.name


def parse_site(name: str, n_layers: int | None = None) -> Site:
    """Parse ``"layers.12.resid_post"`` or ``"embed"``; check the layer against ``n_layers``."""
    if not isinstance(name, str):
        raise SiteError(f"site must be a string like 'layers.3.resid_post', got {name!r}")
    text = name.strip()
    if text in GLOBAL_KINDS:
        return Site(text)
    parts = text.split(".", 2)
    if len(parts) == 3 and parts[0] == "layers" and parts[2] in LAYER_KINDS:
        try:
            layer = int(parts[1])
        except ValueError:
            layer = None
        if layer is not None:
            if n_layers is not None:
                if layer < 0:
                    layer += n_layers
                if not 0 <= layer < n_layers:
                    raise SiteError(
                        f"site {name!r}: layer {parts[1]} is out of range; this model has layers 0..{n_layers - 1}"
                    )
            return Site(parts[2], layer)
    raise SiteError(
        f"unknown site {name!r}; expected one of {', '.join(GLOBAL_KINDS)} or "
        f"'layers.<i>.<kind>' with kind in {', '.join(LAYER_KINDS)}"
    )


def check_kind(kind: str) -> str:
    """Check a bare site kind such as ``"resid_post"`` (no layer)."""
    if kind not in KINDS:
        raise SiteError(f"unknown site kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def expand_sites(sites: str | list[str], layers: list[int] | None, n_layers: int) -> list[Site]:
    """Expand site kinds over layers and parse full names, keeping the given order, no duplicates.

    ``sites`` is a kind (``"resid_post"``), a full name (``"layers.3.attn_out"``) or a list of either;
    a bare per-layer kind is expanded over ``layers`` (default: all layers).
    """
    names = [sites] if isinstance(sites, str) else list(sites)
    if not names:
        raise SiteError("sites is empty; name at least one site, e.g. 'resid_post'")
    layer_list = normalize_layers(layers, n_layers)
    out: list[Site] = []
    for name in names:
        if name in LAYER_KINDS:
            out.extend(Site(name, layer) for layer in layer_list)
        else:
            out.append(parse_site(name, n_layers))
    return list(dict.fromkeys(out))  # first occurrence of each, in order


def normalize_layers(layers, n_layers: int) -> list[int]:
    """Turn ``None``/``"all"``, an int, a range or a list of ints (negatives count from the end) into sorted layers."""
    if layers is None or (isinstance(layers, str) and layers == "all"):
        return list(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    try:
        items = [int(x) for x in layers]
    except (TypeError, ValueError):
        raise SiteError(f"layers must be 'all', an int or a list of ints, got {layers!r}") from None
    out = []
    for layer in items:
        fixed = layer + n_layers if layer < 0 else layer
        if not 0 <= fixed < n_layers:
            raise SiteError(f"layer {layer} is out of range; this model has layers 0..{n_layers - 1}")
        out.append(fixed)
    if not out:
        raise SiteError("layers is empty; give at least one layer")
    return sorted(set(out))
