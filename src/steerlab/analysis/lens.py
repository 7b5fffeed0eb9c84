"""Logit lens (nostalgebraist 2020) and the commitment layer: where the answer is decided.

The logit lens reads each layer's residual stream (``resid_post``) through the model's own final
norm and unembedding, ``p_l = softmax(W_U · LN_f(h_l))``, to see what the model "would say" if it
stopped at layer ``l``. The last layer's readout is the model's own output distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..errors import SteerlabError
from ..interventions import Patch
from ..models.tokens import check_texts
from ..sites import normalize_layers
from ._common import (
    check_same_length,
    pairs_of,
    parse_positions,
    per_text,
    readout,
    single_token,
    token_ids,
    token_labels,
)
from .patching import patched_logits

COLUMNS = ["text", "layer", "position", "token", "top1", "top1_prob", "topk", "target", "target_rank",
           "target_prob", "kl_to_final"]


def logit_lens(model, texts, target=None, positions="last", layers=None, k: int = 5, chat: bool = False,
               batch_size: int = 8, progress: bool | None = None) -> pd.DataFrame:
    """Decode every layer's ``resid_post`` at the chosen tokens through the final norm and unembedding.

    Returns one row per (text, layer, position): the input ``token`` there, the lens's ``top1``
    token and its probability, the ``topk`` tokens, the ``target``'s rank (1 = top) and probability
    when ``target`` is given (one single-token string, or one per text), and ``kl_to_final``,
    KL(p_final ‖ p_layer) in nats. ``positions``: ``"last"``, ``"all"``, an int or a list of ints.
    """
    texts = check_texts(texts)
    if not isinstance(k, int) or k < 1:
        raise SteerlabError(f"k must be a positive integer, got {k!r}")
    targets = per_text(target, len(texts), "target")
    target_ids = [None if t is None else single_token(model.tokenizer, t, "target") for t in targets]
    wanted = normalize_layers(layers, model.n_layers)
    last = model.n_layers - 1
    read = sorted(set(wanted) | {last})
    acts = model.capture(texts, sites="resid_post", layers=read, positions="all", chat=chat,
                         batch_size=batch_size, progress=progress)
    ids = token_ids(model, texts, chat)
    rows = []
    for i, text_ids in enumerate(ids):
        pos = parse_positions(positions, len(text_ids))
        labels = token_labels(model.tokenizer, [text_ids[p] for p in pos])
        final = readout(model, acts[f"layers.{last}.resid_post"][i][pos]).log_softmax(-1)
        for layer in wanted:
            logp = final if layer == last else readout(model, acts[f"layers.{layer}.resid_post"][i][pos]).log_softmax(-1)
            rows.extend(_rows(model.tokenizer, i, layer, pos, labels, logp, final, k, targets[i], target_ids[i]))
    return pd.DataFrame(rows, columns=COLUMNS)


def _rows(tokenizer, text: int, layer: int, pos: list[int], labels: list[str], logp: torch.Tensor,
          final: torch.Tensor, k: int, target, target_id) -> list[dict]:
    probs = logp.exp()
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    kl = (final.exp() * (final - logp)).sum(-1)
    out = []
    for j, p in enumerate(pos):
        row = {"text": text, "layer": layer, "position": p, "token": labels[j],
               "top1": tokenizer.decode([int(top.indices[j, 0])]), "top1_prob": float(top.values[j, 0]),
               "topk": tuple(tokenizer.decode([int(t)]) for t in top.indices[j]), "target": target,
               "target_rank": None, "target_prob": None, "kl_to_final": max(float(kl[j]), 0.0)}
        if target_id is not None:
            row["target_rank"] = int((logp[j] > logp[j, target_id]).sum()) + 1
            row["target_prob"] = float(probs[j, target_id])
        out.append(row)
    return out


@dataclass
class Commitment:
    """Where the model commits to an answer.

    ``layer``: the earliest layer from which the target stays top-1 under the logit lens (None if
    it is not top-1 at the last layer). ``patch_layer``: with a contrast prompt, the earliest layer
    from which patching the contrast run's states (at ``positions``) no longer restores the
    contrast's answer (restored fraction below ``threshold`` there and at every later layer).
    ``table``: one row per layer with ``target_rank``, ``target_prob`` and, with a contrast, ``restored``.
    """

    layer: int | None
    patch_layer: int | None
    table: pd.DataFrame


def commitment_layer(model, text: str, target: str, contrast: str | None = None, contrast_target: str | None = None,
                     positions=None, threshold: float = 0.5, chat: bool = False,
                     batch_size: int = 16, progress: bool | None = None) -> Commitment:
    """The commitment layer of ``text`` for ``target`` (logit lens), and with ``contrast`` the patching test.

    The patching test (a reconstruction of the published test) runs ``text``, writes the contrast run's
    ``resid_post`` at layer ``l`` over ``positions`` (default: every position but the last, i.e. the
    context the answer is read from) and measures how much of the contrast's answer comes back:
    ``restored = (m_patched − m_text) / (m_contrast − m_text)`` with ``m = logit(contrast_target) − logit(target)``.
    Once the answer has been moved into the last position, patching the context no longer restores it.
    """
    if not isinstance(text, str):
        raise SteerlabError(f"text must be one string, got {type(text).__name__}")
    lens = logit_lens(model, [text], target=target, positions="last", chat=chat, progress=progress)
    table = lens[["layer", "target_rank", "target_prob", "top1"]].reset_index(drop=True)
    layer = lens_commitment(lens)
    patch_layer = None
    if contrast is not None:
        if contrast_target is None:
            raise SteerlabError("contrast_target is required with contrast (the contrast prompt's answer, e.g. ' Rome')")
        table["restored"] = _restoration(model, text, target, contrast, contrast_target, positions, chat,
                                         batch_size, progress)
        patch_layer = _earliest_stable((table["restored"] < threshold).tolist())
    return Commitment(layer, patch_layer, table)


def lens_commitment(table: pd.DataFrame, text: int = 0) -> int | None:
    """From a ``logit_lens`` table: the earliest layer from which the target stays top-1 at the
    text's last listed position (None when it is not top-1 at the deepest layer listed)."""
    sub = table[table["text"] == text]
    if sub.empty or sub["target_rank"].isna().all():
        raise SteerlabError(f"text {text} has no target ranks in this table; run logit_lens with target=...")
    last = sub[sub["position"] == sub["position"].max()].sort_values("layer")
    return _earliest_stable(last["target_rank"].eq(1).tolist(), last["layer"].tolist())


def _earliest_stable(flags: list[bool], labels: list[int] | None = None) -> int | None:
    """The first index (or its label) from which every flag is True (None when the last one is False)."""
    first = None
    for i, flag in enumerate(flags):
        if not flag:
            first = None
        elif first is None:
            first = i
    return first if first is None or labels is None else labels[first]


def _restoration(model, text, target, contrast, contrast_target, positions, chat, batch_size, progress) -> list[float]:
    a, b = pairs_of(contrast, text, ("contrast", "text"))
    ids_contrast, _ = check_same_length(model, a, b, chat, ("contrast", "text"))
    length = len(ids_contrast[0])
    pos = list(range(length - 1)) if positions is None else parse_positions(positions, length)
    if not pos:
        raise SteerlabError("the patching test needs a text of at least two tokens (it patches the context)")
    want = [single_token(model.tokenizer, contrast_target, "contrast_target"),
            single_token(model.tokenizer, target, "target")]
    acts = model.capture(a, sites="resid_post", positions="all", chat=chat, progress=False)
    recipes = [Patch(acts[f"layers.{l}.resid_post"][0][pos], layers=[l], positions=pos)
               for l in range(model.n_layers)]
    base = model.logits(b + a, chat=chat)
    m_text, m_contrast = [float(r[want[0]] - r[want[1]]) for r in base]
    logits = patched_logits(model, b * len(recipes), recipes, chat, batch_size, progress)
    span = m_contrast - m_text
    if abs(span) < 1e-6:
        raise SteerlabError(f"text and contrast give the same logit difference for {contrast_target!r} vs {target!r}; "
                            "pick a contrast prompt whose answer differs")
    return [float((r[want[0]] - r[want[1]] - m_text) / span) for r in logits]
