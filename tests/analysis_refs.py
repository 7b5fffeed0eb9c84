"""Hand-written references for the analysis tests: plain forwards with raw torch hooks.

These never go through steerlab's hooks or interventions, so they check them independently.
"""

from __future__ import annotations

import contextlib

import torch


def ids_of(model, text: str) -> torch.Tensor:
    return torch.tensor([model.tokenizer(text)["input_ids"]])


def hidden(model, text: str) -> list[torch.Tensor]:
    """``output_hidden_states`` of one text: entry ``l + 1`` is block ``l``'s output ``[T, d]`` (last one normed)."""
    with torch.no_grad():
        out = model.hf_model(input_ids=ids_of(model, text), output_hidden_states=True)
    return [h[0].float() for h in out.hidden_states]


@contextlib.contextmanager
def hooked(module, fn, pre: bool = False):
    """Attach ``fn(x) -> x`` to a module's first input (``pre``) or output for the block."""
    if pre:
        def hook(mod, args, kwargs):
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            return args, {**kwargs, key: fn(kwargs[key])}

        handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    else:
        def hook(mod, args, output):
            if isinstance(output, tuple):
                return (fn(output[0]), *output[1:])
            return fn(output)

        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def logits_all(model, text: str) -> torch.Tensor:
    """Plain logits at every position ``[T, vocab]``."""
    with torch.no_grad():
        return model.hf_model(input_ids=ids_of(model, text)).logits[0].float()


def last_logits(model, text: str) -> torch.Tensor:
    return logits_all(model, text)[-1]


def set_rows(positions, values):
    """An ``fn`` for ``hooked`` writing ``values[k]`` at ``positions[k]`` of a ``[1, T, d]`` tensor."""
    def fn(x):
        y = x.clone()
        for k, p in enumerate(positions):
            y[0, p] = values[k].to(y.dtype).view(y.shape[2:])
        return y

    return fn
