"""Fetching read-outs from the engine's workers after a request finished."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _pop(worker: Any, ids: list[str]) -> dict[str, Any]:
    """Runs inside a vLLM worker (through ``collective_rpc``): hand over the read-outs of ``ids``."""
    runner = getattr(worker, "model_runner", worker)
    steerer = getattr(runner, "_steerlab", None)
    if steerer is None:
        return {}
    return steerer.pop_reads(ids)


def fetch_reads(llm: Any, args: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The read-outs of finished requests, one per ``sampling_args`` dict in ``args``, in order.

    Each is ``{"scores": {probe: [one float per token, prompt then generated]}, "means": {layer:
    {"prompt": [d floats], "generated": [d floats]}}, "counts": {...}, "last": {layer: [d floats]}}``. Results are handed over once
    (the worker forgets them) and the worker keeps at most a bounded number of unfetched ones.
    Needs ``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` when vLLM runs its engine in another process.
    """
    ids = [a["steerlab"]["read"]["id"] for a in args]
    parts = llm.collective_rpc(_pop, args=(ids,))
    merged: dict[str, Any] = {}
    for part in parts:  # tensor-parallel ranks see the same tokens; the first rank's answer is kept
        for key, value in part.items():
            if key not in merged or not any(merged[key].get(k) for k in ("scores", "means", "last")):
                merged[key] = value
    return [merged.get(i, {"scores": {}, "means": {}, "counts": {}, "last": {}}) for i in ids]
