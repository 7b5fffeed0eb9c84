"""Capture activations at sites over many texts, batched, in memory or streamed to disk.

Texts are sorted by length so batches carry little padding (right padding: a text's tokens are
computed exactly as if it were alone), and the forward pass stops right after the deepest
requested site.
"""

from __future__ import annotations

import torch

from .. import io
from ..activations import Activations, ShardWriter, texts_hash
from ..activations.memory import check_positions
from ..errors import SteerlabError
from ..interventions.positions import StepContext, reaches
from ..progress import bar
from ..sites import Site, expand_sites
from .forward import Layout, recipes_for, steered
from .hooks import StopForward
from .tokens import Batch, check_context, check_texts, encode, pad, pad_id


def check_inputs(model, texts: list[str], ids: list[list[int]], positions: str | int | list[int]) -> None:
    """Before any forward pass: every text fits the context and every explicit position is a token of
    every text (a capture returns one row per text and index, so it cannot skip a short text)."""
    check_context(model, ids, texts)
    if isinstance(positions, str):
        return
    shortest = min(range(len(ids)), key=lambda i: len(ids[i]))
    n = len(ids[shortest])
    wanted = [positions] if isinstance(positions, int) else positions
    outside = [p for p in wanted if not reaches(p, n)]
    if outside:
        raise SteerlabError(f"positions={positions!r}: index {outside[0]} lies outside texts[{shortest}] "
                            f"({texts[shortest][:40]!r}), which has {n} tokens; a capture needs an index every "
                            f"text has, from {-n} to {n - 1}")


def _token_index(batch: Batch, positions: int | list[int]) -> torch.Tensor:
    """Padded index ``[B]`` (an int) or ``[B, k]`` (a list) of explicit positions in each row (``check_inputs``
    has made sure every row has them)."""
    wanted = torch.tensor([positions] if isinstance(positions, int) else positions, device=batch.end.device)
    index = torch.where(wanted[None] >= 0, batch.start[:, None] + wanted[None], batch.end[:, None] + wanted[None])
    return index[:, 0] if isinstance(positions, int) else index


def _reader(name: str, store: dict, batch: Batch, positions: str | int | list[int]):
    """An op that records the site's value (after any steering at that site) and leaves it unchanged."""

    rows, last = torch.arange(len(batch.end), device=batch.end.device), batch.end - 1
    index = None if isinstance(positions, str) else _token_index(batch, positions)

    def read(x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        value: torch.Tensor | list[torch.Tensor]
        if index is not None:
            value = x[rows[:, None], index] if index.dim() == 2 else x[rows, index]
        elif positions == "last":
            value = x[rows, last]
        elif positions == "mean":
            mask = batch.attention_mask.to(x.dtype).view(*batch.attention_mask.shape, *([1] * (x.dim() - 2)))
            value = (x * mask).sum(1) / batch.lengths.to(x.dtype).view(-1, *([1] * (x.dim() - 2)))
        else:
            value = [x[b, int(s) : int(e)] for b, (s, e) in enumerate(zip(batch.start, batch.end))]
        store[name] = value
        return x

    return read


def _to_cpu(value):
    if isinstance(value, list):
        return [v.detach().to("cpu", torch.float32).clone() for v in value]
    return value.detach().to("cpu", torch.float32)


def plan_batches(ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """The rows of each batch: texts sorted longest first, cut into ``batch_size`` pieces (little padding)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def shard_tensors(values: dict, positions: str) -> dict[str, torch.Tensor]:
    """One batch's values as the tensors of its shard (ragged ``"all"`` values concatenated, with lengths)."""
    tensors = {}
    for name, value in values.items():
        if positions == "all":
            tensors[name] = torch.cat(value)
            tensors[f"{name}.__lengths__"] = torch.tensor([len(v) for v in value])
        else:
            tensors[name] = value
    return tensors


def resume_key(model, texts: list[str], chat: bool, batch_size: int, recipes: list) -> dict:
    """What a streamed capture must share with the run it resumes: everything that changes the numbers."""
    from .load import weights_fingerprint

    digests = {id(r): r.digest() for r in recipes if r is not None}  # a shared recipe is hashed once
    steering = [digests[id(r)] if r is not None else None for r in recipes]
    return {"texts": texts_hash(texts), "model": model.fingerprint.get("shape_hash"),
            "weights": weights_fingerprint(model.hf_model), "dtype": str(model.dtype), "device": model.device.type,
            "attention": getattr(model.hf_model.config, "_attn_implementation", None), "chat": chat,
            "batch_size": batch_size,
            "steering": None if all(s is None for s in steering) else io.short_hash([str(steering).encode()])}


def capture(model, texts, sites="resid_post", layers=None, positions="last", chat: bool = False,
            batch_size: int = 16, out=None, steering=None, progress: bool | None = None,
            overwrite: bool = False) -> Activations:
    """See ``Model.capture``."""
    texts = check_texts(texts)
    positions = check_positions(positions)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SteerlabError(f"batch_size must be a positive integer, got {batch_size!r}")
    bound = model.bound
    site_list = expand_sites(sites, layers, bound.n_layers)
    names = [s.name for s in site_list]
    ids = encode(model.tokenizer, texts, chat)
    check_inputs(model, texts, ids, positions)
    recipes = recipes_for(model, steering, len(texts), [len(i) for i in ids])
    deepest = max(site_list, key=lambda s: s.depth(bound.n_layers))
    stop_after = None if deepest.kind == "logits" else deepest
    batches = plan_batches(ids, batch_size)
    writer = None
    if out is not None:
        writer = ShardWriter(out, sites=names, positions=positions, n_texts=len(texts), overwrite=overwrite,
                             key=resume_key(model, texts, chat, batch_size, recipes), meta={"model": model.name},
                             total=len(batches))
    done = writer.done if writer else set()
    collected: dict[str, list] = {name: [] for name in names}
    rows_seen: list[int] = []
    with bar("capture", len(batches), progress) as advance:
        for number, rows in enumerate(batches):
            if number in done:
                advance()
                continue
            batch = pad([ids[i] for i in rows], pad_id(model.tokenizer), "right", model.device)
            store: dict = {}
            reads: dict[Site, list] = {site: [_reader(site.name, store, batch, positions)] for site in site_list}
            layout = Layout(start=batch.start, prompt_end=batch.end)
            row_recipes = [recipes[i] for i in rows] if steering is not None else None
            with torch.inference_mode(), steered(model, row_recipes, layout, "single", reads=reads,
                                                 stop_after=stop_after):
                try:
                    model.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
                except StopForward:
                    pass
            values = {name: _to_cpu(store[name]) for name in names}
            if writer is not None:
                writer.write(number, rows, shard_tensors(values, positions))
            else:
                for name, value in values.items():
                    collected[name].append(value)
                rows_seen.extend(rows)
            advance()
    meta = {"model": model.name, "texts": texts_hash(texts), "chat": chat}
    if writer is not None:
        return writer.finish()
    inverse = torch.tensor(rows_seen).argsort()
    data: dict[str, torch.Tensor | list[torch.Tensor]] = {}
    for name, parts in collected.items():
        if positions == "all":
            flat = [t for part in parts for t in part]
            data[name] = [flat[i] for i in inverse.tolist()]
        else:
            data[name] = torch.cat(parts)[inverse]
    return Activations(data, positions, meta)
