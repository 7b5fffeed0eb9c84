"""The intervention protocol: what an edit computes, where and when it acts, and how it is saved.

An intervention says *what* happens to an activation (its math, in ``apply``), *where* (a site
kind over some layers) and *when* (a position spec). It never touches the model: hooks hand it the
activation at a site and a ``StepContext``. Stacking many rows' parameters into one op per
decoding step is ``batched.py``'s job; this module holds only the contract and the small helpers
the math shares.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias

import numpy as np
import torch

from .. import io
from ..errors import DataError, ShapeError, SteerlabError
from ..sites import GLOBAL_KINDS, Site, check_kind, normalize_layers, parse_site
from .positions import PositionSpec, StepContext, describe_positions, parse_positions

if TYPE_CHECKING:
    from typing_extensions import Self

Params: TypeAlias = dict[str, torch.Tensor]
#: options that shape the math (not per-row numbers), passed to ``apply`` as keyword arguments
Static: TypeAlias = dict[str, Any]
#: a layers argument: None (every layer, or the layers the parameters hold), ``"all"``, an int or ints
Layers: TypeAlias = int | str | Iterable[int] | None
#: a positions argument: ``"all"``, ``"prompt"``, ``"generated"``, ``"last"``, an int or ints
Positions: TypeAlias = str | int | Sequence[int]
ArrayLike: TypeAlias = torch.Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]]
#: one tensor per layer, as held by an intervention after ``per_layer``
PerLayer: TypeAlias = torch.Tensor | dict[int, torch.Tensor]


class LayeredVectors(Protocol):
    """Anything holding one vector per layer, like a ``Direction``: ``.layers`` and ``obj[layer]``."""

    @property
    def layers(self) -> list[int]: ...

    def __getitem__(self, layer: int) -> torch.Tensor: ...


#: a tensor argument: one array for every layer, a ``{layer: array}`` dict, or a Direction
VectorLike: TypeAlias = ArrayLike | Mapping[int, ArrayLike] | LayeredVectors


#: the largest strength (``alpha``, a ``Scale`` factor, an angle in degrees) an intervention takes;
#: past it a model only degenerates, so a larger one is a typo (the CLI's ``--alpha`` limit too)
MAX_STRENGTH = 1e4
#: the largest entry of a vector, or a value compared with a projection (the loaders' limit)
MAX_VALUE = io.MAX_MAGNITUDE


def finite(value: object, what: str, limit: float = MAX_STRENGTH) -> float:
    """``value`` as a float if it is a finite number no larger than ``limit`` in size; one clear error otherwise."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        raise SteerlabError(f"{what}={value!r} must be a number") from None
    if isinstance(value, bool) or not math.isfinite(number) or abs(number) > limit:
        raise SteerlabError(f"{what}={value!r} is not allowed; give a finite number of at most {limit:g} in size")
    return number


def describe_layers(layers: Layers) -> int | str | list[int] | None:
    """The JSON-friendly form of a layers argument."""
    if layers is None or isinstance(layers, (int, str)):
        return layers
    return [int(x) for x in layers]


def as_tensor(value: object, what: str) -> torch.Tensor:
    """A float tensor from a tensor, numpy array or list, every entry finite and at most ``MAX_VALUE``
    in size; a clear error otherwise."""
    if isinstance(value, torch.Tensor):
        return io.check_finite(value.detach(), what, MAX_VALUE)
    try:
        tensor = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise SteerlabError(f"{what} must be a tensor or an array of numbers, got {type(value).__name__}") from None
    return io.check_finite(tensor, what, MAX_VALUE)


def per_layer(value: VectorLike, what: str) -> PerLayer:
    """Accept one tensor (the same at every layer), a ``{layer: tensor}`` dict, or a Direction-like
    object (``.layers`` and ``obj[layer]``), and return a tensor or a dict of tensors."""
    if isinstance(value, Mapping):
        return {int(k): as_tensor(v, f"{what} (layer {k})") for k, v in value.items()}
    if hasattr(value, "layers") and hasattr(value, "__getitem__") and not isinstance(value, torch.Tensor):
        layered: Any = value
        return {int(layer): as_tensor(layered[layer], f"{what} (layer {layer})") for layer in layered.layers}
    return as_tensor(value, what)


def at_layer(value: PerLayer, site: Site, what: str) -> torch.Tensor:
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


def masked(x: torch.Tensor, new: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``new`` where ``mask`` is True (every position when None), ``x`` elsewhere."""
    if mask is None:
        return new
    return torch.where(mask.view(*mask.shape, *([1] * (x.dim() - 2))), new, x)


def numel(shape: Iterable[int]) -> int:
    """Number of elements of a trailing shape, e.g. ``(n_heads, d_head)`` -> ``n_heads * d_head``."""
    out = 1
    for s in shape:
        out *= int(s)
    return out


def dot(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product over the last dimension, keeping it: ``[..., 1]``."""
    return (x * v).sum(-1, keepdim=True)


@dataclass(frozen=True)
class Capabilities:
    """What an intervention declares about itself, for code that plans, bakes or serves it.

    ``affine``: its math is ``x -> A x + b`` with ``A`` and ``b`` fixed (not read from ``x``), so it
    can be folded into weights; ``sensor``: it reads a site to decide per row (a condition), so it
    needs a forward pass over the prompt; ``context_free``: its math never reads the ``StepContext``
    (only its position mask does); ``flat``: it works on flat vectors ``[B, T, D]`` (head outputs
    are flattened for it).
    """

    affine: bool
    sensor: bool
    context_free: bool
    flat: bool


#: every intervention class by its ``kind``, for loading saved recipes
REGISTRY: dict[str, type[Intervention]] = {}

def intervention_class(kind: str) -> type[Intervention]:
    """The intervention class saved under ``kind``; ``DataError`` naming the known kinds otherwise."""
    cls = REGISTRY.get(kind)
    if cls is None:
        raise DataError(f"unknown intervention kind {kind!r}; known kinds: {', '.join(sorted(REGISTRY))}")
    return cls


class Intervention:
    """Base class: an edit at one site kind, over some layers, at some positions.

    Subclasses set a unique ``kind`` and implement ``params`` (one row's tensors at one site) and
    ``apply`` (the batched math on ``x`` of shape ``[B, T, ...]`` with parameters stacked as
    ``[B or 1, 1, ...]``).
    """

    kind: ClassVar[str] = "intervention"
    #: whether ``apply`` flattens head outputs to ``[B, T, n_heads * d_head]`` (vector edits do)
    flat: ClassVar[bool] = True
    #: whether ``apply`` needs the StepContext (positions resolved inside the math)
    needs_context: ClassVar[bool] = False
    #: whether this intervention reads a site to decide per row (see ``Capabilities.sensor``)
    sensor: ClassVar[bool] = False
    #: constructor arguments held as tensors (or ``{layer: tensor}``); saved to safetensors
    tensor_args: ClassVar[tuple[str, ...]] = ()
    #: other constructor arguments, saved to JSON
    scalar_args: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is None:
            raise SteerlabError(f"intervention class {cls.__name__} must set its own kind = '...' (saved recipes "
                                f"name interventions by kind; {cls.__mro__[1].__name__}'s is {cls.kind!r})")
        old = REGISTRY.get(kind)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise SteerlabError(f"intervention kind {kind!r} is already taken by {old.__module__}.{old.__qualname__}; "
                                f"give {cls.__name__} another kind")
        REGISTRY[kind] = cls  # the same class defined again (a module reload) replaces itself

    def __init__(self, *, layers: Layers = None, site: str = "resid_post", positions: Positions = "all"):
        self.site = check_kind(site)
        self.layers = layers
        self.positions: PositionSpec = parse_positions(positions)
        self.provenance: dict[str, Any] | None = None

    def _tensor_arg(self, value: VectorLike, what: str) -> PerLayer:
        """Normalise a tensor argument (see ``per_layer``), keeping a Direction's metadata as provenance."""
        meta = getattr(value, "meta", None)
        if isinstance(meta, dict) and self.provenance is None:
            self.provenance = meta
        return per_layer(value, what)

    # --- what it declares ----------------------------------------------------------------------
    @property
    def affine(self) -> bool:
        """Whether the math is ``x -> A x + b`` with fixed ``A``, ``b`` (see ``Capabilities``)."""
        return False

    def capabilities(self) -> Capabilities:
        """What this intervention declares about itself."""
        return Capabilities(affine=self.affine, sensor=self.sensor, context_free=not self.needs_context,
                            flat=self.flat)

    # --- where -------------------------------------------------------------------------------
    def default_layers(self) -> list[int] | None:
        """Layers used when ``layers`` is None: every layer, unless the parameters say otherwise."""
        return None

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

    def static(self) -> Static:
        """Options that change the shape of the math (not per-row numbers); passed to ``apply``."""
        return {}

    def group_key(self) -> tuple[Any, ...]:
        """Interventions with equal keys can be stacked row-wise into one op."""
        return (type(self), tuple(sorted(self.static().items())))

    @classmethod
    def neutral(cls, p: Params, static: Static) -> Params | None:
        """Parameters shaped like ``p`` for which ``apply`` returns ``x`` exactly, or None if there are none.

        A batch row without this intervention gets them, so a mixed batch runs the math on every
        row with no row mask (a zero vector to add, a zero direction to ablate, a zero angle).
        """
        return None

    @classmethod
    def prepare(cls, p: Params, static: Static) -> Params:
        """Stacked parameters reshaped or combined once per call into what ``apply`` reads fastest
        (a decoding step pays for every tensor op, however small)."""
        return p

    @classmethod
    def apply(cls, x: torch.Tensor, p: Params, mask: torch.Tensor | None, *args: Any, **static: Any) -> torch.Tensor:
        """Batched math: ``x`` is ``[B, T, D]`` (or structured for ``flat=False``), parameters are
        stacked ``[B or 1, 1, ...]``, ``mask`` is ``[B, T]`` (or ``[B, 1]``: whole rows) or None
        (every position). ``static`` holds the keyword options of ``static()`` (and ``ctx``, the
        ``StepContext``, when ``needs_context``); subclasses name them as keyword parameters."""
        raise NotImplementedError

    # --- serialisation -----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-friendly settings (tensors go to ``tensors()``)."""
        out: dict[str, Any] = {"layers": describe_layers(self.layers), "site": self.site,
                               "positions": describe_positions(self.positions)}
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
    def from_config(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
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
    def __call__(self, x: torch.Tensor, site: Site | str | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply to a tensor ``[B, T, ...]`` directly, at every position (or where ``mask`` is True).

        ``site`` picks the per-layer parameters (default: this intervention's first target).
        """
        if site is None:
            layers = self.layers if self.layers is not None else self.default_layers()
            layer = 0 if layers is None or isinstance(layers, str) else (
                layers if isinstance(layers, int) else next(iter(layers)))
            site = Site(self.site) if self.site in GLOBAL_KINDS else Site(self.site, int(layer))
        elif isinstance(site, str):
            site = parse_site(site)
        shape = tuple(x.shape[2:])
        p = {k: v.to(device=x.device, dtype=x.dtype if v.is_floating_point() else v.dtype)[None, None]
             for k, v in self.params(site, shape).items()}
        p = type(self).prepare(p, self.static())
        return run(type(self), x, p, mask, self.static(), _direct_context(x) if self.needs_context else None)

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({cfg})"


def run(cls: type[Intervention], x: torch.Tensor, p: Params, mask: torch.Tensor | None, static: Static,
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
