"""What every `steerlab` command shares: the model loader, the layer parser, the error wrapper, the pairs loader.

Each lives here once, so every command reads ``--layers`` the same way, fails with the same one line
and loads models through one function (tests replace ``load_model`` here to reuse a loaded model).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar, cast

import typer
from rich.console import Console

from ..errors import DataError, SiteError, SteerlabError

if TYPE_CHECKING:
    from ..data import ContrastiveSet
    from ..models import Model

console = Console()
err = Console(stderr=True)

MODEL = typer.Option("smollm2", "--model", "-m", help="'smollm2' (embedded), a folder, a .gguf file or a hub id.")
DTYPE = typer.Option(None, help="float32 (CPU default), bfloat16 (GPU default) or float16.")
DEVICE = typer.Option("auto", help="cpu, cuda or auto.")
FORCE = typer.Option(False, "--force", help="Replace an earlier output of the same kind at the target "
                                             "(other files and folders are never replaced).")
LAYERS_HELP = "all, 10, 8-12, 8,10,12; negatives count from the end (-1 is the last layer, -3--1 the last three)"

F = TypeVar("F", bound=Callable[..., Any])


# --- failing with one line --------------------------------------------------------------------
def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit with ``code``."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def one_line_errors(fn: F) -> F:
    """Bad input (a SteerlabError, a missing file, broken JSON) becomes one line on stderr and exit code 2;
    Ctrl-C exits with 130. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SteerlabError as e:
            fail(str(e))
        except FileNotFoundError as e:
            fail(f"file not found: {e.filename or e}")
        except json.JSONDecodeError as e:
            fail(f"not valid JSON: {e}")
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return cast(F, wrapper)  # functools.wraps keeps the signature typer reads


def add_commands(app: typer.Typer, commands: dict[str, Callable[..., Any]]) -> None:
    """Register ``{name: function}`` on ``app``, each behind ``one_line_errors``."""
    for name, fn in commands.items():
        app.command(name)(one_line_errors(fn))


# --- checking before the slow work -------------------------------------------------------------
def check_number(value: float, option: str, low: float | None = None, high: float | None = None) -> float:
    """A finite number within ``[low, high]``, or one line naming ``option``."""
    import math

    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        span = f" between {low:g} and {high:g}" if low is not None and high is not None else (
            f" of at least {low:g}" if low is not None else (f" of at most {high:g}" if high is not None else ""))
        raise SteerlabError(f"{option} {value!r} is not allowed; give a finite number{span}")
    return value


def check_count(value: int, option: str, low: int = 1) -> int:
    """An integer option that must be at least ``low``."""
    if value < low:
        raise SteerlabError(f"{option} {value} is not allowed; give an integer of at least {low}")
    return value


def check_model_args(name: str, dtype: str | None, device: str) -> None:
    """Check --model, --dtype and --device before anything loads (a missing GPU or file fails at once)."""
    from ..models.load import check_source, resolve_device, resolve_dtype

    resolve_dtype(dtype, resolve_device(device))
    check_source(name)


# --- loading ----------------------------------------------------------------------------------
def load_model(name: str, dtype: str | None = None, device: str = "auto") -> Model:
    """The one model loader of every command, with a spinner while it loads."""
    import steerlab as sl

    check_model_args(name, dtype, device)
    with err.status(f"loading {name} ..."):
        return sl.load(name, dtype=dtype, device=device)


def load_pairs(name: str, option: str = "--data") -> ContrastiveSet:
    """A contrastive set for ``option``: a bundled name (sentiment, refusal, ...) or a .jsonl/.csv file of pairs."""
    import steerlab as sl

    bundled = sl.data.names()
    path = Path(name)
    if name in bundled or path.exists():
        return sl.data.load(name)
    if path.suffix.lower() in (".jsonl", ".csv"):
        raise DataError(f"{option} {name!r}: no such file")
    close = difflib.get_close_matches(name, bundled, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"{option} {name!r} is not a bundled set{hint}; use one of {', '.join(bundled)} "
                    f"or a .jsonl/.csv file of positive/negative pairs")


# --- layers -----------------------------------------------------------------------------------
_PART = re.compile(r"(-?\d+)(?:-(-?\d+))?")


def layer_spec(text: str | None, option: str = "--layers") -> Literal["all"] | list[tuple[int, int]] | None:
    """Check the syntax of a layer list before any model loads: ``"all"``, inclusive ``(lo, hi)`` ranges
    as written (negatives not yet resolved), or None when nothing was given."""
    if text is None or not text.strip():
        return None
    if text.strip() == "all":
        return "all"
    spans = []
    for part in text.split(","):
        match = _PART.fullmatch(part.strip())
        if match is None:
            raise SiteError(f"{option} {text!r} is not a layer list; use {LAYERS_HELP}")
        lo = int(match.group(1))
        spans.append((lo, int(match.group(2)) if match.group(2) is not None else lo))
    return spans


def parse_layers(text: str | None, n_layers: int | None = None, *, held: Sequence[int] | None = None,
                 option: str = "--layers") -> list[int] | None:
    """The layers ``text`` names, sorted, checked against the model's ``n_layers`` or, with no model,
    against the layers a direction ``held``; None when nothing was given (the command's default).

    Accepts ``all``, ``10``, ``8-12``, ``8,10,12`` and mixes; negatives count from the end (``-1`` is
    the last layer, ``-3--1`` the last three). With ``held`` and no ``n_layers``, the end is the
    direction's last layer and ``all`` is every layer it holds.
    """
    spec = layer_spec(text, option)
    if spec is None:
        return None
    have = sorted(set(held)) if held else None
    if n_layers is not None:
        n = n_layers
    elif have is not None:
        n = have[-1] + 1
    else:
        raise TypeError("parse_layers needs the model's n_layers or the layers a direction holds")
    if spec == "all":
        return have if have is not None else list(range(n))
    where = (f"the direction holds layers {_span(have)}" if have is not None
             else f"the model has {n} layers (0-{n - 1})")
    out: set[int] = set()
    for lo, hi in spec:
        a, b = (x + n if x < 0 else x for x in (lo, hi))
        if min(a, b) < 0 or (have is None and max(a, b) >= n):
            raise SiteError(f"{option} {text!r} is out of range: {where}")
        if have is not None and max(a, b) > have[-1]:
            raise SiteError(f"{option} {text!r}: layer {max(a, b)} is not in this direction; "
                            f"it holds layers {_span(have)}")
        if a > b:
            raise SiteError(f"{option} {text!r}: the range {lo}-{hi} runs backwards; write it low-high, e.g. 8-12")
        out.update(range(a, b + 1))
    layers = sorted(out)
    if have is not None:
        missing = [layer for layer in layers if layer not in have]
        if missing:
            raise SiteError(f"{option} {text!r}: layers {_span(missing)} are not in this direction; "
                            f"it holds layers {_span(have)}")
    return layers


def one_layer(value: int, n_layers: int, option: str = "--layer") -> int:
    """A single layer option (negative counts from the end), checked like ``parse_layers``."""
    layers = parse_layers(str(value), n_layers, option=option)
    assert layers is not None and len(layers) == 1
    return layers[0]


def _span(layers: Sequence[int]) -> str:
    """``8-10`` for a contiguous run, else the list."""
    if len(layers) > 2 and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return str(list(layers))
