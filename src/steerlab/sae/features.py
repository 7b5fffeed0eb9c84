"""Reading an SAE's features: encode captured activations, the texts that fire a feature most, and features
ranked by how differently they fire on two sets of texts (e.g. positive vs negative sentiment)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import SteerlabError
from ..progress import bar
from .model import SAE

if TYPE_CHECKING:
    from ..activations import Activations
    from ..models.model import Model


def encode_activations(sae: SAE, acts: Activations, site: str | None = None) -> torch.Tensor | list[torch.Tensor]:
    """Feature activations of captured activations at the SAE's site: ``[n, d_sae]`` for ``"last"``/``"mean"``
    captures, a list of ``[n_tokens_i, d_sae]`` for ``"all"``."""
    name = site or sae.site
    if name is None or name not in acts.data:
        raise SteerlabError(f"site {name!r} was not captured; captured: {', '.join(acts.data)}")
    value = acts[name]
    with torch.no_grad():
        if isinstance(value, list):
            return [sae.encode(v.float()) for v in value]
        return sae.encode(value.float())


def _capture_tokens(model: Model, sae: SAE, texts: list[str], max_tokens: int) -> list[torch.Tensor]:
    tok = model.tokenizer
    cut: list[str] = [str(tok.decode(tok(t, add_special_tokens=False)["input_ids"][:max_tokens])) if max_tokens else t
                      for t in texts]
    acts = model.capture(cut, sites=str(sae.site), positions="all", progress=False)
    value = acts[str(sae.site)]
    assert isinstance(value, list)
    return value


def top_texts(model: Model, sae: SAE, texts: Sequence[str], features: Iterable[int] | None = None, k: int = 5,
              batch_size: int = 16, max_tokens: int = 128, progress: bool | None = None) -> dict[int, list[dict[str, Any]]]:
    """For each feature (default all), the ``k`` texts where it fires most: ``{"text", "activation", "token"}``
    (the token at the peak), highest first. Each text's first token (the attention sink) is left out."""
    if sae.site is None:
        raise SteerlabError("this SAE records no site; it cannot read a model")
    texts = list(texts)
    if not texts:
        raise SteerlabError("top_texts needs at least one text")
    chosen = list(range(sae.d_sae)) if features is None else [int(f) for f in features]
    bad = [f for f in chosen if not 0 <= f < sae.d_sae]
    if bad:
        raise SteerlabError(f"features {bad} are out of range; this SAE has {sae.d_sae}")
    index = torch.tensor(chosen, dtype=torch.long)
    peak = torch.full((len(texts), len(chosen)), -1.0)
    where = torch.zeros((len(texts), len(chosen)), dtype=torch.long)
    with bar("top texts", -(-len(texts) // batch_size), progress) as advance:
        for begin in range(0, len(texts), batch_size):
            batch = texts[begin:begin + batch_size]
            for i, x in enumerate(_capture_tokens(model, sae, batch, max_tokens)):
                with torch.no_grad():
                    f = sae.encode(x[1:].float())[:, index] if x.shape[0] > 1 else torch.zeros(1, len(chosen))
                value, pos = f.max(0)
                peak[begin + i], where[begin + i] = value, pos + 1
            advance()
    out: dict[int, list[dict[str, Any]]] = {}
    tok = model.tokenizer
    for j, feature in enumerate(chosen):
        order = peak[:, j].argsort(descending=True)[:k]
        rows = []
        for t in order.tolist():
            if float(peak[t, j]) <= 0:
                break
            ids = tok(texts[t], add_special_tokens=False)["input_ids"]
            p = int(where[t, j])
            rows.append({"text": texts[t], "activation": float(peak[t, j]),
                         "token": tok.decode(ids[p:p + 1]) if p < len(ids) else ""})
        out[feature] = rows
    return out


def contrast_features(model: Model, sae: SAE, positive: Sequence[str], negative: Sequence[str],
                      batch_size: int = 16) -> list[tuple[int, float]]:
    """Features ranked by mean activation (over each text's tokens after the first) on ``positive`` minus on
    ``negative``: ``[(feature, difference)]``, most positive first."""
    def mean_acts(texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            raise SteerlabError("contrast_features needs texts on both sides")
        rows = []
        for begin in range(0, len(texts), batch_size):
            for x in _capture_tokens(model, sae, list(texts[begin:begin + batch_size]), 0):
                with torch.no_grad():
                    rows.append(sae.encode(x[1:].float()).mean(0) if x.shape[0] > 1 else torch.zeros(sae.d_sae))
        return torch.stack(rows).mean(0)

    diff = mean_acts(positive) - mean_acts(negative)
    order = diff.argsort(descending=True)
    return [(int(i), float(diff[i])) for i in order]
