"""Shared fixtures: tiny random models of every family, and the embedded SmolLM2 model (loaded once)."""

from __future__ import annotations

import os

# Sleeping (not spinning) OpenMP threads: on a shared 2-core machine spinning threads slow every
# matmul several-fold. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from tiny import FAMILIES, byte_tokenizer, tiny_model


@pytest.fixture(params=FAMILIES)
def any_tiny(request):
    """A tiny random model of each supported family (the shared adapter suite runs on all)."""
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M-Instruct (converted once into the cache, then ~2 s per load)."""
    import steerlab as sl

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return sl.load("smollm2")
