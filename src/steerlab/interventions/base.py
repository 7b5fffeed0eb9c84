"""The intervention protocol: per-row parameters, position masks, and one vectorised op per site.

An intervention says *what* happens to an activation (its math, in ``apply``), *where* (a site
kind over some layers) and *when* (a position spec). It never touches the model: hooks in
``models/hooks.py`` hand it the activation at a site and a ``StepContext``.

Batches may mix recipes: rows are grouped by ``group_key`` and each group's per-row parameters
are stacked once per call, so a decoding step runs one tensor op per group, never a loop over rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from ..errors import ShapeError, SteerlabError
from ..sites import GLOBAL_KINDS, Site, check_kind, normalize_layers
from .positions import PositionSpec, StepContext, describe_positions, parse_positions

Params = dict[str, torch.Tensor]


def describe_layers(layers):
    """The JSON-friendly form of a layers argument."""
    if layers is None or isinstance(layers, (int, str)):
        return layers
    return [int(x) for x in layers]


def as_tensor(value, what: str) -> torch.Tensor:
    """A float tensor from a tensor, numpy array or list; a clear error otherwise."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise SteerlabError(f"{what} must be a tensor or an array of numbers, got {type(value).__name__}") from None


def per_layer(value, what: str) -> torch.Tensor | dict[int, torch.Tensor]:
    """Accept one tensor (the same at every layer), a ``{layer: tensor}`` dict, or a Direction-like
    object (``.layers`` and ``obj[layer]``), and return a tensor or a dict of tensors."""
    if isinstance(value, dict):
        return {int(k): as_tensor(v, what) for k, v in value.items()}
    if hasattr(value, "layers") and hasattr(value, "__getitem__") and not isinstance(value, torch.Tensor):
        return {int(layer): as_tensor(value[layer], what) for layer in value.layers}
    return as_tensor(value, what)


def at_layer(value: torch.Tensor | dict[int, torch.Tensor], site: Site, what: str) -> torch.Tensor:
    """The value an intervention uses at ``site`` (the per-layer entry, or the shared tensor)."""
    if isinstance(value, dict):
        if site.layer not in value:
            raise SteerlabError(f"{what} has no vector for layer {site.layer}; it holds layers {sorted(value)}")
        return value[site.layer]
    return value


def check_width(vector: torch.Tensor, width: int, site: Site, what: str) -> torch.Tensor:
    """Check a vector's last dimension against the site's width."""
    if vector.shape[-1] != width:
        raise ShapeError(
            f"{what} has width {vector.shape[-1]} but site {site.name} has width {width}; "
            "was it made for another model?"
        )
    return vector


def unit(vector: torch.Tensor, what: str) -> torch.Tensor:
    """``vector / ‖vector‖`` in float32, refusing the zero vector."""
    v = vector.float()
    norm = v.norm(dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise SteerlabError(f"{what} is the zero vector; it has no direction")
    return v / norm


def orthonormal_rows(matrix: torch.Tensor, what: str) -> torch.Tensor:
    """Rows spanning the same subspace, orthonormal (QR); refuses rank-deficient input."""
    m = matrix.float()
    if m.dim() == 1:
        return unit(m, what)[None]
    q, r = torch.linalg.qr(m.T)
    if bool((r.diagonal().abs() < 1e-6 * r.abs().max().clamp_min(1e-12)).any()):
        raise SteerlabError(f"{what} has linearly dependent rows; give independent directions")
    return q.T.contiguous()


#: every intervention class by its ``kind``, for loading saved recipes
REGISTRY: dict[str, type[Intervention]] = {}


class Intervention:
    """Base class: an edit at one site kind, over some layers, at some positions.

    Subclasses implement ``params`` (one row's tensors at one site) and ``apply`` (the batched math
    on ``x`` of shape ``[B, T, ...]`` with parameters stacked as ``[B or 1, 1, ...]``).
    """

    kind: ClassVar[str] = "intervention"
    #: whether ``apply`` flattens head outputs to ``[B, T, n_heads * d_head]`` (vector edits do)
    flat: ClassVar[bool] = True
    #: whether ``apply`` needs the StepContext (positions resolved inside the math)
    needs_context: ClassVar[bool] = False
    #: constructor arguments held as tensors (or ``{layer: tensor}``); saved to safetensors
    tensor_args: ClassVar[tuple[str, ...]] = ()
    #: other constructor arguments, saved to JSON
    scalar_args: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.kind] = cls

    def __init__(self, *, layers=None, site: str = "resid_post", positions="all"):
        self.site = check_kind(site)
        self.layers = layers
        self.positions: PositionSpec = parse_positions(positions)
        self.provenance: dict | None = None

    def _tensor_arg(self, value, what: str):
        """Normalise a tensor argument (see ``per_layer``), keeping a Direction's metadata as provenance."""
        meta = getattr(value, "meta", None)
        if isinstance(meta, dict) and self.provenance is None:
            self.provenance = meta
        return per_layer(value, what)

    # --- where -------------------------------------------------------------------------------
    def default_layers(self):
        """Layers used when ``layers`` is None: every layer, unless the parameters say otherwise."""
        return

    def targets(self, n_layers: int) -> list[Site]:
        """The full sites this intervention acts on, for a model with ``n_layers`` layers."""
        if self.site in GLOBAL_KINDS:
            return [Site(self.site)]
        layers = self.layers if self.layers is not None else self.default_layers()
        return [Site(self.site, layer) for layer in normalize_layers(layers, n_layers)]

    # --- what --------------------------------------------------------------------------------
    def params(self, site: Site, shape: tuple[int, ...]) -> Params:
        """This intervention's parameters at ``site`` whose trailing activation shape is ``shape``."""
        raise NotImplementedError

    def static(self) -> dict[str, Any]:
        """Options that change the shape of the math (not per-row numbers); passed to ``apply``."""
        return {}

    def group_key(self) -> tuple:
        """Interventions with equal keys can be stacked row-wise into one op."""
        return (type(self), tuple(sorted(self.static().items())))

    @classmethod
    def neutral(cls, p: Params, static: dict[str, Any]) -> Params | None:
        """Parameters shaped like ``p`` for which ``apply`` returns ``x`` exactly, or None if there are none.

        A batch row without this intervention gets them, so a mixed batch runs the math on every
        row with no row mask (a zero vector to add, a zero direction to ablate, a zero angle).
        """
        return None

    @classmethod
    def prepare(cls, p: Params, static: dict[str, Any]) -> Params:
        """Stacked parameters reshaped or combined once per call into what ``apply`` reads fastest
        (a decoding step pays for every tensor op, however small)."""
        return p

    @classmethod
    def apply(cls, x: torch.Tensor, p: Params, mask: torch.Tensor | None, **static) -> torch.Tensor:
        """Batched math: ``x`` is ``[B, T, D]`` (or structured for ``flat=False``), parameters are
        stacked ``[B or 1, 1, ...]``, ``mask`` is ``[B, T]`` (or ``[B, 1]``: whole rows) or None
        (every position)."""
        raise NotImplementedError

    # --- serialisation -----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-friendly settings (tensors go to ``tensors()``)."""
        out = {"layers": describe_layers(self.layers), "site": self.site, "positions": describe_positions(self.positions)}
        out.update({name: getattr(self, name) for name in self.scalar_args})
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor arguments, named ``arg`` or ``arg.<layer>`` for per-layer ones."""
        out: dict[str, torch.Tensor] = {}
        for name in self.tensor_args:
            value = getattr(self, name)
            if isinstance(value, dict):
                out.update({f"{name}.{layer}": t for layer, t in value.items()})
            elif value is not None:
                out[name] = value
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]):
        """Rebuild from ``config()`` and ``tensors()`` (the inverse of saving)."""
        kwargs = dict(config)
        for name in cls.tensor_args:
            if name in tensors:
                kwargs[name] = tensors[name]
            else:
                per = {int(k.split(".", 1)[1]): t for k, t in tensors.items() if k.startswith(name + ".")}
                kwargs[name] = per or None
        return cls(**kwargs)

    # --- direct use on tensors (tests, notebooks) --------------------------------------------
    def __call__(self, x: torch.Tensor, site: Site | str | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply to a tensor ``[B, T, ...]`` directly, at every position (or where ``mask`` is True).

        ``site`` picks the per-layer parameters (default: this intervention's first target).
        """
        if site is None:
            layers = self.layers if self.layers is not None else self.default_layers()
            layer = 0 if layers is None else (layers if isinstance(layers, int) else list(layers)[0])
            site = Site(self.site) if self.site in GLOBAL_KINDS else Site(self.site, int(layer))
        elif isinstance(site, str):
            from ..sites import parse_site

            site = parse_site(site)
        shape = tuple(x.shape[2:])
        p = {k: v.to(device=x.device, dtype=x.dtype if v.is_floating_point() else v.dtype)[None, None]
             for k, v in self.params(site, shape).items()}
        p = type(self).prepare(p, self.static())
        return run(type(self), x, p, mask, self.static(), _direct_context(x) if self.needs_context else None)

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({cfg})"


def run(cls: type[Intervention], x: torch.Tensor, p: Params, mask: torch.Tensor | None, static: dict,
        ctx: StepContext | None = None) -> torch.Tensor:
    """Call ``cls.apply`` (on the flattened view where the intervention works on flat vectors)."""
    if cls.needs_context:
        static = {**static, "ctx": ctx}
    if cls.flat and x.dim() > 3:
        return cls.apply(x.flatten(2), p, mask, **static).view(x.shape)
    return cls.apply(x, p, mask, **static)


def _direct_context(x: torch.Tensor) -> StepContext:
    """A context for a bare tensor ``[B, T, ...]``: every column is a prompt token of every row."""
    batch, width = x.shape[:2]
    zeros = torch.zeros(batch, dtype=torch.long, device=x.device)
    return StepContext(batch, width, 0, zeros, zeros + width)


def masked(x: torch.Tensor, new: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``new`` where ``mask`` is True (every position when None), ``x`` elsewhere."""
    if mask is None:
        return new
    return torch.where(mask.view(*mask.shape, *([1] * (x.dim() - 2))), new, x)


def numel(shape) -> int:
    """Number of elements of a trailing shape, e.g. ``(n_heads, d_head)`` -> ``n_heads * d_head``."""
    out = 1
    for s in shape:
        out *= int(s)
    return out


def dot(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product over the last dimension, keeping it: ``[..., 1]``."""
    return (x * v).sum(-1, keepdim=True)


class Op:
    """One group's compiled op at one site: stacked per-row parameters and position specs.

    Built once per call; ``__call__`` runs every decoding step. Whatever does not change between
    steps is worked out here, once: an op touching every position of every row runs the math with
    no mask and never reads the context; an op touching every position of *some* rows keeps one
    constant ``[B, 1]`` row mask instead of building a ``[B, T]`` mask each step.
    """

    def __init__(self, cls: type[Intervention], static: dict, params: Params, specs: list[PositionSpec | None],
                 extra_rows=None, device: torch.device | None = None):
        self.cls = cls
        self.static = static
        self.params = cls.prepare(params, static)
        self.specs = specs
        self.shared_spec = specs[0] if len(set(specs)) == 1 else None
        self.extra_rows = extra_rows  # callable(ctx) -> [B] bool, or None
        self.rows: torch.Tensor | None = None  # [B, 1] bool: rows touched at every position
        if self.shared_spec is None and set(specs) == {"all", None}:
            self.rows = torch.tensor([s is not None for s in specs], device=device)[:, None]
        #: no mask and no context needed: the same math at every step
        self.context_free = self.shared_spec == "all" and extra_rows is None and not cls.needs_context

    def mask(self, ctx: StepContext) -> torch.Tensor | None:
        """``[B, T]`` or ``[B, 1]`` bool mask of what this op touches in this forward pass (None: everything)."""
        if self.rows is not None:
            mask = self.rows
        elif self.shared_spec is not None:
            mask = ctx.mask(self.shared_spec)
        else:
            mask = ctx.row_mask(self.specs)
        if self.extra_rows is not None:
            rows = self.extra_rows(ctx)[:, None]
            mask = rows if mask is None else mask & rows
        return mask

    def direct(self, shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For a context-free op on a flat site (trailing ``shape`` of one dimension): ``x -> new x``
        calling the math straight away, so a hook needs no context and no dispatch. None otherwise."""
        if not self.context_free or (self.cls.flat and len(shape) != 1):
            return None
        return functools.partial(self.cls.apply, p=self.params, mask=None, **self.static)

    def __call__(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if self.context_free:
            return run(self.cls, x, self.params, None, self.static)
        if x.shape[1] != ctx.width:
            ctx = ctx.tail(x.shape[1])
        return run(self.cls, x, self.params, self.mask(ctx), self.static, ctx)


def compile_rows(
    items: list[Intervention | None],
    site: Site,
    shape: tuple[int, ...],
    like: torch.Tensor,
    extra_rows=None,
) -> Op:
    """Stack the parameters of one group (one entry per batch row, None for untouched rows) into an Op.

    When every row holds the same intervention the parameters keep a leading dimension of 1.
    """
    present = [it for it in items if it is not None]
    first = present[0]
    cls = type(first)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=like.device, dtype=like.dtype if t.is_floating_point() else t.dtype)

    if all(it is first for it in items):
        params = {k: cast(v)[None, None] for k, v in first.params(site, shape).items()}
        specs: list = [first.positions] * len(items)
        return Op(cls, first.static(), params, specs, extra_rows, like.device)
    cache: dict[int, Params] = {}
    for it in present:
        if id(it) not in cache:
            cache[id(it)] = it.params(site, shape)
    neutral = cls.neutral(cache[id(first)], first.static())
    # Rows without the intervention: neutral parameters at the present rows' positions (no row
    # mask needed) when the class has them and those positions agree, else a row mask.
    spec_of_absent = None
    if neutral is not None and len({it.positions for it in present}) == 1:
        spec_of_absent = first.positions
    else:
        neutral = cache[id(first)]
    rows = [cache[id(it)] if it is not None else neutral for it in items]
    params = {k: cast(torch.stack([r[k] for r in rows]))[:, None] for k in rows[0]}
    specs = [it.positions if it is not None else spec_of_absent for it in items]
    return Op(cls, first.static(), params, specs, extra_rows, like.device)
