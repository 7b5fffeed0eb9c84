"""Bake a steering recipe into the weights: a plain transformers model that computes the same thing.

Only recipes that are affine in one writer's output are exact as weight edits (see ``writers.py``):

- ``Add`` at ``resid_post``/``mlp_out`` (and ``resid_pre`` of the next layer) becomes a bias on the
  MLP's down projection; at ``attn_out``/``resid_mid`` a bias on the attention output projection;
  at ``embed`` (and ``resid_pre`` of layer 0) a shift of every embedding row.
- ``Ablate`` at ``embed``, ``attn_out`` or ``mlp_out`` becomes weight orthogonalisation of that
  writer: ``W <- (I - Q^T Q) W`` and the same for its bias (weight orthogonalisation, Arditi et al. 2024).

Everything else is refused with the reason: rotations, norm-matched additions and clamps to a
range depend on each token's activation; conditional steering depends on the prompt; a recipe
restricted to some positions cannot be a weight (weights act on every token); ablating the
residual stream at one point is not a function of one writer. In Gemma 2/3 the sub-layer outputs
pass through a post-norm (RMSNorm with a per-channel weight) before reaching the residual stream,
so only the embedding can be edited exactly there. Multipliers a family applies to a writer's
output (Granite's ``residual_multiplier``/``embedding_multiplier``, declared by its adapter) are
folded into the edit, so additions at residual sites stay exact there.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..errors import SteerlabError
from ..interventions import Ablate, Add, Conditional, Intervention, Steering, Weighted
from ..models.adapters import Bound, Projection
from ..models.hooks import shape_of
from ..sites import Site
from . import writers
from .writers import NotBakeableError, Op

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ..models.model import Model

#: the sub-layer sites each writer owns, and the residual sites whose additions fold into it
ADD_SITES = ("embed", "resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")
ABLATE_SITES = ("embed", "attn_out", "mlp_out")

#: a residual writer: ``("embed",)``, ``("attn", layer)`` or ``("mlp", layer)``
WriterKey = tuple[Any, ...]


@dataclass
class WriterEdit:
    """Edits of one writer's output, in the order the hooks would apply them.

    Each op is ``("ablate", Q)`` (``y -> y - Q^T Q y``, Q orthonormal rows) or ``("add", c)``
    (``y -> y + c``); applied one after the other, as rank-k updates of the weights.
    """

    ops: list[Op] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def adds(self) -> bool:
        return any(kind == "add" for kind, _ in self.ops)


def as_steering(steering: Steering | Intervention) -> Steering:
    """A Steering from a Steering or a single intervention."""
    if isinstance(steering, Intervention):
        return Steering([steering])
    if isinstance(steering, Steering):
        return steering
    raise SteerlabError(f"steering must be a Steering recipe or an intervention, got {type(steering).__name__}")


def _writer_of(bound: Bound, site: Site, what: str) -> WriterKey:
    """The writer whose output an edit at ``site`` changes: ``("embed",)``, ``("attn", l)``, ``("mlp", l)``."""
    kind, layer = site.kind, site.layer
    if kind == "embed" or (kind == "resid_pre" and layer == 0):
        return ("embed",)
    if layer is None:  # pragma: no cover - every other bakeable kind is per-layer
        raise NotBakeableError(f"{what} at {site.name} cannot be baked: the site has no layer")
    if kind == "resid_pre":
        key: WriterKey = ("mlp", layer - 1)
    elif kind in ("attn_out", "resid_mid"):
        key = ("attn", layer)
    else:
        key = ("mlp", layer)
    which = _projection(key)
    if not writers.writes_residual_directly(bound, which):
        post = bound.adapter.attn_out if which == "o_proj" else bound.adapter.mlp_out
        raise NotBakeableError(
            f"{what} at {site.name} cannot be baked for {bound.model.config.model_type}: the residual stream "
            f"receives {post}({getattr(bound.adapter, which)}(...)), a post-norm that divides by the output's "
            "own RMS and multiplies by a per-channel weight, so no weight or bias change reproduces it "
            "exactly; only edits at 'embed' are bakeable in this family"
        )
    return key


def _projection(key: WriterKey) -> Projection:
    return "o_proj" if key[0] == "attn" else "down_proj"


def _check_common(item: Intervention, i: int) -> str:
    name = f"steering[{i}] ({type(item).__name__})"
    if isinstance(item, Conditional):
        raise NotBakeableError(f"{name} is conditional: it fires only on prompts whose probe passes a threshold, "
                               "while baked weights act on every input; bake the inner intervention instead")
    if isinstance(item, Weighted):
        raise NotBakeableError(f"{name} is a controller-weighted addition: how much it adds at each token comes from "
                               "a controller reading that token's own hidden states, which no fixed weight reproduces; "
                               "train an amortized checkpoint instead (sl.edit.amortize)")
    if item.positions != "all":
        raise NotBakeableError(f"{name} has positions={item.positions!r}: a weight edit acts on every token, "
                               "so only positions='all' can be baked")
    return name


def plan(model: Model, steering: Steering | Intervention) -> dict[WriterKey, WriterEdit]:
    """Translate a recipe into one affine edit per writer, in the order the hooks would apply them.

    Raises ``NotBakeableError`` naming the first intervention that is not exactly bakeable and why.
    """
    steering = as_steering(steering)
    bound = model.bound
    entries: list[tuple[tuple[int, int], int, WriterKey, Op, str]] = []  # (depth, recipe index, writer, op, label)
    for i, item in enumerate(steering):
        name = _check_common(item, i)
        if isinstance(item, Add):
            if item.norm_match:
                raise NotBakeableError(f"{name} has norm_match=True: rescaling each token to its own norm is not "
                                       "linear, so no weight edit reproduces it")
            sites_ok: tuple[str, ...] = ADD_SITES
        elif isinstance(item, Ablate):
            sites_ok = ABLATE_SITES
        else:
            raise NotBakeableError(
                f"{name} cannot be baked: {_WHY.get(item.kind, 'it is not an affine map of one writer output')}; "
                "bakeable: Add and Ablate (positions='all')"
            )
        for site in item.targets(bound.n_layers):
            if site.kind not in sites_ok:
                raise NotBakeableError(f"{name} at {site.name} cannot be baked: {_site_reason(item, site)}")
            key = _writer_of(bound, site, name)
            params = item.params(site, shape_of(bound, site))
            op = ("add", params["delta"].double()) if isinstance(item, Add) else ("ablate", params["basis"].double())
            entries.append((site.depth(bound.n_layers), i, key, op, f"{type(item).__name__}@{site.name}"))
    edits: dict[WriterKey, WriterEdit] = {}
    for _depth, _i, key, op, label in sorted(entries, key=lambda e: (e[0], e[1])):
        edit = edits.setdefault(key, WriterEdit())
        edit.ops.append(op)
        edit.sources.append(label)
    return edits


_WHY = {
    "rotate": "a rotation depends on each token's own angle to the direction, which no fixed weight reproduces",
    "patch": "patching sets activations taken from another run, which depends on the input",
    "scale": "bake implements Add and Ablate only (scaling heads or neurons is linear but not implemented yet)",
    "clamp": "clamping sets each token's projection to a value, which depends on the token",
}


def _site_reason(item: Intervention, site: Site) -> str:
    if isinstance(item, Ablate):
        return ("ablation is exact only at the writers of the residual stream (embed, attn_out, mlp_out); "
                "ablating the stream at one point removes what every earlier writer put there, which later "
                "writers can add back, and no single writer's weights reproduce that. "
                "Use sl.recipes.directional_ablation(direction), which ablates at every writer")
    return (f"an addition at {site.kind} is not a bias of any residual writer "
            f"(bakeable sites: {', '.join(ADD_SITES)})")


def apply(hf: PreTrainedModel, bound: Bound, edits: dict[WriterKey, WriterEdit]) -> dict[str, Any]:
    """Apply planned edits to ``hf`` (a copy) in place; return what was changed, for provenance."""
    changes: dict[str, Any] = {"switches": [], "untied": False}
    if ("embed",) in edits:
        changes["untied"] = writers.untie_embeddings(hf)
    for kind in ("attn", "mlp"):
        which = _projection((kind,))
        if any(k[0] == kind and e.adds for k, e in edits.items()):
            switch = writers.ensure_bias(hf, bound, which)
            if switch:
                changes["switches"].append(switch)
    for key, edit in edits.items():
        if key == ("embed",):
            writers.edit_embeddings(hf, bound, edit.ops)
        else:
            module = hf.get_submodule(writers.projection_path(bound, _projection(key), key[1]))
            writers.edit_projection(bound, module, edit.ops)
    return changes


def attach_tokenizer(hf: Any, tokenizer: Any) -> None:
    """Make ``hf.save_pretrained(path)`` also write ``tokenizer`` to ``path``."""
    original = hf.save_pretrained

    def save_pretrained(save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(save_directory, *args, **kwargs)
        tokenizer.save_pretrained(save_directory)
        return result

    save_pretrained.__doc__ = original.__doc__
    hf.save_pretrained = save_pretrained


def bake(model: Model, steering: Steering | Intervention, verify: bool = True) -> PreTrainedModel:
    """A transformers model with ``steering`` folded into its weights; the original is not changed.

    ``model`` is a steerlab ``Model``; ``steering`` a ``Steering`` or one intervention. The result's
    ``save_pretrained(path)`` also writes the tokenizer, so ``AutoModelForCausalLM.from_pretrained``
    and ``AutoTokenizer.from_pretrained`` load it with no steerlab installed. With ``verify`` the
    baked model's next-token logits on two probe texts are compared with the hook-steered model's.
    Raises ``NotBakeableError`` (a ``SteerlabError``) saying why a recipe cannot be baked exactly.
    """
    from .. import __version__

    steering = as_steering(steering)
    steering.check_model(model.fingerprint)
    if not len(steering):
        raise SteerlabError("steering is empty; give at least one intervention to bake")
    edits = plan(model, steering)
    hf = copy.deepcopy(model.hf_model)
    changes = apply(hf, model.bound, edits)
    hf.config.steerlab = {
        "baked": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "version": __version__, "from": model.name,
        "source": source_fingerprint(model),
        "edits": {_key_name(k): e.sources for k, e in edits.items()}, **changes,
    }
    attach_tokenizer(hf, model.tokenizer)
    if verify:
        check_equivalent(model, steering, hf)
    return hf


def source_fingerprint(model: Model) -> dict[str, Any]:
    """The model a checkpoint is baked from: its shape fingerprint and a weights fingerprint, so recipes
    made for it load on the baked checkpoint (whose shape can differ: added biases, untied embeddings)."""
    from ..models.load import weights_fingerprint

    fp = {k: v for k, v in model.fingerprint.items() if k != "baked_from"}
    return {**fp, "weights": weights_fingerprint(model.hf_model)}


def _key_name(key: WriterKey) -> str:
    return "embed" if key == ("embed",) else f"layers.{key[1]}.{'attn_out' if key[0] == 'attn' else 'mlp_out'}"


PROBES = ["The quick brown fox jumps over the lazy dog.", "Hello"]


def check_equivalent(model: Model, steering: Steering | Intervention, hf: PreTrainedModel,
                     texts: list[str] = PROBES) -> float:
    """Max |baked - hook-steered| next-token logit over ``texts``, relative to the logit scale.

    Raises ``SteerlabError`` when above 1e-3 (float32) or 5e-2 (half precision).
    """
    from ..models import Model

    baked = Model(hf, model.tokenizer, name=model.name)
    want = model.logits(texts, steering=steering, progress=False)
    got = baked.logits(texts, progress=False)
    error = float((want - got).abs().max() / want.abs().max().clamp_min(1e-12))
    limit = 1e-3 if model.dtype == torch.float32 else 5e-2
    if not error <= limit:
        raise SteerlabError(f"the baked model differs from the hook-steered one by {error:.2e} of the logit scale "
                            f"(limit {limit:g}); this family may compute its sub-layers differently than assumed")
    return error
