"""``steerlab serve``: the OpenAI-compatible server with per-request steering, read-outs and a playground."""

from __future__ import annotations

import typer

from ..errors import SteerlabError
from .common import DEVICE, DTYPE, MODEL, add_commands, err, fail


def named_paths(values: list[str] | None, option: str) -> dict[str, str]:
    """``["happy=happy.steer", ...]`` -> ``{"happy": "happy.steer"}`` (names unique)."""
    out: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise SteerlabError(f"{option} {value!r} must look like NAME=PATH, e.g. {option} happy=happy.steer")
        if name in out:
            raise SteerlabError(f"{option} names {name!r} twice")
        out[name] = path
    return out


def serve(
    recipe: list[str] = typer.Option(None, "--recipe", "-r", help="NAME=PATH of a saved recipe (repeatable)."),
    direction: list[str] = typer.Option(None, "--direction", help="NAME=PATH of a saved direction or probe, for "
                                                                 "read-outs and inline recipes (repeatable)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    engine: str = typer.Option("transformers", help="transformers (continuous batching over steerlab's steered "
                                                    "forward) or vllm (when the vLLM plugin is installed)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="STEERLAB_API_KEY",
                                       help="Require 'Authorization: Bearer KEY' on /v1/ routes."),
    max_tokens: int = typer.Option(512, help="Largest max_tokens a request may ask for."),
    max_prompt_tokens: int = typer.Option(2048, help="Longest prompt, in tokens."),
    max_batch: int = typer.Option(16, help="Most rows decoding together."),
    max_queue: int = typer.Option(64, help="Most requests waiting; more get 429."),
    max_body_bytes: int = typer.Option(1 << 20, help="Largest request body; larger gets 413."),
    max_n: int = typer.Option(8, help="Largest n (completions per request)."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Serve a model behind an OpenAI-compatible API, with per-request steering and read-outs.

    POST /v1/chat/completions and /v1/completions (streaming too), GET /v1/models, /v1/steering, /health,
    and the playground at /. A request steers with "steering" (registered recipe names, scales, or an
    inline recipe), asks "compare": true for the unsteered completion beside it, and "read" (a list of names) for
    per-token scores of registered directions.

    Example:  steerlab serve --recipe happy=happy.steer --direction refusal=refusal.direction --port 8000

    With vLLM (in an environment with steerlab[vllm]):  steerlab serve --engine vllm --recipe happy=happy.steer
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        fail("steerlab serve needs the serve extra: pip install 'steerlab[serve]'")
    from ..serve import Limits, Registry
    from ..serve import serve as run
    from . import common

    if engine not in ("transformers", "vllm"):
        fail(f"--engine {engine!r} must be transformers or vllm")
    if engine == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            fail("--engine vllm needs vLLM and steerlab's plugin in the same environment: pip install "
                 "'steerlab[vllm]' (see docs/scale.md); or use --engine transformers")
    if min(max_tokens, max_prompt_tokens, max_batch, max_queue, max_body_bytes, max_n) < 1:
        fail("--max-tokens, --max-prompt-tokens, --max-batch, --max-queue, --max-body-bytes and --max-n must be "
             "at least 1")
    if not 0 < port < 65536:
        fail(f"--port {port} must be between 1 and 65535")
    recipes, directions = named_paths(recipe, "--recipe"), named_paths(direction, "--direction")
    from ..directions.direction import Direction
    from ..interventions.steering import Steering

    for path in recipes.values():  # read (and check) every file before the model loads
        Steering.load(path)
    for path in directions.values():
        Direction.load(path)
    m = common.load_model(model, dtype, device)
    registry = Registry.from_files(m, dict(recipes), dict(directions))
    limits = Limits(max_body_bytes=max_body_bytes, max_tokens=max_tokens, default_max_tokens=min(128, max_tokens),
                    max_prompt_tokens=max_prompt_tokens, max_n=max_n, max_batch=max_batch, max_queue=max_queue)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]note:[/] listening on {host}: other machines can reach this server"
                  + ("" if api_key else " and no --api-key is set"))
    runner = None
    if engine == "vllm":
        from ..engines.vllm.open import open_engine

        with err.status("starting vLLM ..."):
            runner = open_engine(model, registry, max_queue=max_queue, max_batch=max_batch,
                                 max_prompt_tokens=max_prompt_tokens, max_tokens=max_tokens, dtype=dtype)
    err.print(f"serving {m.name} with {engine} at http://{host}:{port}/v1 (playground: http://{host}:{port}/)")
    run(m, registry, host=host, port=port, limits=limits, api_key=api_key, engine=runner)


def register(app: typer.Typer) -> None:
    add_commands(app, {"serve": serve})
