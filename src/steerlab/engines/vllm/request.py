"""What a request asks of the plugin, as carried in ``SamplingParams.extra_args["steerlab"]``.

``{"steering": <recipe JSON from wire.to_json> | "<registered name>" | [several, applied in order],
"read": {"id": "...", "probes": {name: {"layer", "vector", "bias"}}, "means": [layers]}}``. Both
parts are optional. The same dict travels through vLLM's OpenAI server as ``vllm_xargs``' value
``steerlab`` (a JSON string there, since ``vllm_xargs`` only holds flat values).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import DataError, SteerlabError
from ...interventions.conditional import Conditional
from ...interventions.steering import Steering
from .. import wire

KEY = "steerlab"
#: sites the plugin can reach on every supported family (the decoder layer's input and output)
SITES = ("resid_pre", "resid_post")
#: where registered recipes are looked up by name: ``name=path`` pairs separated by ``os.pathsep``
REGISTRY_ENV = "STEERLAB_VLLM_RECIPES"


@dataclass
class Probe:
    """A linear read-out at one layer's ``resid_post``: ``score = x · vector + bias`` per token."""

    layer: int
    vector: torch.Tensor
    bias: float = 0.0


@dataclass
class Reads:
    """A request's read-outs: per-token ``probes`` scores, per-layer running ``means`` (prompt and
    generated tokens apart) and the ``last`` prompt token's state per layer, returned under ``id``."""

    id: str
    probes: dict[str, Probe] = field(default_factory=dict)
    means: list[int] = field(default_factory=list)
    last: list[int] = field(default_factory=list)


@dataclass
class Ask:
    """One request's decoded ask: its recipe (or None), the recipe's fingerprint, and its read-outs."""

    steering: Steering | None
    fingerprint: str | None
    reads: Reads | None


def registered() -> dict[str, str]:
    """Recipes registered for the engine's processes: ``STEERLAB_VLLM_RECIPES="happy=/r/happy.steer:..."``."""
    out = {}
    for part in filter(None, os.environ.get(REGISTRY_ENV, "").split(os.pathsep)):
        name, sep, path = part.partition("=")
        if not sep:
            raise SteerlabError(f"{REGISTRY_ENV} entries must be name=path, got {part!r}")
        out[name] = path
    return out


def _one_recipe(item: Any) -> tuple[Steering, str]:
    if isinstance(item, str):
        paths = registered()
        if item not in paths:
            raise DataError(f"steering recipe {item!r} is not registered; registered: {sorted(paths) or 'none'} "
                            f"(set {REGISTRY_ENV}=name=path)")
        from ...io import file_hash

        folder = Path(paths[item])
        return Steering.load(folder), f"{item}:{file_hash(folder / 'tensors.safetensors')}"
    return wire.from_json(item), wire.fingerprint(item)


def check_supported(steering: Steering) -> None:
    """Refuse what the plugin cannot apply (a site it cannot reach), so nothing runs silently unsteered."""
    for item in steering:
        inner = item.inner if isinstance(item, Conditional) else item
        sites = [inner.site] + ([item.condition_kind] if isinstance(item, Conditional) else [])
        for site in sites:
            if site not in SITES:
                raise SteerlabError(f"the vLLM plugin cannot reach site kind {site!r} ({inner.kind}); "
                                    f"it supports {', '.join(SITES)}")


def parse(extra_args: Mapping[str, Any] | None) -> Ask | None:
    """Decode a request's ``extra_args`` (None when it asks nothing of steerlab); ``SteerlabError`` when
    the ask is malformed or cannot be applied."""
    if not extra_args or KEY not in extra_args:
        return None
    spec = extra_args[KEY]
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise DataError(f"extra_args['{KEY}'] is not JSON: {e}") from None
    if not isinstance(spec, dict) or not set(spec) <= {"steering", "read"}:
        raise DataError(f"extra_args['{KEY}'] must be an object with 'steering' and/or 'read', got {spec!r:.200}")
    steering, fp = None, None
    raw = spec.get("steering")
    if raw is not None:
        parts = raw if isinstance(raw, list) else [raw]
        recipes = [_one_recipe(p) for p in parts]
        steering = Steering([it for r, _ in recipes for it in r], recipes[0][0].meta)
        fp = "+".join(f for _, f in recipes)
        check_supported(steering)
    reads = _reads(spec["read"]) if spec.get("read") is not None else None
    return Ask(steering, fp, reads)


def _reads(doc: Any) -> Reads:
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise DataError("read must be an object with a string 'id' (make it with steerlab.engines.vllm.sampling_args)")
    probes = {}
    for name, p in (doc.get("probes") or {}).items():
        probes[name] = Probe(int(p["layer"]), wire.decode_tensor(p["vector"], f"probe {name!r}"), float(p.get("bias", 0)))
    return Reads(doc["id"], probes, [int(x) for x in doc.get("means") or []], [int(x) for x in doc.get("last") or []])


def sampling_args(steering: Steering | str | Sequence[Steering | str] | None = None,
                  probes: Mapping[str, tuple[Any, ...]] | None = None,
                  means: Sequence[int] | None = None, last: Sequence[int] | None = None) -> dict[str, Any]:
    """``extra_args`` for a ``SamplingParams`` asking the plugin to steer and/or read.

    ``steering``: a recipe, a registered name, or several (applied in order). ``probes``: name ->
    ``(layer, vector)`` or ``(layer, vector, bias)``, scored on every token at that layer's
    ``resid_post``. ``means``: layers whose running means (prompt and generated tokens apart) to return.
    ``last``: layers whose ``resid_post`` at the last prompt token to return (a capture at ``"last"``).
    With read-outs, the dict holds a fresh ``read.id``: pass it to ``fetch_reads`` after generating.
    """
    spec: dict[str, Any] = {}
    if steering is not None:
        items: list[Steering | str] = (list(steering) if isinstance(steering, (list, tuple))
                                       else [steering])  # type: ignore[list-item]
        for s in items:
            if isinstance(s, Steering):
                check_supported(s)
        spec["steering"] = [s if isinstance(s, str) else wire.to_json(s) for s in items]
        if len(spec["steering"]) == 1:
            spec["steering"] = spec["steering"][0]
    if probes or means or last:
        read: dict[str, Any] = {"id": uuid.uuid4().hex, "probes": {}, "means": [int(x) for x in means or []],
                                "last": [int(x) for x in last or []]}
        for name, p in (probes or {}).items():
            layer, vector = p[0], p[1]
            bias = float(p[2]) if len(p) > 2 else 0.0
            read["probes"][name] = {"layer": int(layer), "vector": wire.encode_tensor(torch.as_tensor(vector)),
                                    "bias": bias}
        spec["read"] = read
    return {KEY: spec}


def cache_salt(extra_args: Mapping[str, Any] | None) -> str | None:
    """The prefix-cache salt for a request: its recipe's fingerprint, so KV computed under one recipe is
    never reused under another (None for unsteered requests, which share the plain cache). Requests
    with read-outs or a conditional recipe get a salt of their own: they must compute every prompt token."""
    ask = parse(extra_args)
    if ask is None:
        return None
    if ask.reads is not None:  # read-outs must see every prompt token, so never start from cached KV
        return f"steerlab:{ask.fingerprint}:{ask.reads.id}"
    if ask.steering is None:
        return None
    if any(isinstance(it, Conditional) for it in ask.steering):
        return f"steerlab:{ask.fingerprint}:{uuid.uuid4().hex}"  # a sensor must see its whole prompt
    return f"steerlab:{ask.fingerprint}"
