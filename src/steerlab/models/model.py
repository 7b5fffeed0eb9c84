"""Model: a transformers causal LM with steerlab's sites, capture, generation and logits."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import torch

from ..errors import SteerlabError
from ..interventions.plan import SteeringArg
from ..progress import bar
from ..sites import GLOBAL_KINDS, LAYER_KINDS, Site
from . import capture as _capture
from . import generate as _generate
from .adapters import adapter_for, bind
from .forward import Layout, recipes_for, steered
from .generate import GenerationResult
from .hooks import shape_of
from .tokens import check_context, check_texts, encode, pad, pad_id

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..activations import Activations, DiskActivations

#: one text or a list of texts
Texts: TypeAlias = "str | Sequence[str]"
#: a site kind or full name, or a list of them
SiteSpec: TypeAlias = "str | Site | Sequence[str | Site]"
#: None (all layers), one layer, or a list of layers
LayerSpec: TypeAlias = "int | Sequence[int] | None"
#: None, one recipe (or a single intervention) for every row, or one recipe (or None) per row
SteeringSpec: TypeAlias = SteeringArg


class Model:
    """A loaded causal LM with uniform sites.

    Attributes: ``hf_model`` (the transformers model), ``tokenizer``, ``name``, ``n_layers``,
    ``d_model``, ``n_heads``, ``d_head``, ``d_mlp``, ``family`` and ``fingerprint`` (what recipes
    are checked against).
    """

    def __init__(self, hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str | None = None) -> None:
        self.hf_model = hf_model.eval()
        self.tokenizer = tokenizer
        self.adapter = adapter_for(hf_model)
        self.bound = bind(self.adapter, hf_model)
        self.name = name or getattr(hf_model.config, "_name_or_path", None) or hf_model.config.model_type
        self.fingerprint = _fingerprint(self)

    # --- sizes --------------------------------------------------------------------------------
    n_layers = property(lambda self: self.bound.n_layers)
    d_model = property(lambda self: self.bound.d_model)
    n_heads = property(lambda self: self.bound.n_heads)
    d_head = property(lambda self: self.bound.d_head)
    d_mlp = property(lambda self: self.bound.d_mlp)
    family = property(lambda self: self.adapter.family)

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    def sites(self) -> list[str]:
        """Every valid site name of this model, in forward order."""
        names = ["embed"]
        for layer in range(self.n_layers):
            names.extend(Site(kind, layer).name for kind in LAYER_KINDS)
        return names + [k for k in GLOBAL_KINDS if k != "embed"]

    def site_shape(self, site: str | Site) -> tuple[int, ...]:
        """Trailing shape of a site's activation (after ``[batch, tokens]``)."""
        from ..sites import parse_site

        return shape_of(self.bound, parse_site(site, self.n_layers) if isinstance(site, str) else site)

    # --- the three calls ----------------------------------------------------------------------
    def capture(self, texts: Texts, sites: SiteSpec = "resid_post", layers: LayerSpec = None,
                positions: str | int | Sequence[int] = "last", chat: bool = False, batch_size: int = 16,
                out: str | os.PathLike[str] | None = None, steering: SteeringSpec = None,
                progress: bool | None = None, overwrite: bool = False) -> Activations | DiskActivations:
        """Capture activations at ``sites`` over ``texts``.

        ``sites`` is a kind (``"resid_post"``, expanded over ``layers``, default all) or full names
        (``"layers.12.resid_post"``), or a list of either. ``positions``: ``"last"`` (the last
        non-pad token) or ``"mean"`` give ``[n_texts, ...]`` per site; ``"all"`` a list of
        ``[n_tokens_i, ...]``; a token index (``-4``: the 4th token from each text's end, ``0`` the
        first) gives ``[n_texts, ...]`` and a list of indices ``[n_texts, k, ...]``. Texts are used as given (``chat=True`` applies the chat template).
        With ``out=folder`` the result is streamed to sharded safetensors (resumable) and read back
        memory-mapped; rerun after a crash it resumes, and a folder holding a different capture
        (other texts, weights, dtype, device kind or settings) is refused unless ``overwrite=True``.
        ``steering`` applies a recipe (or one per text) while capturing.
        """
        return _capture.capture(self, texts, sites, layers, positions, chat, batch_size, out, steering, progress,
                                overwrite)

    def generate(self, prompts: Texts, steering: SteeringSpec = None, max_new_tokens: int = 64,
                 do_sample: bool = False, chat: bool | None = None, seed: int | None = None,
                 **kwargs: Any) -> GenerationResult:
        """Generate for ``prompts`` in one batch, with ``steering`` (one recipe, or a list with one
        recipe or None per prompt). ``chat=None`` applies the chat template when the tokenizer has
        one. Returns a ``GenerationResult`` (``.texts`` and ``.tokens``, generated part only).
        Extra keyword arguments: ``temperature``, ``top_p``, ``top_k``, ``use_cache``, ``system``, and
        ``compile=True`` (static KV cache and a compiled forward pass; the first call compiles).
        """
        return _generate.generate(self, prompts, steering, max_new_tokens, do_sample, chat, seed, **kwargs)

    def logits(self, texts: Texts, steering: SteeringSpec = None, chat: bool = False, batch_size: int = 16,
               progress: bool | None = None) -> torch.Tensor:
        """Next-token logits at each text's last token, ``[n_texts, vocab]`` (float32, CPU)."""
        texts = check_texts(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SteerlabError(f"batch_size must be a positive integer, got {batch_size!r}")
        ids = encode(self.tokenizer, texts, chat)
        check_context(self, ids, texts)
        recipes = recipes_for(self, steering, len(texts), [len(i) for i in ids])
        out = []
        with bar("logits", (len(texts) + batch_size - 1) // batch_size, progress) as advance:
            for begin in range(0, len(texts), batch_size):
                rows = list(range(begin, min(begin + batch_size, len(texts))))
                batch = pad([ids[i] for i in rows], pad_id(self.tokenizer), "left", self.device)
                layout = Layout(batch.start, batch.end)
                with torch.inference_mode(), steered(self, [recipes[i] for i in rows], layout, "single"):
                    result = self.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                           position_ids=batch.position_ids(), use_cache=False, logits_to_keep=1)
                out.append(result.logits[:, -1].float().cpu())
                advance()
        return torch.cat(out)

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, family={self.family}, n_layers={self.n_layers}, d_model={self.d_model}, "
                f"dtype={self.dtype}, device={self.device})")


def _fingerprint(model: Model) -> dict:
    """Name plus a hash of the architecture's shape: config type and every parameter's name and shape."""
    h = hashlib.sha256(model.hf_model.config.model_type.encode())
    for name, param in model.hf_model.state_dict().items():
        h.update(f"{name}:{tuple(param.shape)};".encode())
    baked = getattr(model.hf_model.config, "steerlab", None)
    source = baked.get("source") if isinstance(baked, dict) else None
    return {"name": model.name, "family": model.family, "n_layers": model.n_layers, "d_model": model.d_model,
            "shape_hash": h.hexdigest()[:16],
            "baked_from": source.get("shape_hash") if isinstance(source, dict) else None}
