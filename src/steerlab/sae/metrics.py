"""How good an SAE is: reconstruction (MSE, explained variance), sparsity (L0, dead features) on stored
activations, and the next-token loss it costs when its reconstruction replaces the activation.

The loss is measured through the one steered-forward path: ``SAEEdit(sae, error=False)`` spliced at the
SAE's site on every token but each text's first (the attention sink the SAE was not trained on), compared
with the clean model and with the site zero-ablated on the same tokens (``recovered`` is the usual
"fraction of loss recovered", ``(zero - sae) / (zero - clean)``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..activations import DiskActivations
from ..errors import SteerlabError
from ..interventions import Scale, Steering
from .edit import SAEEdit
from .model import SAE
from .train import site_rows, without_outliers

if TYPE_CHECKING:
    from ..models.model import Model


def reconstruction_metrics(sae: SAE, store: DiskActivations | str | os.PathLike[str], site: str | None = None,
                           chunk_rows: int = 8192, skip_first: bool = True,
                           outlier_ratio: float | None = 10.0) -> dict[str, Any]:
    """MSE (summed over the width, mean over rows), explained variance, mean L0, the fraction of features that
    never fire, and the row count, over a store read ``chunk_rows`` at a time (first tokens and outliers left
    out as in training)."""
    acts = store if isinstance(store, DiskActivations) else DiskActivations(store)
    site = site or sae.site
    if site is None or site not in acts.manifest["sites"]:
        raise SteerlabError(f"site {site!r} is not in the store; it holds {', '.join(acts.manifest['sites'])}")
    n, sse, l0 = 0, 0.0, 0.0
    sx = torch.zeros(sae.d_in, dtype=torch.float64)
    sxx = 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    with torch.no_grad():
        for shard in acts.shards():
            x_all = site_rows(shard, site, skip_first)
            for b in range(0, x_all.shape[0], chunk_rows):
                x = x_all[b:b + chunk_rows].float()
                if outlier_ratio is not None:
                    x = without_outliers(x, outlier_ratio)
                f = sae.encode(x)
                sse += float((x - sae.decode(f)).double().pow(2).sum())
                sx += x.double().sum(0)
                sxx += float(x.double().pow(2).sum())
                l0 += float((f > 0).sum())
                fired |= (f > 0).any(0)
                n += x.shape[0]
    if n == 0:
        raise SteerlabError(f"the store at {acts.folder} holds no rows at {site}")
    sst = sxx - float(sx.pow(2).sum()) / n
    return {"rows": n, "mse": sse / n, "explained_variance": 1 - sse / max(sst, 1e-12), "l0": l0 / n,
            "dead_fraction": float((~fired).float().mean()), "mean_sq_norm": sxx / n}


def loss_increase(model: Model, sae: SAE, texts: Sequence[str], batch_size: int = 4, max_tokens: int = 128,
                  progress: bool | None = None) -> dict[str, Any]:
    """Mean next-token cross-entropy (nats) of ``texts`` clean, with the SAE's reconstruction spliced in, and
    with the site zero-ablated; ``increase`` = sae - clean, ``recovered`` = (zero - sae) / (zero - clean)."""
    from ..models.forward import Layout, recipes_for, steered
    from ..models.tokens import check_texts, encode, pad, pad_id
    from ..progress import bar

    texts = check_texts(texts)
    if sae.layer is None:
        raise SteerlabError("this SAE records no site; it cannot be spliced into the model")
    ids = [row[:max_tokens] for row in encode(model.tokenizer, texts, False)]
    positions = list(range(1, max(len(r) for r in ids)))
    if not positions:
        raise SteerlabError("the texts are one token long; there is nothing to predict after the first token")
    kinds = {"clean": None,
             "sae": Steering([SAEEdit(sae, error=False, positions=positions)]),
             "zero": Steering([Scale(0.0, layers=[sae.layer], site=sae.site_kind, positions=positions)])}
    totals = {k: 0.0 for k in kinds}
    count = 0
    with bar("SAE loss", len(kinds) * -(-len(ids) // batch_size), progress) as advance:
        for begin in range(0, len(ids), batch_size):
            rows = ids[begin:begin + batch_size]
            batch = pad(rows, pad_id(model.tokenizer), "left", model.device)
            # predictions made at positions >= 1 (the spliced ones) of each row's real tokens
            target = batch.input_ids[:, 1:]
            col = torch.arange(batch.input_ids.shape[1] - 1, device=model.device)[None]
            keep = (col >= batch.start[:, None] + 1) & (col + 1 < batch.end[:, None])
            for name, recipe in kinds.items():
                recipes = recipes_for(model, recipe, len(rows))
                with torch.inference_mode(), steered(model, recipes, Layout(batch.start, batch.end), "single"):
                    logits = model.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                            position_ids=batch.position_ids(), use_cache=False).logits
                nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), target,
                                                        reduction="none")
                totals[name] += float(nll[keep].sum())
                advance()
            count += int(keep.sum())
    if count == 0:
        raise SteerlabError("the texts leave no token to score; give texts of at least three tokens")
    out: dict[str, Any] = {k: v / count for k, v in totals.items()}
    out["increase"] = out["sae"] - out["clean"]
    gap = out["zero"] - out["clean"]
    out["recovered"] = (out["zero"] - out["sae"]) / gap if gap > 0 else None
    out["tokens"] = count
    return out
