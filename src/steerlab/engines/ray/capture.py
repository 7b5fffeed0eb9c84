"""Capture over Ray Data: a pool of model actors fills the same resumable sharded store as
``model.capture(out=...)``, batch for batch, so the result equals a local run.

The driver tokenises once to cut the texts into the local run's batches (longest first), skips the
batches already in the store, and streams the rest through ``map_batches`` on an actor pool; each
actor loads the model once and captures whole batches; the driver alone writes shards and the
manifest, so a crash leaves a store that a second call resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from ...activations import ShardWriter
from ...activations.store import DiskActivations
from ...errors import SteerlabError
from ...interventions.steering import Steering
from ...models.capture import check_inputs, plan_batches, resume_key, shard_tensors
from ...models.forward import recipes_for
from ...models.tokens import check_texts, encode
from ...sites import expand_sites
from .. import wire

Loader = Callable[[], Any]


def as_loader(load: Loader | str) -> Loader:
    """A picklable zero-argument model loader: a model name becomes ``partial(steerlab.load, name)``."""
    if isinstance(load, str):
        from functools import partial

        from ... import load as sl_load

        return partial(sl_load, load)
    if not callable(load):
        raise SteerlabError(f"load must be a model name or a callable returning a Model, got {type(load).__name__}")
    return load


class _Capturer:
    """A Ray actor: one model, capturing whole batches handed to it as rows of texts."""

    def __init__(self, load: Loader, names: list[str], positions: str, chat: bool, steering: dict | None,
                 threads: int | None):
        if threads:
            torch.set_num_threads(threads)
        self.model = load()
        self.names, self.positions, self.chat = names, positions, chat
        self.steering = wire.from_json(steering) if steering is not None else None

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, list] = {"batch": [], "payload": []}
        for number, texts_json in zip(rows["batch"], rows["texts"]):
            texts = json.loads(texts_json)
            acts = self.model.capture(texts, sites=self.names, positions=self.positions, chat=self.chat,
                                      batch_size=len(texts), steering=self.steering, progress=False)
            values = {name: acts[name] for name in self.names}
            out["batch"].append(int(number))
            out["payload"].append(save_bytes({k: v.contiguous() for k, v in shard_tensors(values, self.positions).items()}))
        return out


def capture(load: Loader | str, texts: list[str], out: str | os.PathLike[str], sites: str | list[str] = "resid_post",
            layers: Any = None, positions: str = "last", chat: bool = False, batch_size: int = 16,
            steering: Steering | None = None, actors: int = 2, num_cpus: float = 1.0,
            threads: int | None = None) -> DiskActivations:
    """Capture ``texts`` at ``sites`` with a pool of ``actors`` Ray actors into the store at ``out``.

    ``load``: a model name (``"smollm2"``, a folder) or a picklable zero-argument callable returning a
    ``Model`` (each actor calls it once; the driver calls it once to tokenise and key the store).
    ``num_cpus`` is what each actor reserves (keep ``actors * num_cpus`` below the cluster's CPUs, or
    Ray Data's read tasks starve); ``threads`` sets each actor's torch threads. Connect to a cluster
    with ``ray.init(address=...)`` first; otherwise a local one is started.
    """
    import ray

    load = as_loader(load)
    if not isinstance(actors, int) or actors < 1:
        raise SteerlabError(f"actors must be a positive integer, got {actors!r}")
    texts = check_texts(texts)
    model = load()
    names = [s.name for s in expand_sites(sites, layers, model.bound.n_layers)]
    ids = encode(model.tokenizer, texts, chat)
    check_inputs(model, texts, ids, positions)  # before any actor starts
    batches = plan_batches(ids, batch_size)
    recipes = recipes_for(model, steering, len(texts), [len(i) for i in ids])  # checks the recipe against the model
    writer = ShardWriter(out, sites=names, positions=positions, n_texts=len(texts),
                         key=resume_key(model, texts, chat, batch_size, recipes), meta={"model": model.name},
                         total=len(batches))
    del model
    pending = [n for n in range(len(batches)) if n not in writer.done]
    if pending:
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        items = [{"batch": n, "texts": json.dumps([texts[i] for i in batches[n]])} for n in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _Capturer, batch_size=1, concurrency=actors, num_cpus=num_cpus,
            fn_constructor_kwargs={"load": load, "names": names, "positions": positions, "chat": chat,
                                   "steering": wire.to_json(steering) if steering is not None else None,
                                   "threads": threads})
        for row in ds.iter_rows():
            number = int(row["batch"])
            writer.write(number, batches[number], load_bytes(bytes(row["payload"])))
    return writer.finish()
