"""vLLM tests run only where vLLM imports (the vLLM venv, see docs/scale.md); elsewhere they skip."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: fast start
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")


@pytest.fixture(scope="session")
def smollm_folder():
    """The embedded model's safetensors folder (converted once into steerlab's cache)."""
    from steerlab.models.load import convert_gguf, embedded_gguf

    return str(convert_gguf(embedded_gguf("smollm2")))


@pytest.fixture(scope="session")
def llm(smollm_folder):
    """One vLLM engine for the session: fp32, eager (hooks), prefix caching on."""
    vllm = pytest.importorskip("vllm")
    import torch

    threads = torch.get_num_threads()
    engine = vllm.LLM(model=smollm_folder, dtype="float32", enforce_eager=True, max_model_len=512,
                      max_num_seqs=32, seed=0, enable_prefix_caching=True)
    torch.set_num_threads(max(threads, 1))
    return engine
