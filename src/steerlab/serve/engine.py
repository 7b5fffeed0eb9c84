"""The engine seam: what the HTTP server asks of a runtime, and the transformers runtime.

The server never runs the model itself. It turns a request into ``Job``s (token ids, a checked
recipe or None, sampling settings, the read-outs to report) and hands them to an ``Engine``:

- ``check(job)`` raises ``SteerlabError`` if the job cannot run (a recipe the model cannot take);
- ``submit(jobs)`` queues jobs to be admitted together (same batch: ``compare`` relies on it) and
  returns one ``Stream`` per job; it raises ``QueueFull`` when the queue is at its bound;
- a ``Stream`` is an async iterator of ``Token`` (an id plus its read-out scores) ending with one
  ``Finished``; ``cancel()`` frees its row (a client that disconnected);
- ``tokenizer``, ``name``, ``d_model`` and ``stats()`` describe it; ``close()`` stops it.

``TransformersEngine`` runs continuous batching over ``DecodeBatch`` (steerlab's steered forward):
requests that arrive while a batch decodes join it between two decoding steps, each row with its
own recipe, and finished rows leave. Another runtime (vLLM) implements the same few members.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ..errors import SteerlabError
from ..interventions.plan import build_plan
from ..interventions.positions import StepContext
from ..interventions.steering import Steering
from ..models.forward import recipes_for
from ..models.generate import eos_ids
from ..models.hooks import SiteOp, shape_of
from ..models.stepwise import DecodeBatch
from ..sites import Site

if TYPE_CHECKING:
    from ..models.model import Model


class QueueFull(SteerlabError):
    """The engine's queue is at its bound; the client should retry later."""


@dataclass(frozen=True)
class ReadOut:
    """A per-token score: ``w·h + b`` of the state ``h`` at ``site`` (``sigmoid`` of it when ``probability``)."""

    name: str
    site: Site
    weight: torch.Tensor
    bias: float = 0.0
    probability: bool = False


@dataclass
class Job:
    """One completion to generate: prompt token ids, a recipe (or None), sampling, read-outs by name.

    ``temperature`` 0 is greedy; ``seed`` makes sampling repeatable (None: a random seed);
    ``ignore_eos`` decodes all ``max_tokens`` (benchmarks).
    """

    prompt_ids: list[int]
    steering: Steering | None = None
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    reads: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass
class Token:
    """A generated token id and the read-out scores of the state that produced it."""

    id: int
    reads: dict[str, float] = field(default_factory=dict)


@dataclass
class Finished:
    """The end of a stream: ``reason`` is ``"stop"`` (end of sequence), ``"length"``, ``"cancelled"`` or
    ``"error"`` (then ``error`` says why)."""

    reason: str
    error: str | None = None


Event = Token | Finished


class Stream:
    """The events of one job, delivered on the event loop that submitted it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = False
        self.done = False

    def push(self, event: Event) -> None:
        """Called from the engine's thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self.cancelled = True

    def cancel(self) -> None:
        """Stop generating for this job; its row is freed before the next decoding step."""
        self.cancelled = True

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while not self.done:
            event = await self._queue.get()
            if isinstance(event, Finished):
                self.done = True
            yield event


class Engine(Protocol):
    """What the server needs from a runtime (see the module docstring)."""

    name: str
    tokenizer: Any
    d_model: int

    def check(self, job: Job) -> None: ...

    def submit(self, jobs: Sequence[Job]) -> list[Stream]: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass
class _Row:
    job: Job
    stream: Stream
    generator: torch.Generator
    count: int = 0
    finished: bool = False



class TransformersEngine:
    """Continuous batching on a transformers model through steerlab's steered forward.

    One background thread owns the model. Each loop: drop finished or cancelled rows, admit queued
    jobs (prefilled as one batch and merged into the running one), then one decoding step for
    every row. ``max_batch`` bounds the rows decoding together, ``max_queue`` the jobs waiting.
    ``readouts`` are the read-outs a job may ask for by name.
    """

    def __init__(self, model: Model, readouts: dict[str, ReadOut] | None = None, max_batch: int = 16,
                 max_queue: int = 64):
        if max_batch < 1 or max_queue < 1:
            raise SteerlabError(f"max_batch and max_queue must be positive, got {max_batch} and {max_queue}")
        self.model = model
        self.name = model.name
        self.tokenizer = model.tokenizer
        self.d_model = model.d_model
        self.readouts = dict(readouts or {})
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.eos = eos_ids(model)
        self._pending: deque[_Row] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._latest: dict[str, torch.Tensor] = {}
        self._counts = {"steps": 0, "admissions": 0, "tokens": 0, "rows_max": 0}
        self._live = 0
        #: events of this loop iteration, sent once the batch is settled (a finished batch has
        #: removed its hooks before its clients hear that it finished)
        self._outbox: list[tuple[Stream, Event]] = []
        self._thread = threading.Thread(target=self._loop, name="steerlab-engine", daemon=True)
        self._thread.start()

    # --- the interface ----------------------------------------------------------------------------
    def check(self, job: Job) -> None:
        """Build the job's plan for a batch of one (raises ``SteerlabError`` on a recipe the model cannot take)."""
        unknown = [r for r in job.reads if r not in self.readouts]
        if unknown:
            raise SteerlabError(f"read={unknown[0]!r} is not a registered direction or probe; known: "
                                f"{', '.join(sorted(self.readouts)) or 'none'}")
        if job.steering is not None:
            (recipe,) = recipes_for(self.model, job.steering, 1, [len(job.prompt_ids)])
            bound = self.model.bound
            build_plan([recipe], 1, bound.n_layers, lambda s: shape_of(bound, s), next(self.model.hf_model.parameters()))

    def submit(self, jobs: Sequence[Job]) -> list[Stream]:
        """Queue ``jobs`` to be admitted together; one stream each (call from the event loop)."""
        loop = asyncio.get_running_loop()
        rows = []
        for job in jobs:
            gen = torch.Generator(device=self.model.device)
            gen.manual_seed(job.seed if job.seed is not None else int(torch.randint(0, 2**62, (1,))))
            rows.append(_Row(job, Stream(loop), gen))
        with self._cond:
            if self._stop:
                raise SteerlabError("the engine is closed")
            if len(self._pending) + len(rows) > self.max_queue:
                raise QueueFull(f"the queue holds {len(self._pending)} requests, its bound is {self.max_queue}; "
                                "retry later")
            self._pending.extend(rows)
            self._cond.notify()
        return [r.stream for r in rows]

    def stats(self) -> dict[str, Any]:
        """Rows decoding now, jobs queued, and counters since start."""
        return {"rows": self._live, "queued": len(self._pending), "max_batch": self.max_batch,
                "max_queue": self.max_queue, **self._counts}

    def close(self) -> None:
        """Stop the loop; queued and running jobs finish as cancelled."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # --- read-outs --------------------------------------------------------------------------------
    def _reads_for(self, rows: Sequence[_Row]) -> dict[Site, list[SiteOp]]:
        names = sorted({name for r in rows for name in r.job.reads})
        out: dict[Site, list[SiteOp]] = {}
        for name in names:
            out.setdefault(self.readouts[name].site, []).append(self._reader(self.readouts[name]))
        return out

    def _reader(self, readout: ReadOut) -> SiteOp:
        w = readout.weight.to(self.model.device, torch.float32)

        def read(x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
            score = x[:, -1].float() @ w + readout.bias
            self._latest[readout.name] = torch.sigmoid(score) if readout.probability else score
            return x

        return read

    # --- the loop ---------------------------------------------------------------------------------
    def _send(self, stream: Stream, event: Event) -> None:
        self._outbox.append((stream, event))

    def _flush(self) -> None:
        for stream, event in self._outbox:
            stream.push(event)
        self._outbox.clear()

    def _loop(self) -> None:
        batch: DecodeBatch | None = None
        rows: list[_Row] = []
        tokens = torch.zeros(0, dtype=torch.long)
        try:
            while True:
                self._flush()
                with self._cond:
                    while not self._stop and not self._pending and not rows:
                        self._cond.wait(timeout=1.0)
                    if self._stop:
                        break
                    room = self.max_batch - sum(not r.finished and not r.stream.cancelled for r in rows)
                    new = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
                keep = [i for i, r in enumerate(rows) if not r.finished and not r.stream.cancelled]
                for r in rows:
                    if r.stream.cancelled and not r.finished:
                        r.finished = True
                        self._send(r.stream, Finished("cancelled"))
                if batch is not None and len(keep) < len(rows):
                    batch.close()
                    if keep:
                        kept = [rows[i] for i in keep]
                        batch, tokens, rows = batch.select(keep, self._reads_for(kept)), tokens[keep], kept
                    else:
                        batch, tokens, rows = None, tokens[:0], []
                new = [r for r in new if not r.stream.cancelled]
                if new:
                    batch, rows, tokens = self._admit(batch, rows, tokens, new)
                self._live = len(rows)
                self._counts["rows_max"] = max(self._counts["rows_max"], len(rows))
                if batch is None or all(r.finished for r in rows):
                    continue
                try:
                    self._latest = {}
                    logits = batch.step(tokens)
                except Exception as exc:  # noqa: BLE001 -- every row learns why; the server keeps serving
                    for r in rows:
                        if not r.finished:
                            r.finished = True
                            self._send(r.stream, Finished("error", f"{type(exc).__name__}: {exc}"))
                    batch.close()
                    batch, rows, tokens = None, [], tokens[:0]
                    continue
                self._counts["steps"] += 1
                tokens = self._emit(rows, logits)
                if all(r.finished for r in rows):
                    batch.close()
                    batch, rows, tokens = None, [], tokens[:0]
                    self._live = 0
                self._flush()
        finally:
            if batch is not None:
                batch.close()
            with self._cond:
                leftovers = rows + list(self._pending)
                self._pending.clear()
            for r in leftovers:
                if not r.finished:
                    self._send(r.stream, Finished("cancelled"))
            self._flush()

    def _admit(self, batch: DecodeBatch | None, rows: list[_Row], tokens: torch.Tensor,
               new: list[_Row]) -> tuple[DecodeBatch | None, list[_Row], torch.Tensor]:
        """Prefill ``new`` as one batch and merge it into the running one (which pauses meanwhile)."""
        if batch is not None:
            batch.close()  # hooks are global to the model: the prefill runs alone
        try:
            self._latest = {}
            fresh, logits = DecodeBatch.prefill(self.model, [r.job.prompt_ids for r in new],
                                                [r.job.steering for r in new], self._reads_for(new))
        except Exception as exc:  # noqa: BLE001 -- the new jobs fail, the running ones go on
            for r in new:
                r.finished = True
                self._send(r.stream, Finished("error", f"{type(exc).__name__}: {exc}"))
            if batch is not None:
                batch = batch.select(list(range(batch.batch)), self._reads_for(rows))
            return batch, rows, tokens
        self._counts["admissions"] += 1
        first = self._emit(new, logits)
        if batch is None:
            return fresh, new, first
        merged = batch.merge(fresh, self._reads_for(rows + new))
        return merged, rows + new, torch.cat([tokens, first])

    def _emit(self, rows: list[_Row], logits: torch.Tensor) -> torch.Tensor:
        """Sample each row's next token, send it (with its read-outs) and finish rows that are done."""
        chosen = self._sample(rows, logits)
        reads = {name: v.tolist() for name, v in self._latest.items()}
        for i, (r, t) in enumerate(zip(rows, chosen.tolist())):
            if r.finished:
                continue
            if t in self.eos and not r.job.ignore_eos:
                r.finished = True
                self._send(r.stream, Finished("stop"))
                continue
            r.count += 1
            self._counts["tokens"] += 1
            self._send(r.stream, Token(t, {name: float(reads[name][i]) for name in r.job.reads if name in reads}))
            if r.count >= r.job.max_tokens:
                r.finished = True
                self._send(r.stream, Finished("length"))
        return chosen.cpu()

    @staticmethod
    def _sample(rows: list[_Row], logits: torch.Tensor) -> torch.Tensor:
        chosen = logits.argmax(-1)
        for i, r in enumerate(rows):
            if r.finished or r.job.temperature <= 0:
                continue
            probs = torch.softmax(logits[i] / r.job.temperature, -1)
            if r.job.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                drop = sorted_p.cumsum(0) - sorted_p > r.job.top_p  # keep the smallest set reaching top_p
                sorted_p[drop] = 0.0
                probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
            chosen[i] = torch.multinomial(probs, 1, generator=r.generator)[0]
        return chosen


def wait_idle(engine: Engine, timeout: float = 10.0) -> bool:
    """Wait until the engine has no rows and no queue (tests, benchmarks); False on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = engine.stats()
        if not s.get("rows") and not s.get("queued"):
            return True
        time.sleep(0.02)
    return False
