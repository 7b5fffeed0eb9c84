"""Capture inside vLLM: every chosen layer's ``resid_post`` at each prompt's last token.

The prompts run through vLLM's scheduler (one generated token each, so the whole cost is the
prefill); the plugin reads the state of the last prompt token at each layer and hands it over with
``fetch_reads``. The result has the layout of ``model.capture(..., positions="last")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...errors import SteerlabError
from ...interventions.steering import Steering
from .request import sampling_args
from .results import fetch_reads


def capture_last(llm: Any, prompts: Sequence[str | Sequence[int]], layers: Sequence[int],
                 steering: Steering | None = None, chunk: int = 256) -> dict[str, torch.Tensor]:
    """``{"layers.L.resid_post": [n, d]}`` for ``prompts`` (texts, or token ids), in order.

    Texts are tokenized by vLLM as ``LLM.generate`` does (no chat template). ``chunk`` prompts go
    to the engine at a time, which bounds the read-outs held in its worker.
    """
    from vllm import SamplingParams

    layers = [int(x) for x in layers]
    if not layers:
        raise SteerlabError("capture_last needs at least one layer")
    rows: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(prompts), chunk):
        part = prompts[start:start + chunk]
        args = [sampling_args(steering, last=layers) for _ in part]
        params = [SamplingParams(max_tokens=1, temperature=0.0, extra_args=a) for a in args]
        inputs = [p if isinstance(p, str) else {"prompt_token_ids": list(p)} for p in part]
        llm.generate(inputs, params, use_tqdm=False)
        for k, got in enumerate(fetch_reads(llm, args)):
            last = got.get("last", {})
            missing = [layer for layer in layers if str(layer) not in last]
            if missing:
                raise SteerlabError(f"prompt {start + k}: vLLM returned no state for layers {missing} "
                                    "(is the steerlab plugin loaded, and the model one it supports?)")
            for layer in layers:
                rows[layer].append(torch.tensor(last[str(layer)]))
    return {f"layers.{layer}.resid_post": torch.stack(rows[layer]) for layer in layers}
