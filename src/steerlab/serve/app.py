"""The HTTP layer: OpenAI-compatible routes, server-sent events, errors, the playground page.

A thin layer: requests are checked by ``protocol.parse``, run by an ``Engine``, and answered in
OpenAI's shapes with steerlab's extensions under a ``"steerlab"`` key of each choice (and of each
stream chunk): ``reads`` (per-token scores) and ``unsteered`` (the same prompt and seed, no recipe).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import SteerlabError
from .engine import Engine, Finished, Job, QueueFull, Stream, Token
from .protocol import ApiError, Limits, parse
from .protocol import Request as Parsed
from .registry import Registry, recipe_json

STATIC = ("index.html", "playground.js", "playground.css")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}


@dataclass
class Choice:
    """One completion as it streams: incremental detokenisation, stop strings, read-outs."""

    tokenizer: Any
    stop: list[str]
    ids: list[int] = field(default_factory=list)
    text: str = ""  # what has been sent
    reads: dict[str, list[float]] = field(default_factory=dict)
    finish: str | None = None

    def feed(self, token: Token) -> tuple[str, dict[str, list[float]]]:
        """Add a token; returns the text that can be sent now and this token's scores."""
        self.ids.append(token.id)
        for name, score in token.reads.items():
            self.reads.setdefault(name, []).append(score)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        for s in self.stop:
            at = full.find(s)
            if at >= 0:
                delta = full[len(self.text):at] if at >= len(self.text) else ""
                self.text += delta
                self.finish = "stop"
                return delta, {k: [v] for k, v in token.reads.items()}
        hold = max((len(s) - 1 for s in self.stop), default=0)
        ready = full[: len(full) - hold] if hold else full
        ready = ready.removesuffix("\ufffd")  # a character split across tokens: wait for the rest
        delta = ready[len(self.text):] if len(ready) > len(self.text) else ""
        self.text += delta
        return delta, {k: [v] for k, v in token.reads.items()}

    def close(self, reason: str) -> str:
        """The end of the stream: returns the text held back so far."""
        if self.finish is None:
            self.finish = reason
            full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            delta = full[len(self.text):]
            self.text += delta
            return delta
        return ""


def _error(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def create_app(engine: Engine, registry: Registry, limits: Limits | None = None,
               api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving ``engine`` with ``registry``'s recipes and directions."""
    limits = limits or Limits()
    app = FastAPI(title="steerlab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.registry, app.state.limits = engine, registry, limits

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return _error(ApiError(exc.status_code, str(exc.detail), None, code))

    @app.middleware("http")
    async def authorise(request: Request, call_next: Any) -> Response:
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)", None,
                                       "invalid_api_key"))
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": engine.name, **engine.stats()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": 0,
                                            "owned_by": "steerlab"}]}

    @app.get("/v1/steering")
    async def steering() -> dict[str, Any]:
        return registry.describe()

    @app.get("/v1/steering/{name}/inline")
    async def inline(name: str) -> dict[str, Any]:
        """A registered recipe in the inline form (to copy into a request and edit)."""
        if name not in registry.recipes:
            raise ApiError(404, f"recipe {name!r} is not registered", "name", "not_found")
        return recipe_json(registry.recipes[name])

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await _complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _complete(request, chat=False)

    @app.get("/")
    async def index() -> HTMLResponse:
        return HTMLResponse(_static("index.html"))

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise ApiError(404, f"no static file {name!r}", None, "not_found")
        return Response(_static(name), media_type=TYPES["." + name.rsplit(".", 1)[1]])

    async def _body(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise ApiError(413, f"the request body has {declared} bytes; this server allows {limits.max_body_bytes} "
                           "(--max-body-bytes)", None, "request_too_large")
        data = bytearray()
        async for chunk in request.stream():
            data.extend(chunk)
            if len(data) > limits.max_body_bytes:
                raise ApiError(413, f"the request body is over {limits.max_body_bytes} bytes (--max-body-bytes)",
                               None, "request_too_large")
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}", None) from None

    async def _complete(request: Request, chat: bool) -> Response:
        req = parse(await _body(request), chat, engine, registry, limits)
        seeds = [req.seed + i if req.seed is not None else secrets.randbits(62) for i in range(req.n)]
        jobs = [Job(req.prompt_ids, req.steering, req.max_tokens, req.temperature, req.top_p, s, req.reads,
                    req.ignore_eos) for s in seeds]
        if req.compare:
            jobs += [Job(req.prompt_ids, None, req.max_tokens, req.temperature, req.top_p, s, req.reads,
                         req.ignore_eos) for s in seeds]
        try:
            for job in jobs[:1]:
                engine.check(job)
        except SteerlabError as exc:
            raise ApiError(400, str(exc), "steering") from None
        try:
            streams = engine.submit(jobs)
        except QueueFull as exc:
            raise ApiError(429, str(exc), None, "queue_full", "rate_limit_exceeded") from None
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        if req.stream:
            return StreamingResponse(_sse(request, req, rid, streams), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(await _whole(request, req, rid, streams))

    async def _drain(stream: Stream, choice: Choice, out: asyncio.Queue | None, key: tuple[int, bool]) -> None:
        async for event in stream:
            if isinstance(event, Token):
                if choice.finish is not None:
                    continue
                delta, reads = choice.feed(event)
                if out is not None:
                    await out.put((key, delta, reads, None))
                if choice.finish is not None:
                    stream.cancel()
            elif isinstance(event, Finished):
                if event.reason == "error":
                    choice.finish = "error"
                    if out is not None:
                        await out.put((key, "", {}, ("error", event.error)))
                    return
                delta = choice.close(event.reason if event.reason != "cancelled" else "stop")
                if out is not None:
                    await out.put((key, delta, {}, (choice.finish, None)))
                return

    def _choices(req: Parsed, streams: list[Stream]) -> dict[tuple[int, bool], tuple[Stream, Choice]]:
        out = {}
        for i, s in enumerate(streams):
            key = (i % req.n, i >= req.n)  # (index, unsteered?)
            out[key] = (s, Choice(engine.tokenizer, req.stop))
        return out

    async def _watch(request: Request, streams: list[Stream]) -> None:
        while not all(s.done for s in streams):
            if await request.is_disconnected():
                for s in streams:
                    s.cancel()
                return
            await asyncio.sleep(0.1)

    async def _whole(request: Request, req: Parsed, rid: str, streams: list[Stream]) -> dict[str, Any]:
        table = _choices(req, streams)
        watcher = asyncio.create_task(_watch(request, streams))
        try:
            await asyncio.gather(*(_drain(s, c, None, k) for k, (s, c) in table.items()))
        finally:
            watcher.cancel()
            for s in streams:
                s.cancel()
        errors = [c for _, c in table.values() if c.finish == "error"]
        if errors:
            raise ApiError(500, "the engine failed on this request", None, "engine_error", "server_error")
        choices = []
        completion = 0
        for i in range(req.n):
            c = table[(i, False)][1]
            completion += len(c.ids)
            ext: dict[str, Any] = {"reads": c.reads, "tokens": c.ids}
            if req.compare:
                u = table[(i, True)][1]
                ext["unsteered"] = {"text": u.text, "finish_reason": u.finish, "reads": u.reads, "tokens": u.ids}
            body: dict[str, Any] = {"index": i, "finish_reason": c.finish, "steerlab": ext}
            if req.chat:
                body["message"] = {"role": "assistant", "content": c.text}
            else:
                body["text"] = c.text
            choices.append(body)
        return {"id": rid, "object": "chat.completion" if req.chat else "text_completion", "created": int(time.time()),
                "model": req.model, "choices": choices,
                "usage": {"prompt_tokens": len(req.prompt_ids), "completion_tokens": completion,
                          "total_tokens": len(req.prompt_ids) + completion}}

    async def _sse(request: Request, req: Parsed, rid: str, streams: list[Stream]) -> AsyncIterator[str]:
        table = _choices(req, streams)
        queue: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.create_task(_drain(s, c, queue, k)) for k, (s, c) in table.items()]
        created = int(time.time())
        kind = "chat.completion.chunk" if req.chat else "text_completion"

        def chunk(index: int, unsteered: bool, delta: str, reads: dict, finish: str | None) -> str:
            ext: dict[str, Any] = {"reads": reads}
            choice: dict[str, Any] = {"index": index, "finish_reason": None if unsteered else finish}
            if unsteered:
                ext = {"unsteered": {"text": delta, "reads": reads, "finish_reason": finish}}
                delta = ""
            choice["steerlab"] = ext
            if req.chat:
                choice["delta"] = {"content": delta} if delta or not unsteered else {}
            else:
                choice["text"] = delta
            return "data: " + json.dumps({"id": rid, "object": kind, "created": created, "model": req.model,
                                          "choices": [choice]}) + "\n\n"

        try:
            if req.chat:
                for i in range(req.n):
                    first = {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    yield "data: " + json.dumps({"id": rid, "object": kind, "created": created, "model": req.model,
                                                 "choices": [first]}) + "\n\n"
            open_ = len(tasks)
            while open_:
                (index, unsteered), delta, reads, end = await queue.get()
                if end is not None and end[0] == "error":
                    err = ApiError(500, f"the engine failed on this request: {end[1]}", None, "engine_error",
                                   "server_error")
                    yield "data: " + json.dumps(err.body()) + "\n\n"
                    open_ -= 1
                    continue
                if delta or reads or end is not None:
                    yield chunk(index, unsteered, delta, reads, end[0] if end else None)
                if end is not None:
                    open_ -= 1
            if req.include_usage:
                completion = sum(len(c.ids) for (i, u), (_, c) in table.items() if not u)
                yield "data: " + json.dumps({"id": rid, "object": kind, "created": created, "model": req.model,
                                             "choices": [], "usage": {
                                                 "prompt_tokens": len(req.prompt_ids),
                                                 "completion_tokens": completion,
                                                 "total_tokens": len(req.prompt_ids) + completion}}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or we are done): free every row
            for s in streams:
                s.cancel()
            for t in tasks:
                t.cancel()

    return app


def _static(name: str) -> bytes:
    return (resources.files("steerlab.serve") / "static" / name).read_bytes()
