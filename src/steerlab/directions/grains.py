"""GrAInS (Nguyen et al., 2025): steering directions from the tokens that integrated gradients blame.

For each contrastive pair (a preferred and a dispreferred text):

1. attribution: integrated gradients (zero baseline, ``steps`` points) of
   ``f = log p(last token of pos | its prefix) - log p(last token of neg | its prefix)`` with respect
   to the input embeddings of both texts at once; a token's score is its attribution summed over
   the embedding dimension;
2. masked re-runs: the ``k`` most positive tokens of each text are replaced by a mask token
   (run "pos"), and separately the ``k`` most negative (run "neg"); ``δ = h_l(x) - h_l(x masked)``
   at the last token, block output of layer ``l``;
3. ``u_pos = PC1(δ of run pos)``, ``u_neg = PC1(δ of run neg)``, each signed to agree with its
   runs' mean ``δ`` (the authors' code leaves the sign of the PCA free); ``v = u_pos - u_neg``
   (``mode="both"``), or ``u_pos`` / ``-u_neg`` alone.

The recipe (``sl.recipes.grains``) adds ``10 * alpha * v`` at every position and rescales each token
to its old norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import DataError, SteerlabError
from ..interventions.positions import StepContext
from ..models import Model
from ..models.forward import Layout, steered
from ..sites import Site, normalize_layers
from .direction import Direction

MODES = ("both", "pos", "neg")


def _ids(model: Model, text: str) -> list[int]:
    ids = model.tokenizer(text)["input_ids"]
    if len(ids) < 2:
        raise DataError(f"GrAInS needs texts of at least two tokens (a prefix and a last token), got {text!r}")
    return list(ids)


def integrated_gradients(model: Model, pos_ids: Sequence[int], neg_ids: Sequence[int],
                         steps: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token attributions ``([Tp], [Tn])`` of ``log p(pos last) - log p(neg last)`` (zero baseline,
    right Riemann sum over ``steps`` points ``k/steps``), summed over the embedding dimension."""
    hf = model.hf_model
    emb = hf.get_input_embeddings()
    dev = next(hf.parameters()).device
    seqs = [torch.tensor([list(pos_ids)], device=dev), torch.tensor([list(neg_ids)], device=dev)]
    with torch.no_grad():
        bases = [emb(s).float() for s in seqs]
    grads = [torch.zeros_like(b) for b in bases]
    dtype = next(hf.parameters()).dtype
    for k in range(1, steps + 1):
        scaled = [(b * (k / steps)).requires_grad_(True) for b in bases]
        total = torch.zeros((), device=dev)
        for sign, s, e in zip((1.0, -1.0), seqs, scaled):
            logits = hf(inputs_embeds=e.to(dtype), use_cache=False).logits[0, -2].float()
            total = total + sign * torch.log_softmax(logits, -1)[s[0, -1]]
        g = torch.autograd.grad(total, scaled)
        for acc, gi in zip(grads, g):
            acc += gi
    attr = [(b * (gr / steps)).sum(-1)[0].detach().cpu() for b, gr in zip(bases, grads)]
    return attr[0], attr[1]


def top_tokens(scores: torch.Tensor, k: int, sign: int) -> list[int]:
    """Positions of the ``k`` most positive (``sign=1``) or most negative (``-1``) scores, the last
    token excluded (it is what is predicted, so it has no attribution)."""
    usable = scores[:-1] * sign
    k = min(k, usable.numel())
    return sorted(int(i) for i in usable.topk(k).indices)


def last_states(model: Model, seqs: Sequence[Sequence[int]], layers: Sequence[int],
                site: str = "resid_post") -> torch.Tensor:
    """``[n, L, d]``: the last token's activation at ``layers`` for each token-id sequence (one at a time,
    read through the steered-forward path with no recipe)."""
    out = []
    dev = next(model.hf_model.parameters()).device
    for seq in seqs:
        store: dict[int, torch.Tensor] = {}
        reads = {Site(site, layer): [_reader(store, layer)] for layer in layers}
        ids = torch.tensor([list(seq)], device=dev)
        layout = Layout(torch.zeros(1, dtype=torch.long, device=dev), torch.tensor([len(seq)], device=dev))
        with torch.inference_mode(), steered(model, None, layout, "single", reads=reads):
            model.hf_model(input_ids=ids, use_cache=False)
        out.append(torch.stack([store[layer] for layer in layers]))
    return torch.stack(out)


def _reader(store: dict[int, torch.Tensor], layer: int) -> Callable[[torch.Tensor, StepContext], torch.Tensor]:
    def read(x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        store[layer] = x[0, -1].detach().float().cpu()
        return x
    return read


def pc1(deltas: torch.Tensor) -> torch.Tensor:
    """First principal component of ``deltas`` ``[n, d]`` (centred), unit, signed to agree with their mean."""
    centred = deltas - deltas.mean(0)
    _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
    u = vh[0]
    if float(deltas.double().mean(0) @ u) < 0:
        u = -u
    return u.float()


def mask_id(model: Model, token: int | None = None) -> int:
    """The replacement token: ``token``, else the tokenizer's pad, then unk, then eos token."""
    if token is not None:
        return int(token)
    tok = model.tokenizer
    for cand in (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id):
        if cand is not None:
            return int(cand)
    raise SteerlabError("the tokenizer has no pad, unk or eos token to mask with; pass mask_token=<id>")


def grains(model: Model, positive: Sequence[str], negative: Sequence[str], layers: object = None, k: int = 10,
           steps: int = 20, mode: str = "both", mask_token: int | None = None, site: str = "resid_post") -> Direction:
    """The GrAInS direction (module docstring) at each of ``layers``, from paired texts (preferred, dispreferred)."""
    if mode not in MODES:
        raise SteerlabError(f"mode={mode!r} is not allowed; use one of {', '.join(MODES)}")
    if len(positive) != len(negative) or not positive:
        raise DataError(f"GrAInS needs as many preferred as dispreferred texts (pairs), got {len(positive)} and "
                        f"{len(negative)}")
    if k < 1 or steps < 1:
        raise SteerlabError(f"k and steps must be at least 1, got k={k}, steps={steps}")
    chosen = normalize_layers(layers, model.n_layers)
    fill = mask_id(model, mask_token)
    originals: list[list[int]] = []
    masked: dict[int, list[list[int]]] = {1: [], -1: []}
    for p, n in zip(positive, negative):
        pid, nid = _ids(model, p), _ids(model, n)
        attr_p, attr_n = integrated_gradients(model, pid, nid, steps)
        for seq, attr in ((pid, attr_p), (nid, attr_n)):
            originals.append(seq)
            for sign in (1, -1):
                drop = set(top_tokens(attr, k, sign))
                masked[sign].append([fill if i in drop else t for i, t in enumerate(seq)])
    clean = last_states(model, originals, chosen, site)
    u = {sign: clean - last_states(model, masked[sign], chosen, site) for sign in (1, -1)}   # [n, L, d]
    vectors = {}
    for j, layer in enumerate(chosen):
        u_pos, u_neg = pc1(u[1][:, j]), pc1(u[-1][:, j])
        vectors[layer] = u_pos - u_neg if mode == "both" else (u_pos if mode == "pos" else -u_neg)
    meta = {"method": "grains", "site": site, "k": k, "steps": steps, "mode": mode, "mask_token": fill,
            "n_pairs": len(positive), "model": model.fingerprint}
    return Direction(vectors, meta=meta)
