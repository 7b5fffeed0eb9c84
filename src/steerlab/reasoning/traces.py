"""Traces captured while sampling: hidden states and top-k log-probabilities from the same forward passes.

Trace position ``j`` of a sample is the forward pass that *chose* its generated token ``j``: the
hidden state at the position before that token (the last prompt token for ``j = 0``) and the
log-probabilities that came out of it. Read ops stash the newest column of every pass; a
``StoppingCriteria`` (which sees each token right after it is appended) commits the stash for the
rows still generating, so an EOS or the padding after it never enters a trace. Hidden states are
kept as running means over segments of ``segment`` tokens (memory: one ``[layers, d]`` sum per row
plus one mean per finished segment); ``segment=1`` keeps every token's state. The last layer's
``resid_post`` is before the final norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..errors import SteerlabError
from ..interventions.positions import StepContext
from ..sites import Site

#: default segment size in tokens: the paper's 500-token segments assume traces of thousands of tokens;
#: the small models measured here write 30-150 tokens, so 16 gives them 2-10 segments
SEGMENT = 16
#: top-k log-probabilities kept per token (DeepConf's token confidence averages the top-k)
TOP_K = 5

#: ``stop(row, trace) -> bool``: finish a row mid-generation (online early stopping)
Stopper = Callable[[int, "Trace"], bool]
#: ``end(tokens) -> bool``: the sample is complete (a stop sequence for models that do not emit EOS)
Ender = Callable[[list[int]], bool]


@dataclass
class Trace:
    """One sampled sequence: its tokens and text, segment means ``[segments, layers, d]`` (float32,
    CPU), the log-probability of each chosen token ``[n]`` and the top-k log-probabilities ``[n, k]``."""

    tokens: list[int]
    text: str
    segments: torch.Tensor
    logprobs: torch.Tensor
    top_logprobs: torch.Tensor
    layers: list[int]
    segment: int
    stopped: bool = False

    def __len__(self) -> int:
        return len(self.tokens)


class Tracer(StoppingCriteria):
    """Read ops for ``generate(reads=...)`` and the stopping criterion that commits what they read."""

    def __init__(self, batch: int, layers: Sequence[int], eos: set[int], segment: int = SEGMENT,
                 top_k: int = TOP_K, stop: Stopper | None = None, stop_every: int = 1, end: Ender | None = None):
        if not isinstance(segment, int) or segment < 1:
            raise SteerlabError(f"segment must be a positive integer (tokens per segment), got {segment!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise SteerlabError(f"top_k must be a positive integer, got {top_k!r}")
        self.layers = list(layers)
        self.eos = torch.tensor(sorted(eos), dtype=torch.long)
        self.segment, self.top_k, self.stop, self.stop_every, self.end = segment, top_k, stop, stop_every, end
        self.fresh: dict[int, torch.Tensor] = {}
        self.logits: torch.Tensor | None = None
        self.sums: torch.Tensor | None = None
        self.count = torch.zeros(batch, dtype=torch.long)
        self.alive = torch.ones(batch, dtype=torch.bool)
        self.stopped = torch.zeros(batch, dtype=torch.bool)
        self.done: list[list[torch.Tensor]] = [[] for _ in range(batch)]
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.chosen: list[list[float]] = [[] for _ in range(batch)]
        self.top: list[list[torch.Tensor]] = [[] for _ in range(batch)]

    def reads(self) -> dict[Site, list]:
        """Site -> read op: the residual stream after each traced layer, and the logits."""
        ops: dict[Site, list] = {Site("resid_post", layer): [self._reader(i)] for i, layer in enumerate(self.layers)}
        ops[Site("logits")] = [self._read_logits]
        return ops

    def _reader(self, index: int):
        def read(x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
            self.fresh[index] = x[:, -1].detach().to("cpu", torch.float32)
            return x
        return read

    def _read_logits(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        self.logits = x[:, -1].detach().to("cpu", torch.float32)
        return x

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        token = input_ids[:, -1].to("cpu")
        valid = self.alive & ~torch.isin(token, self.eos)
        if len(self.fresh) != len(self.layers) or self.logits is None:
            raise SteerlabError("the trace missed a forward pass (were the read ops passed to generate?)")
        states = torch.stack([self.fresh[i] for i in range(len(self.layers))], 1)  # [B, L, d]
        logp = torch.log_softmax(self.logits, -1)
        top = logp.topk(self.top_k, -1).values
        if self.sums is None:
            self.sums = torch.zeros_like(states)
        rows = valid.nonzero().flatten()
        self.sums[rows] += states[rows]
        self.count[rows] += 1
        for b in rows.tolist():
            self.tokens[b].append(int(token[b]))
            self.chosen[b].append(float(logp[b, token[b]]))
            self.top[b].append(top[b])
            if int(self.count[b]) == self.segment:
                self._close(b)
        if self.end is not None:  # a complete sample ends like one at EOS (its last token kept)
            for b in rows.tolist():
                if self.end(self.tokens[b]):
                    valid[b] = False
        halt = torch.zeros_like(valid)
        if self.stop is not None:
            for b in valid.nonzero().flatten().tolist():
                if len(self.tokens[b]) % self.stop_every == 0 and self.stop(b, self.trace(b, "")):
                    halt[b] = True
        self.stopped |= halt
        self.alive = valid & ~halt
        self.fresh.clear()
        self.logits = None
        return (~self.alive).to(input_ids.device)

    def _close(self, b: int) -> None:
        assert self.sums is not None
        self.done[b].append(self.sums[b] / self.count[b])
        self.sums[b] = 0
        self.count[b] = 0

    def trace(self, b: int, text: str) -> Trace:
        """Row ``b`` so far (the open segment's mean included when it has a token)."""
        segs = list(self.done[b])
        if self.sums is not None and int(self.count[b]) > 0:
            segs.append(self.sums[b] / self.count[b])
        d = self.sums.shape[-1] if self.sums is not None else 0
        segments = torch.stack(segs) if segs else torch.zeros(0, len(self.layers), d)
        top = torch.stack(self.top[b]) if self.top[b] else torch.zeros(0, self.top_k)
        return Trace(list(self.tokens[b]), text, segments, torch.tensor(self.chosen[b]), top, self.layers,
                     self.segment, bool(self.stopped[b]))


def _eos(model) -> set[int]:
    from ..models.generate import eos_ids

    return eos_ids(model)


def sample(model, prompts: Sequence[str], layers: Sequence[int] | None = None, segment: int = SEGMENT,
           top_k: int = TOP_K, stop: Stopper | None = None, stop_every: int = 1, max_new_tokens: int = 128,
           do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
           chat: bool | None = None, steering=None, end: Ender | None = None) -> list[Trace]:
    """Generate one sample per prompt (repeat a prompt for N samples) and trace it in the same passes.

    ``layers``: the decoder layers whose output is traced (default: all). ``stop`` finishes a row
    when it returns True (checked every ``stop_every`` tokens); such a trace has ``stopped=True``.
    ``end`` completes a row when it returns True for the row's tokens so far (a stop sequence; the
    trace keeps the token that completed it and is not ``stopped``).
    """
    from ..models import generate as _generate
    from ..models.tokens import check_texts

    prompts = check_texts(list(prompts), "prompts")
    n_layers = model.bound.n_layers
    layers = list(range(n_layers)) if layers is None else [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad or not layers:
        raise SteerlabError(f"layers={layers!r}: each must be in 0..{n_layers - 1}")
    tracer = Tracer(len(prompts), layers, _eos(model), segment, top_k, stop, stop_every, end)
    out = _generate.generate(model, prompts, steering, max_new_tokens=max_new_tokens, do_sample=do_sample, chat=chat,
                             seed=seed, temperature=temperature, top_p=top_p, reads=tracer.reads(),
                             stopping_criteria=StoppingCriteriaList([tracer]))
    traces = []
    for b, tokens in enumerate(out.tokens):
        if tokens != tracer.tokens[b]:
            raise SteerlabError(f"row {b}: the trace's tokens differ from the generated ones; cannot trust the trace")
        traces.append(tracer.trace(b, out.texts[b]))
    return traces
