"""The request side of the OpenAI-compatible API: a JSON body checked into one ``Request``.

Every bad field raises ``ApiError`` naming the field, in OpenAI's error JSON; the limits (``Limits``)
are checked here too, so nothing that passes can overload the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import SteerlabError
from ..interventions.steering import Steering
from .engine import Engine
from .registry import Registry


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask (all flags of ``steerlab serve``)."""

    max_body_bytes: int = 1 << 20
    max_tokens: int = 512
    default_max_tokens: int = 128
    max_prompt_tokens: int = 2048
    max_n: int = 8
    max_batch: int = 16
    max_queue: int = 64


class ApiError(Exception):
    """An error answered as OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


#: OpenAI fields steerlab does not implement; a request that sets them gets a 400, not a silent no-op
UNSUPPORTED = ("logprobs", "top_logprobs", "tools", "functions", "tool_choice", "response_format", "logit_bias",
               "best_of", "echo", "suffix")


@dataclass
class Request:
    """A checked completion request."""

    chat: bool
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    n: int
    stream: bool
    include_usage: bool
    steering: Steering | None
    compare: bool
    reads: tuple[str, ...]
    model: str
    ignore_eos: bool = False


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number, got {value!r}", name)
    if value < low or value > high or (low_open and value == low):
        raise ApiError(400, f"{name}={value} is out of range; allowed {'(' if low_open else '['}{low}, {high}]", name)
    return float(value)


def _integer(body: dict, name: str, default: int | None, low: int, high: int, limit_flag: str | None = None) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, got {value!r}", name)
    if value < low or value > high:
        hint = f" (the server's {limit_flag})" if limit_flag else ""
        raise ApiError(400, f"{name}={value} is out of range; allowed {low}..{high}{hint}", name)
    return value


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where} parts must be {{'type': 'text', 'text': ...}} (text only)", "messages")
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"{where} must be a string or a list of text parts", "messages")


def prompt_ids(body: dict, chat: bool, tokenizer: Any) -> list[int]:
    """The prompt's token ids: chat messages through the chat template (no special tokens added a
    second time), a completion prompt with the tokenizer's defaults (as ``model.generate`` does)."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "messages must be a non-empty list of {'role', 'content'}", "messages")
        turns = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
                raise ApiError(400, f"messages[{i}] needs a role of system, user or assistant", "messages")
            role = "system" if m["role"] == "developer" else m["role"]
            turns.append({"role": role, "content": _text_of(m.get("content"), f"messages[{i}].content")})
        if not getattr(tokenizer, "chat_template", None):
            raise ApiError(400, "this model's tokenizer has no chat template; use /v1/completions", "messages")
        try:
            text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # noqa: BLE001 -- templates raise their own errors (e.g. roles out of order)
            raise ApiError(400, f"the chat template refused these messages: {exc}", "messages") from None
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (one prompt per request)", "prompt")
    if not prompt:
        raise ApiError(400, "prompt is empty", "prompt")
    return list(tokenizer(prompt)["input_ids"])


def parse(body: Any, chat: bool, engine: Engine, registry: Registry, limits: Limits) -> Request:
    """Check a request body into a ``Request`` (``ApiError`` on the first bad field)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", None)
    model = body.get("model")
    if model is not None and model != engine.name:
        raise ApiError(404, f"model {model!r} is not served here; this server serves {engine.name!r}", "model",
                       "model_not_found")
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False, [], 0):
            raise ApiError(400, f"{name} is not supported by this server", name)
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise ApiError(400, f"{name} is not supported by this server (give 0 or leave it out)", name)
    limit_name = "max_tokens"
    if chat and body.get("max_completion_tokens") is not None:
        limit_name = "max_completion_tokens"
    max_tokens = _integer(body, limit_name, limits.default_max_tokens, 1, limits.max_tokens, "--max-tokens")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    seed = _integer(body, "seed", None, -(2**63), 2**63 - 1)
    n = _integer(body, "n", 1, 1, limits.max_n, "--max-n")
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop):
        stops = list(stop)
    else:
        raise ApiError(400, f"stop must be a string or a list of at most 4 non-empty strings, got {stop!r}", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    compare = body.get("compare", False)
    if not isinstance(compare, bool):
        raise ApiError(400, f"compare must be true or false, got {compare!r}", "compare")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise ApiError(400, f"ignore_eos must be true or false, got {ignore_eos!r}", "ignore_eos")
    reads = body.get("read", [])
    if isinstance(reads, str):
        reads = [reads]
    if not isinstance(reads, list) or not all(isinstance(r, str) for r in reads):
        raise ApiError(400, f"read must be a list of registered direction names, got {reads!r}", "read")
    unknown = [r for r in reads if r not in registry.directions]
    if unknown:
        known = ", ".join(sorted(registry.directions)) or "none"
        raise ApiError(400, f"read={unknown[0]!r} is not a registered direction or probe; registered: {known}", "read")
    try:
        steering = registry.resolve(body.get("steering"))
    except SteerlabError as exc:
        raise ApiError(400, str(exc), "steering") from None
    ids = prompt_ids(body, chat, engine.tokenizer)
    if len(ids) > limits.max_prompt_tokens:
        raise ApiError(400, f"the prompt has {len(ids)} tokens; this server allows {limits.max_prompt_tokens} "
                       "(--max-prompt-tokens)", "messages" if chat else "prompt", "context_length_exceeded")
    return Request(chat, ids, max_tokens, temperature, top_p, seed, stops, n, stream, include_usage, steering,
                   compare, tuple(dict.fromkeys(reads)), engine.name, ignore_eos)
