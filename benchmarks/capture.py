"""Target 2: capture of ``resid_post`` against a plain forward pass with ``output_hidden_states=True``.

The baseline is the plain transformers way to get every layer's last-token state: tokenise,
pad (right), one forward pass of the bare decoder (``hf_model.model``: no LM head, which
``output_hidden_states`` does not need) per batch, take each row's last real token of every
hidden state. It uses the same length-sorted batches as ``capture`` so neither side gains from
less padding. A second comparison uses the full causal-LM forward, what most code calls.
"""

from __future__ import annotations

import torch

from timing import Comparison, paired, rounds
from workloads import capture_texts


def plain_hidden_states(model, texts: list[str], batch_size: int, head: bool = False):
    """A closure: every layer's last-token hidden state over ``texts`` with plain transformers."""
    tok = model.tokenizer
    ids = tok(texts)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    net = model.hf_model if head else model.hf_model.model
    n = model.n_layers

    def run():
        rows = tok(texts)["input_ids"]  # tokenising is part of the work, as in capture
        parts = []
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            width = max(len(rows[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, i in enumerate(chunk):
                input_ids[j, : len(rows[i])] = torch.tensor(rows[i])
                mask[j, : len(rows[i])] = 1
            input_ids, mask = input_ids.to(model.device), mask.to(model.device)
            with torch.inference_mode():
                out = net(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
            last = mask.sum(1) - 1
            index = torch.arange(len(chunk), device=model.device)
            parts.append(torch.stack([out.hidden_states[k + 1][index, last] for k in range(n)], 1).float().cpu())
        return torch.cat(parts)[torch.tensor(order).argsort()]

    return run


def run(model, runs: int = 5, n_texts: int = 256, batch_size: int = 16, causal_lm: bool = True,
        log=print) -> list[Comparison]:
    """All layers vs plain (the bare decoder, and with ``causal_lm`` the full LM too), and the first
    half of the layers vs all layers."""
    texts = capture_texts(n_texts)
    half = list(range(model.n_layers // 2))

    def capture_all(texts=texts):
        return model.capture(texts, sites="resid_post", positions="last", batch_size=batch_size, progress=False)

    def capture_half(texts=texts):
        return model.capture(texts, sites="resid_post", layers=half, positions="last", batch_size=batch_size,
                             progress=False)

    ours = capture_all().stack("resid_post")
    ref = plain_hidden_states(model, texts, batch_size)()
    # the last layer's hidden_states entry is after the final norm in transformers; resid_post is before it
    same = torch.allclose(ours[:, :-1], ref[:, :-1], atol=1e-4 if model.dtype == torch.float32 else 5e-2)
    note = f"{n_texts} texts, batch {batch_size}, last token; layers 0..{model.n_layers - 2} equal to plain: {same}"
    # one round runs all four, so the three ratios pair runs made close together
    fns = {"decoder": plain_hidden_states(model, texts, batch_size), "all": capture_all, "half": capture_half}
    pairs = [("capture/resid_post/all-layers vs plain decoder", "decoder", "all", 0.95),
             ("capture/resid_post/first-half vs all-layers", "all", "half", 1.6)]
    if causal_lm:
        fns["causal_lm"] = plain_hidden_states(model, texts, batch_size, head=True)
        pairs.insert(1, ("capture/resid_post/all-layers vs plain causal-LM", "causal_lm", "all", 0.95))
    # warm-up on one batch; then each round runs all of them, so every ratio pairs runs made close together
    warm = {"decoder": plain_hidden_states(model, texts[:batch_size], batch_size),
            "causal_lm": plain_hidden_states(model, texts[:batch_size], batch_size, head=True),
            "all": lambda: capture_all(texts[:batch_size]), "half": lambda: capture_half(texts[:batch_size])}
    times = rounds(fns, runs, warmup=lambda name: warm[name]())
    out = []
    for name, baseline, candidate, target in pairs:
        cmp = paired(name, times, baseline, candidate, work=n_texts, unit="text", target=target, note=note)
        log(cmp)
        out.append(cmp)
    return out
