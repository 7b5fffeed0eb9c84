"""``VLLMEngine`` behind the server's engine seam: a steered job gives steerlab's greedy tokens, with
read-out scores per token; skips until the server's engine module is present."""

from __future__ import annotations

import asyncio

import pytest
import torch

pytest.importorskip("vllm")
serve_engine = pytest.importorskip("steerlab.serve.engine")

import steerlab as sl
from steerlab.engines.vllm.engine import VLLMEngine
from steerlab.sites import Site


def test_vllm_engine_streams_steered_tokens_and_reads(llm):
    v = torch.randn(576, generator=torch.Generator().manual_seed(0))
    engine = VLLMEngine(llm, "smollm2", {"v": serve_engine.ReadOut("v", Site("resid_post", 6), v)})
    ids = engine.tokenizer("The weather is")["input_ids"]
    steer = sl.Steering([sl.Add(v, alpha=4.0, layers=[10])])

    async def run():
        streams = engine.submit([serve_engine.Job(ids, None, 5, 0.0),
                                 serve_engine.Job(ids, steer, 5, 0.0, reads=("v",))])
        out = []
        for s in streams:
            out.append([e async for e in s])
        return out

    plain, steered = asyncio.run(run())
    engine.close()
    model = sl.load("smollm2")
    want = model.generate(["The weather is"], steering=[steer], max_new_tokens=5, chat=False).tokens[0]
    assert [e.id for e in steered[:-1]] == list(want)
    assert isinstance(steered[-1], serve_engine.Finished) and [e.id for e in plain[:-1]] != list(want)
    assert all("v" in e.reads for e in steered[:-1])
