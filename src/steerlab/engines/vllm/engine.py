"""``VLLMEngine``: the server's engine seam (``steerlab.serve.engine.Engine``) over a vLLM ``LLM``.

The server hands it ``Job``s; each ``submit`` runs its jobs as one ``LLM.generate`` call on the
engine's thread (jobs submitted together share a batch, as ``compare`` needs), with each job's
recipe and read-outs passed through the plugin, then delivers every token with its read-out
scores and a ``Finished``. Jobs of later submits wait for the running one: vLLM batches within a
submit, not yet across submits, and tokens arrive when the submit's generation ends (no streaming
of partial output yet).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from typing import Any

from ...errors import SteerlabError
from .request import check_supported, sampling_args
from .results import fetch_reads


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
        return {"engine": "vllm", "queued": self._queue.qsize(), "served": self._served}

    def close(self) -> None:
        self._queue.put(None)

    def _params(self, job: Any) -> tuple[Any, dict[str, Any] | None]:
        from vllm import SamplingParams

        probes = {n: (self.read_outs[n].site.layer, self.read_outs[n].weight, self.read_outs[n].bias)
                  for n in job.reads}
        extra = sampling_args(job.steering, probes=probes) if (job.steering is not None or probes) else None
        sp = SamplingParams(max_tokens=job.max_tokens, temperature=job.temperature, top_p=job.top_p,
                            seed=job.seed, ignore_eos=job.ignore_eos, extra_args=extra)
        return sp, extra

    def _loop(self) -> None:
        from ...serve.engine import Finished, Token

        while True:
            item = self._queue.get()
            if item is None:
                return
            jobs, streams = item
            live = [(j, s) for j, s in zip(jobs, streams) if not s.cancelled]
            try:
                made = [self._params(j) for j, _ in live]
                outs = self.llm.generate([{"prompt_token_ids": j.prompt_ids} for j, _ in live],
                                         [sp for sp, _ in made], use_tqdm=False)
                asked = [(i, extra) for i, (_, extra) in enumerate(made) if extra and "read" in extra["steerlab"]]
                reads = dict(zip([i for i, _ in asked], fetch_reads(self.llm, [e for _, e in asked])))
            except Exception as e:  # noqa: BLE001 - every stream must end, with the reason
                for _, stream in live:
                    stream.push(Finished("error", str(e)))
                continue
            for i, ((job, stream), out) in enumerate(zip(live, outs)):
                result = out.outputs[0]
                scores = reads.get(i, {}).get("scores", {})
                n_prompt = len(job.prompt_ids)
                for k, token in enumerate(result.token_ids):
                    # the state that produced generated token k is the last prompt token's (k = 0), then
                    # generated token k-1's
                    at = n_prompt - 1 + k
                    stream.push(Token(int(token), {n: float(s[at]) for n, s in scores.items() if at < len(s)}))
                stream.push(Finished("stop" if result.finish_reason == "stop" else "length"))
                self._served += 1


