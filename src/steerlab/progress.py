"""Progress bars (rich) for work that can take more than a second; silent when not on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _enabled(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty()


@contextmanager
def bar(description: str, total: int, progress: bool | None = None, delay: float = 1.0) -> Iterator:
    """Yield an ``advance(n=1)`` function; a bar appears after ``delay`` seconds when enabled."""
    if not _enabled(progress) or total <= 0:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    started = time.monotonic()
    state = {"bar": None, "done": 0, "task": None}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())

    def advance(n: int = 1) -> None:
        state["done"] += n
        if state["bar"] is None and time.monotonic() - started > delay:
            state["bar"] = Progress(*columns, console=Console(stderr=True), transient=True)
            state["bar"].start()
            state["task"] = state["bar"].add_task(description, total=total, completed=state["done"])
        elif state["bar"] is not None:
            state["bar"].update(state["task"], completed=state["done"])

    try:
        yield advance
    finally:
        if state["bar"] is not None:
            state["bar"].stop()
