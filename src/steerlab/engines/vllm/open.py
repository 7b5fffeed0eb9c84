"""Open a vLLM engine for ``steerlab serve --engine vllm``: the same model, run by vLLM with the plugin.

The server still loads the model once with transformers: the registry checks recipes and builds
read-outs against it (its tokenizer and shapes); vLLM runs the requests. vLLM loads the same
weights from the folder ``steerlab.load`` would (an alias or ``.gguf`` file: its converted folder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import SteerlabError
from ...models.load import resolve_source

if TYPE_CHECKING:
    from ...serve.registry import Registry
    from .engine import VLLMEngine


def open_llm(model: str, dtype: str | None = None, max_model_len: int = 2048, max_num_seqs: int = 16,
             seed: int = 0) -> Any:
    """A ``vllm.LLM`` over ``model`` (a steerlab model name, folder, ``.gguf`` file or hub id), eager.

    Eager mode is required: the plugin's hooks run in the layers' Python forward. ``dtype`` defaults to
    float32 on the CPU and bfloat16 on a GPU, as ``steerlab.load`` does.
    """
    try:
        import vllm
    except ImportError:
        raise SteerlabError("--engine vllm needs vLLM and steerlab's plugin in the same environment: "
                            "pip install 'steerlab[vllm]' (see docs/scale.md); or use --engine transformers") from None
    import torch

    source, _ = resolve_source(model)
    threads = torch.get_num_threads()
    try:
        llm = vllm.LLM(model=source, dtype=dtype or ("bfloat16" if torch.cuda.is_available() else "float32"),
                       enforce_eager=True, max_model_len=max_model_len, max_num_seqs=max_num_seqs, seed=seed,
                       enable_prefix_caching=True)
    except (ValueError, RuntimeError, OSError) as e:
        raise SteerlabError(f"vLLM could not load {model!r}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    torch.set_num_threads(max(threads, 1))  # vLLM's CPU worker may change it; the registry's work keeps ours
    return llm


def open_engine(model: str, registry: Registry, max_queue: int = 64, max_batch: int = 16,
                max_prompt_tokens: int = 2048, max_tokens: int = 512, dtype: str | None = None) -> VLLMEngine:
    """The server's engine over vLLM, with ``registry``'s directions as read-outs."""
    from .engine import VLLMEngine

    llm = open_llm(model, dtype=dtype, max_model_len=max_prompt_tokens + max_tokens, max_num_seqs=max_batch)
    return VLLMEngine(llm, registry.model.name, registry.readouts(), max_queue=max_queue)
