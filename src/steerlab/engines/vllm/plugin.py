"""The vLLM plugin: every vLLM process that loads it steers and reads per request.

Registered as a ``vllm.general_plugins`` entry point (vLLM calls ``register`` in each of its
processes, ``vllm serve`` and Ray replicas included). It wraps two of vLLM's methods:

- the model runner's ``load_model``: once the model is loaded, hooks are attached to its decoder
  layers (see ``hooks.py``) and driven by a ``Steerer`` reading each request's ``extra_args``;
- the front end's ``process_inputs``: a request's steerlab ask is checked there (a recipe that
  cannot be applied, or whose explicit positions lie outside the prompt, is refused with a
  ``ValueError`` before it runs, never run unsteered) and its
  prefix-cache salt is set from the recipe's fingerprint.

Hooks need eager layers: run vLLM with ``enforce_eager=True`` (CUDA graphs would skip them).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from ...errors import SteerlabError
from ...interventions.positions import check_reach
from .request import cache_salt, parse

log = logging.getLogger("steerlab.vllm")
_DONE = "_steerlab_wrapped"


def register() -> None:
    """The entry point: wrap vLLM's model runners and input processor (once per process)."""
    try:
        from vllm.v1.engine.input_processor import InputProcessor
    except ImportError:  # pragma: no cover - a vLLM without the V1 front end
        log.warning("steerlab: this vLLM has no v1 InputProcessor; requests are not checked nor salted")
    else:
        _wrap(InputProcessor, "process_inputs", _process_inputs)
    for module, name in (("vllm.v1.worker.gpu_model_runner", "GPUModelRunner"),
                         ("vllm.v1.worker.cpu_model_runner", "CPUModelRunner")):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        if "load_model" in cls.__dict__:
            _wrap(cls, "load_model", _load_model)


def _wrap(cls: type, name: str, wrapper: Any) -> None:
    """Replace ``cls.name`` by ``wrapper(original, self, ...)``, once."""
    original = cls.__dict__[name]
    if getattr(original, _DONE, False):
        return

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return wrapper(original, self, *args, **kwargs)

    setattr(method, _DONE, True)
    setattr(cls, name, method)


def _process_inputs(original: Any, self: Any, request_id: str, prompt: Any, params: Any, *args: Any,
                    **kwargs: Any) -> Any:
    extra = getattr(params, "extra_args", None)
    try:
        ask = parse(extra)
        salt = cache_salt(extra)
    except SteerlabError as e:  # vLLM answers ValueError with a 400 / raises it from LLM.generate
        raise ValueError(f"steerlab: {e}") from None
    request = original(self, request_id, prompt, params, *args, **kwargs)
    ids = getattr(request, "prompt_token_ids", None)
    if ask is not None and ask.steering is not None and ids is not None:
        try:  # the prompt is tokenised now: an explicit position must be one of its tokens
            check_reach([ask.steering], [len(ids)])
        except SteerlabError as e:
            raise ValueError(f"steerlab: {e}") from None
    if salt is not None:
        old = getattr(request, "cache_salt", None)
        request.cache_salt = salt if not old else f"{old}|{salt}"
    return request


def _load_model(original: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
    out = original(self, *args, **kwargs)
    attach(self)
    return out


def attach(runner: Any) -> None:
    """Attach the steerlab hooks to a loaded model runner (done by the plugin; callable by hand)."""
    from vllm.forward_context import get_forward_context

    from .hooks import install
    from .steps import Steerer

    model = runner.model
    config = runner.model_config.hf_config
    like = next(model.parameters())
    steerer = Steerer(int(config.num_hidden_layers), int(config.hidden_size), like)
    seen = {"passes": 0}

    def extras(rid: str) -> dict | None:
        sp = runner.requests[rid].sampling_params
        return None if sp is None else sp.extra_args

    def prompt_len(rid: str) -> int:
        ids = runner.requests[rid].prompt_token_ids
        return len(ids) if ids is not None else 0

    def begin(positions: torch.Tensor | None) -> None:
        steerer.end()
        meta = get_forward_context().attn_metadata
        if meta is None or positions is None:  # dummy and profiling passes
            steerer.current = None
            return
        if isinstance(meta, list):
            meta = meta[0]
        first = next(iter(meta.values())) if isinstance(meta, dict) else meta
        rids = [r for r in runner.input_batch.req_ids if r is not None]
        steerer.begin(rids, extras, prompt_len, first.query_start_loc, positions)
        seen["passes"] += 1
        if seen["passes"] % 256 == 0:
            steerer.forget(set(runner.requests))

    runner._steerlab = steerer
    runner._steerlab_handles = install(model, steerer, begin)
    log.info("steerlab: hooks attached to %d layers", int(config.num_hidden_layers))
