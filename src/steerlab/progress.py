"""Progress bars (rich) for work that can take more than a second; silent when not on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _enabled(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty()


@contextmanager
def bar(description: str, total: int, progress: bool | None = None,
        delay: float = 1.0) -> Iterator[Callable[..., None]]:
    """Yield an ``advance(n=1)`` function; a bar appears after ``delay`` seconds when enabled."""
    if not _enabled(progress) or total <= 0:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    started = time.monotonic()
    shown: Progress | None = None
    task = TaskID(0)
    done = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())

    def advance(n: int = 1) -> None:
        nonlocal shown, task, done
        done += n
        if shown is None and time.monotonic() - started > delay:
            shown = Progress(*columns, console=Console(stderr=True), transient=True)
            shown.start()
            task = shown.add_task(description, total=total, completed=done)
        elif shown is not None:
            shown.update(task, completed=done)

    try:
        yield advance
    finally:
        if shown is not None:
            shown.stop()
