"""The vLLM plugin's per-worker state, without vLLM: a request id reused by a new request is decoded again."""

from __future__ import annotations

import torch

import steerlab as sl
from steerlab.engines.vllm import sampling_args
from steerlab.engines.vllm.steps import Steerer


def test_a_reused_request_id_never_keeps_the_old_recipe():
    steerer = Steerer(4, 8, torch.zeros(1))
    first = sampling_args(sl.Steering([sl.Add(torch.ones(8), alpha=2.0, layers=[1])]))
    second = sampling_args(sl.Steering([sl.Add(-torch.ones(8), alpha=5.0, layers=[2])]))
    a = steerer.ask_of("req-0", first)
    assert steerer.ask_of("req-0", first) is a  # the same live request: decoded once
    b = steerer.ask_of("req-0", second)       # a new request under the same id
    assert b is not a and b.steering is not None and next(iter(b.steering)).alpha == 5.0
    assert steerer.ask_of("req-0", None) is None  # and an unsteered one is unsteered
