"""``steerlab refusal-direction`` and ``steerlab refusal-eval``: Arditi et al.'s refusal direction, chosen and tested."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ..errors import DataError
from . import common
from .common import DEVICE, DTYPE, MODEL, err


def _warn_line(message: str) -> None:
    err.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def refusal_direction(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the chosen direction (its candidate table inside)."),
    n_train: int = typer.Option(64, help="Harmful and harmless prompts (each) the candidates are built on."),
    n_val: int = typer.Option(24, help="Harmful and harmless prompts (each) the candidates are scored on."),
    seed: int = typer.Option(0, help="Seed of the prompt shuffle (refusal-eval uses the same one)."),
    starts_tokens: int = typer.Option(24, help="Tokens generated per training prompt to find how refusals start."),
    max_layer_frac: float = typer.Option(0.8, help="Discard candidates at layers >= int(frac * n_layers)."),
    kl_max: float = typer.Option(0.1, help="Discard candidates whose ablation moves harmless logits by more KL."),
    filter_train: bool = typer.Option(True, help="Keep training prompts the model scores on the expected side."),
    table: Path | None = typer.Option(None, help="Also write the candidate table as CSV here."),
    batch_size: int = typer.Option(32, help="Rows per forward pass."),
    force: bool = typer.Option(False, help="Replace --out if it is a saved direction."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Choose the refusal direction as Arditi et al. do: every post-instruction token x layer, scored.

    Candidates are mean differences (HarmBench vs bundled harmless prompts) at every chat-template token after
    the instruction and every layer; each is scored by bypass, induce and KL on validation prompts.

    Example:  steerlab refusal-direction --model smollm2 --out refusal.direction --table candidates.csv
    """
    import steerlab as sl

    if min(n_train, n_val, starts_tokens, batch_size) < 1:
        raise DataError("--n-train, --n-val, --starts-tokens and --batch-size must be at least 1")
    if out.exists() and not force:
        raise DataError(f"--out {str(out)!r} exists; choose a new folder or pass --force")
    splits = sl.evaluate.refusal_prompts(n_train, n_val, 0, seed)
    m = common.load_model(model, dtype, device)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        starts = sl.evaluate.refusal_starts(m, splits["train"]["harmful"], max_new_tokens=starts_tokens,
                                            batch_size=batch_size)
        sel = sl.recipes.select_refusal_direction(
            m, splits["train"]["harmful"], splits["train"]["harmless"], splits["val"]["harmful"],
            splits["val"]["harmless"], starts.score, max_layer_frac=max_layer_frac, kl_max=kl_max,
            filter_train=filter_train, batch_size=batch_size)
    for w in caught:
        if issubclass(w.category, UserWarning):
            _warn_line(str(w.message))
    tokens = ", ".join(repr(m.tokenizer.decode([i])) for i in starts.score.positive_ids)
    sel.direction.meta.update(split={"n_train": n_train, "n_val": n_val, "seed": seed},
                              refusal_starts={"refusals": starts.refusals, "replies": starts.replies,
                                              "fallback": starts.fallback,
                                              "table": starts.table.to_dict("records")})
    sel.direction.save(out, overwrite=force)
    if table is not None:
        sel.table.to_csv(table, index=False)
    typer.echo(f"refusal starts from {starts.refusals}/{starts.replies} refusals: {tokens}")
    top = sel.table[sel.table["eligible"]].sort_values("bypass").head(5)
    typer.echo(top.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"chosen: layer {sel.layer}, position {sel.position} ({sel.table.loc[sel.table['chosen'], 'token'].iloc[0]!r}); "
               f"relaxed rules: {', '.join(sel.relaxed) or 'none'}; "
               f"{len(sel.table)} candidates, scored in {sel.seconds:.0f} s "
               f"({time.perf_counter() - started:.0f} s with the refusal starts) -> {out}")


def refusal_eval(
    direction: Path = typer.Option(..., "--direction", "-d", help="A folder from `steerlab refusal-direction`."),
    n_test: int = typer.Option(40, help="Held-out harmful and harmless prompts (each), disjoint from the direction's."),
    coeffs: str = typer.Option("1", help="Comma-separated coefficients for the added direction, e.g. 1,3."),
    max_new_tokens: int = typer.Option(64, help="Tokens generated per reply."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the table as CSV here (replies to *.samples.csv)."),
    batch_size: int = typer.Option(32, help="Rows per generation batch."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Refusal rates on held-out prompts, unsteered vs the direction ablated vs added, with perplexity.

    Harmful (HarmBench) and harmless (bundled) prompts not used to build or choose the direction; replies are
    judged by the refusal substring list; perplexity of a held-out reference text measures the cost.

    Example:  steerlab refusal-eval --direction refusal.direction --n-test 40 --coeffs 1,3 --out refusal.csv
    """
    import steerlab as sl

    d = sl.Direction.load(direction)
    meta = d.meta
    if meta.get("method") != "refusal_direction":
        raise DataError(f"--direction {str(direction)!r} was not made by `steerlab refusal-direction`")
    try:
        values = [float(c) for c in coeffs.split(",") if c.strip()]
    except ValueError:
        raise DataError(f"--coeffs {coeffs!r} must be numbers separated by commas, e.g. 1,3") from None
    if min(n_test, max_new_tokens, batch_size) < 1 or not values:
        raise DataError("--n-test, --max-new-tokens and --batch-size must be at least 1 and --coeffs not empty")
    test = sl.evaluate.refusal_prompts(0, 0, n_test, meta.get("split", {}).get("seed", 0),
                                       exclude=meta.get("used_prompts", []))["test"]
    m = common.load_model(model, dtype, device)
    d.check_model(m.fingerprint)
    layer = int(meta["selected_layer"])
    score = sl.recipes.LogitScore("refusal_score", list(meta["score"]["token_ids"]), None, chat=True)
    result = sl.evaluate.refusal_eval(m, sl.evaluate.refusal_recipes(d, layer, values), test["harmful"],
                                      test["harmless"], score=score, max_new_tokens=max_new_tokens,
                                      batch_size=batch_size)
    typer.echo(f"direction: layer {layer}, position {meta.get('selected_position')}; "
               f"{n_test} held-out prompts per side, {max_new_tokens} tokens")
    typer.echo(result.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if out is not None:
        result.table.to_csv(out, index=False)
        result.samples.to_csv(out.with_suffix(".samples.csv"), index=False)


COMMANDS: dict[str, Callable[..., Any]] = {"refusal-direction": refusal_direction, "refusal-eval": refusal_eval}


def register(app: typer.Typer) -> None:
    """Add ``refusal-direction`` and ``refusal-eval`` to ``app``."""
    common.add_commands(app, COMMANDS)
