"""An OpenAI-compatible server with per-request steering and latent read-outs (``steerlab serve``).

    from steerlab.serve import Registry, start
    reg = Registry(model, recipes={"happy": steer}, directions={"refusal": d})
    with start(model, reg, port=0) as server:      # a real server on 127.0.0.1, in a thread
        print(server.url)                          # http://127.0.0.1:PORT/v1 for the openai client

Needs the ``serve`` extra (``pip install 'steerlab[serve]'``: FastAPI and uvicorn).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import SteerlabError
from .engine import Engine, Finished, Job, QueueFull, ReadOut, Stream, Token, TransformersEngine
from .protocol import ApiError, Limits
from .registry import Registry, recipe_json, tensor_b64

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..models.model import Model


class Server:
    """A running server (uvicorn in a background thread); ``close()`` stops it and its engine."""

    def __init__(self, app: Any, engine: Engine, host: str, port: int):
        import uvicorn

        self.engine = engine
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="steerlab-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                engine.close()
                raise SteerlabError(f"the server could not start on {host}:{port} (is the port in use?)")
            time.sleep(0.02)
        sock = self._server.servers[0].sockets[0]
        self.host, self.port = host, int(sock.getsockname()[1])

    @property
    def base(self) -> str:
        """``http://host:port`` (the playground is at ``base + "/"``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL: ``http://host:port/v1``."""
        return self.base + "/v1"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build(model: Model, registry: Registry | None = None, limits: Limits | None = None, api_key: str | None = None,
          engine: Engine | None = None) -> tuple[Any, Engine]:
    """The FastAPI app and its engine (a ``TransformersEngine`` on ``model`` unless ``engine`` is given)."""
    from .app import create_app

    limits = limits or Limits()
    registry = registry or Registry(model)
    if engine is None:
        engine = TransformersEngine(model, registry.readouts(), max_batch=limits.max_batch, max_queue=limits.max_queue)
    return create_app(engine, registry, limits, api_key), engine


def start(model: Model, registry: Registry | None = None, host: str = "127.0.0.1", port: int = 0,
          limits: Limits | None = None, api_key: str | None = None, engine: Engine | None = None) -> Server:
    """Serve ``model`` in a background thread (``port=0``: a free port); returns the running ``Server``."""
    app, engine = build(model, registry, limits, api_key, engine)
    return Server(app, engine, host, port)


def serve(model: Model, registry: Registry | None = None, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits | None = None, api_key: str | None = None, engine: Engine | None = None) -> None:
    """Serve ``model`` in the foreground until interrupted (what ``steerlab serve`` runs)."""
    import uvicorn

    app, engine = build(model, registry, limits, api_key, engine)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", lifespan="off")
    finally:
        engine.close()


__all__ = ["ApiError", "Engine", "Finished", "Job", "Limits", "QueueFull", "ReadOut", "Registry", "Server", "Stream",
           "Token", "TransformersEngine", "build", "recipe_json", "serve", "start", "tensor_b64"]
