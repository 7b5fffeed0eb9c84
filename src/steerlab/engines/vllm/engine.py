"""``VLLMEngine``: the server's engine seam (``steerlab.serve.engine.Engine``) over a vLLM ``LLM``.

The server hands it ``Job``s; the engine's thread drives vLLM's own scheduler step by step
(``LLMEngine.add_request`` / ``step``): requests that arrive while others decode join at the next
step (continuous batching, as vLLM's server does), jobs submitted together are added together (the
same step: ``compare`` relies on it), each carries its recipe and read-outs through the plugin,
tokens stream as they are sampled, and a cancelled stream aborts its request. A job with read-outs
gets its tokens when it finishes, each with its scores (the plugin hands scores over per request).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import SteerlabError
from .request import check_supported, sampling_args
from .results import fetch_reads

log = logging.getLogger("steerlab.vllm")


@dataclass
class _Running:
    """A request inside vLLM: its job, stream, plugin ask and the tokens held back for read-outs."""

    job: Any
    stream: Any
    extra: dict[str, Any] | None
    held: list[int] = field(default_factory=list)

    @property
    def reads(self) -> bool:
        return bool(self.extra and "read" in self.extra["steerlab"])


class VLLMEngine:
    """Serve ``llm`` (a ``vllm.LLM`` with ``enforce_eager=True``); ``read_outs`` maps a read-out name to
    the server's ``ReadOut`` (a ``resid_post`` site, a weight and a bias)."""

    def __init__(self, llm: Any, name: str, read_outs: dict[str, Any] | None = None, max_queue: int = 256):
        self.llm = llm
        self.name = name
        self.tokenizer = llm.get_tokenizer()
        self.d_model = int(llm.llm_engine.model_config.hf_config.hidden_size)
        self.read_outs = dict(read_outs or {})
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._served = 0
        self._running = 0
        self._ids = itertools.count()
        self._tag = uuid.uuid4().hex[:8]
        self._thread = threading.Thread(target=self._loop, name="steerlab-vllm", daemon=True)
        self._thread.start()

    def check(self, job: Any) -> None:
        """Raise ``SteerlabError`` when the job's recipe or read-outs cannot run on this engine."""
        if job.steering is not None:
            check_supported(job.steering)
        for name in job.reads:
            ro = self.read_outs.get(name)
            if ro is None:
                raise SteerlabError(f"read {name!r} is not registered; registered: {sorted(self.read_outs)}")
            if ro.site.kind != "resid_post" or ro.probability:
                raise SteerlabError(f"read {name!r}: the vLLM engine reads linear scores at resid_post only")

    def submit(self, jobs: Sequence[Any]) -> list[Any]:
        from ...serve.engine import QueueFull, Stream

        loop = asyncio.get_running_loop()
        streams = [Stream(loop) for _ in jobs]
        for job in jobs:
            self.check(job)
        try:
            self._queue.put_nowait((list(jobs), streams))
        except queue.Full:
            raise QueueFull(f"the vLLM engine's queue holds {self._queue.maxsize} submits; retry later") from None
        return streams

    def stats(self) -> dict[str, Any]:
        return {"engine": "vllm", "queued": self._queue.qsize(), "running": self._running, "served": self._served}

    def close(self) -> None:
        self._queue.put(None)

    def _params(self, job: Any) -> tuple[Any, dict[str, Any] | None]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        probes = {n: (self.read_outs[n].site.layer, self.read_outs[n].weight, self.read_outs[n].bias)
                  for n in job.reads}
        extra = sampling_args(job.steering, probes=probes) if (job.steering is not None or probes) else None
        sp = SamplingParams(max_tokens=job.max_tokens, temperature=job.temperature, top_p=job.top_p,
                            seed=job.seed, ignore_eos=job.ignore_eos, extra_args=extra,
                            output_kind=RequestOutputKind.DELTA)
        return sp, extra

    def _admit(self, item: Any, running: dict[str, _Running]) -> None:
        """Add a submit's live jobs to vLLM together; a job vLLM refuses ends its stream with the reason."""
        from ...serve.engine import Finished

        jobs, streams = item
        for job, stream in zip(jobs, streams):
            if stream.cancelled:
                continue
            rid = f"steerlab-{self._tag}-{next(self._ids)}"  # unique across engines sharing one LLM
            try:
                sp, extra = self._params(job)
                self.llm.llm_engine.add_request(rid, {"prompt_token_ids": list(job.prompt_ids)}, sp)
            except Exception as e:  # noqa: BLE001 - a refused recipe (the plugin's check) ends this stream only
                log.info("steerlab: vLLM refused a request: %s", e)
                stream.push(Finished("error", str(e)))
                continue
            running[rid] = _Running(job, stream, extra)

    def _deliver(self, run: _Running, tokens: Sequence[int], reason: str | None) -> None:
        """Push new tokens (held back when the job reads, until it finishes) and, when done, ``Finished``."""
        from ...serve.engine import Finished, Token

        if not run.reads:
            for token in tokens:
                run.stream.push(Token(int(token), {}))
        else:
            run.held.extend(int(t) for t in tokens)
        if reason is None:
            return
        if run.reads:
            assert run.extra is not None
            scores = fetch_reads(self.llm, [run.extra])[0].get("scores", {})
            n_prompt = len(run.job.prompt_ids)
            for k, token in enumerate(run.held):
                # the state that produced generated token k is the last prompt token's (k = 0), then
                # generated token k-1's
                at = n_prompt - 1 + k
                run.stream.push(Token(token, {n: float(s[at]) for n, s in scores.items() if at < len(s)}))
        run.stream.push(Finished("stop" if reason == "stop" else "length"))
        self._served += 1

    def _loop(self) -> None:
        from ...serve.engine import Finished

        engine = self.llm.llm_engine
        running: dict[str, _Running] = {}
        while True:
            try:  # wait when idle; between steps, take whatever arrived
                item = self._queue.get(block=not running)
                while True:
                    if item is None:
                        if running:
                            engine.abort_request(list(running))
                        for run in running.values():
                            run.stream.push(Finished("error", "the server is shutting down"))
                        return
                    self._admit(item, running)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            gone = [rid for rid, run in running.items() if run.stream.cancelled]
            if gone:  # a client that disconnected frees its row
                engine.abort_request(gone)
                for rid in gone:
                    del running[rid]
            self._running = len(running)
            if not running:
                continue
            try:
                outs = engine.step()
                for out in outs:
                    live = running.get(out.request_id)
                    if live is None:
                        continue
                    result = out.outputs[0]
                    reason = (result.finish_reason or "length") if out.finished else None
                    tokens = list(result.token_ids)
                    if reason == "stop" and result.stop_reason is None and tokens:
                        tokens = tokens[:-1]  # vLLM keeps the end-of-sequence token; the server's tokens do not
                    self._deliver(live, tokens, reason)
                    if out.finished:
                        del running[out.request_id]
                self._running = len(running)
            except Exception as e:  # every stream must end, with the reason (logged)
                log.exception("steerlab: a vLLM step failed; ending its %d requests", len(running))
                engine.abort_request(list(running))
                for run in running.values():
                    run.stream.push(Finished("error", str(e)))
                running.clear()
