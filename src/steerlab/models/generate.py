"""Steered generation: one batch, left padding, KV cache, one recipe per row (or one for all)."""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import torch

from ..errors import SteerlabError
from ..sites import Site
from .forward import Decoding, Layout, recipes_for, steered
from .hooks import SiteOp
from .tokens import check_context, check_texts, encode, has_chat_template, pad, pad_id


@dataclass
class GenerationResult:
    """Generated text and token ids (generated part only, up to and excluding EOS), one per prompt."""

    texts: list[str]
    tokens: list[list[int]]
    prompts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self):
        return iter(self.texts)

    def __getitem__(self, i: int) -> str:
        return self.texts[i]


#: ``generate`` keyword arguments that change the number of rows or roll the KV cache back
UNSUPPORTED = frozenset({"num_beams", "num_return_sequences", "assistant_model", "prompt_lookup_num_tokens",
                         "generation_config", "past_key_values"})


def eos_ids(model) -> set[int]:
    """The model's end-of-sequence ids (its generation config's, else the tokenizer's)."""
    ids = model.hf_model.generation_config.eos_token_id
    if ids is None:
        ids = model.tokenizer.eos_token_id
    if ids is None:
        return set()
    return {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])}


def _trim(row: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in eos:
            return row[:i]
    return row


def _compiling(enabled: bool):
    """For ``compile=True``: one compiled graph serves every decoder layer (their index is an
    input, not a constant), so a 30-layer model compiles once instead of 30 times."""
    if not enabled:
        return contextlib.nullcontext()
    return torch._dynamo.config.patch(allow_unspec_int_on_nn_module=True, recompile_limit=64)


def _check_sampling(temperature: float, top_p: float, top_k: int | None) -> None:
    """Sampling settings transformers would reject with a traceback (or accept and sample garbage)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and 0 < temperature <= 1e4):
        raise SteerlabError(f"temperature={temperature!r} is not allowed; give a finite number above 0 (at most 1e4)")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise SteerlabError(f"top_p={top_p!r} is not allowed; give a number above 0 and at most 1")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise SteerlabError(f"top_k={top_k!r} is not allowed; give a positive integer or None")


def generate(model, prompts, steering=None, max_new_tokens: int = 64, do_sample: bool = False, chat=None,
             seed: int | None = None, temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = None,
             use_cache: bool = True, system: str | None = None, compile: bool = False,
             reads: dict[Site, list[SiteOp]] | None = None, **generate_kwargs) -> GenerationResult:
    """See ``Model.generate``.

    ``compile=True`` decodes with a static KV cache and a ``torch.compile``d forward pass
    (transformers' own compiled decoding, enabled on every device). The steering hooks stay eager
    (a graph break at each hooked module), so the compiled graph is built once per model and batch
    shape and reused by every later call whatever the recipe. The first call pays the compilation.

    ``reads`` (site -> read ops, run after the recipe at that site in every forward pass) lets a
    caller trace the generation in the same passes, e.g. with a ``stopping_criteria`` that sees each
    new token.
    """
    prompts = check_texts(prompts, "prompts")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise SteerlabError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if do_sample:
        _check_sampling(temperature, top_p, top_k)
    if chat is None:
        chat = has_chat_template(model.tokenizer)
    unsupported = sorted(set(generate_kwargs) & UNSUPPORTED)
    if unsupported:
        raise SteerlabError(f"generate does not support {', '.join(unsupported)}: steering needs one row per prompt "
                            "and a KV cache that only grows")
    ids = encode(model.tokenizer, prompts, chat, system)
    check_context(model, ids, prompts, extra=max_new_tokens, what="prompts")
    recipes = recipes_for(model, steering, len(prompts), [len(i) for i in ids])
    batch = pad(ids, pad_id(model.tokenizer), "left", model.device)
    layout = Layout(start=batch.start, prompt_end=batch.end, generating=True)

    config = copy.deepcopy(model.hf_model.generation_config)
    settings: dict[str, object] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "use_cache": use_cache,
                                   "pad_token_id": pad_id(model.tokenizer), "num_beams": 1}
    if do_sample:
        settings.update(temperature=temperature, top_p=top_p, top_k=top_k)
    else:
        settings.update(temperature=None, top_p=None, top_k=None, min_p=None, typical_p=None)
    if compile:
        from transformers import CompileConfig

        compile_config = CompileConfig(fullgraph=False, dynamic=False, mode="default")
        compile_config._compile_all_devices = True  # type: ignore[assignment]  # transformers compiles on GPUs only unless told
        settings.update(cache_implementation="static", compile_config=compile_config)
    config.update(**settings)
    rng_devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        if seed is not None:
            torch.manual_seed(seed)
        decoding: Decoding = "cached" if use_cache else "uncached"
        with torch.inference_mode(), steered(model, recipes, layout, decoding, reads=reads,
                                                          outside_compile=compile), \
                _compiling(compile):
            out = model.hf_model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                          generation_config=config, **generate_kwargs)
    new = out[:, batch.input_ids.shape[1]:].tolist()
    eos = eos_ids(model)
    pad_token = settings["pad_token_id"]
    tokens = []
    for row in new:
        row = _trim(row, eos)
        while row and pad_token not in eos and row[-1] == pad_token:  # rows that stopped early are padded
            row.pop()
        tokens.append(row)
    texts = [model.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    return GenerationResult(texts=texts, tokens=tokens, prompts=prompts)
